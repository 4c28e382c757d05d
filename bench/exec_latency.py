"""Wall time of one /exec through HTTP, next to the bare floor measured in the same run.

    .venv/bin/python bench/exec_latency.py [--runs 30] [--backend docker|bwrap] [--runtime runc|runsc]

Starts its own server (tests/liveserver.py) on 127.0.0.1, warms up, then times each program
`--runs` times and prints median / p95 / p99 and the ratio to the floor: the same kind of
program spawned directly on the host (`python3 -c 'print(1)'`). Writes bench/results/*.json.
Numbers, not verdicts: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.liveserver import Client, LiveServer  # noqa: E402

PROGRAMS = {
    "py print(1)": ("py", "print(1)"),
    "js": ("js", "console.log(1)"),
    "ts": ("ts", "const n: number = 1; console.log(n)"),
    "bash": ("bash", "echo 1"),
    "py pandas+matplotlib plot": (
        "py",
        "import pandas as pd, matplotlib.pyplot as plt\n"
        "df = pd.DataFrame({'x': range(50), 'y': [i * i for i in range(50)]})\n"
        "df.plot(x='x', y='y'); plt.savefig('plot.png')\n",
    ),
}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(samples: list[float]) -> dict:
    return {"median_ms": statistics.median(samples), "p95_ms": pct(samples, 0.95), "p99_ms": pct(samples, 0.99), "runs": len(samples)}


def time_floor(runs: int) -> dict:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["/usr/bin/python3", "-c", "print(1)"], capture_output=True, env={"PATH": "/usr/bin:/bin"}, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return summarize(samples)


def time_exec(client: Client, lang: str, code: str, runs: int) -> dict:
    for _ in range(2):  # warm-up: page cache, image layers
        client.exec(lang, code)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        client.exec(lang, code)
        samples.append((time.perf_counter() - started) * 1000)
    return summarize(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backend", default="docker", choices=["docker", "bwrap"])
    parser.add_argument("--runtime", default="runc", choices=["runc", "runsc"], help="the Docker backend's runtime")
    args = parser.parse_args()
    label = f"docker backend, runtime {args.runtime}" if args.backend == "docker" else "bwrap backend"
    server = LiveServer(
        SANDBOX_BACKEND=args.backend, SANDBOX_DOCKER_RUNTIME=args.runtime, SANDBOX_LOG_LEVEL="warn", SANDBOX_TIMEOUT_MS="30000"
    ).start()
    try:
        client = Client(server)
        floor = time_floor(args.runs)
        rows = {name: time_exec(client, lang, code, args.runs) for name, (lang, code) in PROGRAMS.items()}
    finally:
        server.stop()
    print(f"\n/exec through HTTP, {label}, {args.runs} runs each")
    print(f"{'program':28} {'median ms':>10} {'p95 ms':>8} {'p99 ms':>8} {'x floor':>8}")
    print(f"{'floor: python3 -c print(1)':28} {floor['median_ms']:10.1f} {floor['p95_ms']:8.1f} {floor['p99_ms']:8.1f} {1:8.1f}")
    for name, row in rows.items():
        print(f"{name:28} {row['median_ms']:10.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f} {row['median_ms'] / floor['median_ms']:8.1f}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    name = args.runtime if args.backend == "docker" else args.backend
    (out / f"exec_latency_{name}.json").write_text(
        json.dumps({"floor": floor, "programs": rows, "backend": args.backend, "runtime": args.runtime}, indent=2)
    )


if __name__ == "__main__":
    main()
