"""Executions per second per core, for the capacity model of docs/SCALING.md.

    .venv/bin/python bench/capacity.py [--calls 40] [--concurrency 4]

Starts one server (tests/liveserver.py, the Docker backend, a warm pool of py:4), then for
each workload keeps `concurrency` clients calling /exec back to back for `calls` calls and
reads two numbers: the throughput (executions per second of wall time, with every core of
this machine busy) and the machine's CPU time per execution (all busy time in /proc/stat,
the server, dockerd and the sandboxes alike, less what the machine was doing in the 5 s just
before, divided by the calls). 1 / CPU-seconds per
execution is what one core sustains; a host of C cores sustains about C times that, as long
as memory and slots (SANDBOX_MAX_CONCURRENT_EXECUTIONS) are not the limit first.
Other load on the machine inflates the CPU time: run it on a quiet machine, more than once.
Writes bench/results/capacity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.liveserver import Client, LiveServer  # noqa: E402

PLOT = (
    "import pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.DataFrame({'x': range(50), 'y': [i * i for i in range(50)]})\n"
    "df.plot(x='x', y='y'); plt.savefig('plot.png')\n"
)
C_PROGRAM = '#include <stdio.h>\nint main(void) { printf("%d\\n", 1); return 0; }\n'
WORKLOADS = {
    "py print(1)": ("py", "print(1)", 1.0),
    "pandas plot": ("py", PLOT, 0.5),
    "C compile + run": ("c", C_PROGRAM, 0.5),
}


def busy_jiffies() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run(server, lang: str, code: str, calls: int, concurrency: int) -> dict:
    client = Client(server)
    for _ in range(2):  # warm-up: the pool refilled, caches hot
        client.exec(lang, code)
    time.sleep(3)
    left = [calls]
    lock = threading.Lock()
    failures = []

    def worker():
        mine = Client(server)
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            response = mine.post("/exec", json={"lang": lang, "code": code})
            if response.status_code != 200 or response.json()["run"]["code"] != 0:
                failures.append(response.text[:200])

    hz = os.sysconf("SC_CLK_TCK")
    # What else keeps this machine busy (other servers, other tests), measured just before:
    # subtracted from what the run used, so the figure is this workload's own.
    idle_from, _ = busy_jiffies()
    time.sleep(5)
    background_cores = (busy_jiffies()[0] - idle_from) / hz / 5
    busy0, total0 = busy_jiffies()
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    busy1, total1 = busy_jiffies()
    cpu_s = max(0.001, (busy1 - busy0) / hz - background_cores * wall)
    return {"calls": calls, "failures": len(failures), "wall_s": round(wall, 2),
            "throughput_per_s": round(calls / wall, 2), "cpu_s_per_exec": round(cpu_s / calls, 4),
            "per_core_per_s": round(calls / cpu_s, 2) if cpu_s else None,
            "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 2),
            "background_cores": round(background_cores, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    server = LiveServer(SANDBOX_POOL="py:4", SANDBOX_MAX_CONCURRENT_EXECUTIONS=str(args.concurrency),
                        SANDBOX_TIMEOUT_MS="30000", SANDBOX_MEMORY_MB="512").start()
    results = {"cores": os.cpu_count(), "concurrency": args.concurrency}
    try:
        for name, (lang, code, share) in WORKLOADS.items():
            results[name] = run(server, lang, code, max(8, int(args.calls * share)), args.concurrency)
            print(f"{name:18} {json.dumps(results[name])}", flush=True)
    finally:
        server.stop()
    out = Path(__file__).resolve().parent / "results" / "capacity.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
