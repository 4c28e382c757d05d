#!/usr/bin/env python3
"""Hello-world latency of every language through HTTP /exec, against the bare process floor.

    .venv/bin/python bench/languages.py                 # starts its own LiveServer (tests/liveserver.py)
    .venv/bin/python bench/languages.py --url http://127.0.0.1:3081 --api-key KEY
    SANDBOX_BENCH_URL=... SANDBOX_API_KEY=... .venv/bin/python bench/languages.py

Per language: one untimed warm-up, then --runs timed /exec calls run one after another (wall
time seen by the client: HTTP, container start, compile, run, teardown). The floor is
`python3 -c 'print(1)'` spawned directly on the host, --runs times. p95 is nearest-rank
(with 10 runs: the slowest). Prints a table and writes bench/results/languages.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELLO = {
    "py": "print('hello')\n",
    "js": "console.log('hello');\n",
    "ts": "const s: string = 'hello';\nconsole.log(s);\n",
    "c": '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello\\n"; }\n',
    "java": 'public class Main {\n    public static void main(String[] args) {\n        System.out.println("hello");\n    }\n}\n',
    "php": "<?php\necho \"hello\\n\";\n",
    "rs": 'fn main() {\n    println!("hello");\n}\n',
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello")\n}\n',
    "d": 'import std.stdio;\n\nvoid main() {\n    writeln("hello");\n}\n',
    "f90": "program hello\n  print '(a)', 'hello'\nend program hello\n",
    "r": "cat('hello\\n')\n",
    "bash": "echo hello\n",
}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def host_python3() -> str:
    """The real python3 binary (not a pyenv/asdf shim script, which would add its own start-up)."""
    found = shutil.which("python3") or sys.executable
    real = subprocess.run([found, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
    return real.stdout.strip() or found


def measure_floor(runs: int) -> dict:
    python = host_python3()
    times = []
    for _ in range(runs + 1):  # the first one warms the page cache and is not counted
        started = time.perf_counter()
        subprocess.run([python, "-c", "print(1)"], check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - started) * 1000)
    times = times[1:]
    return {"command": f"{python} -c 'print(1)'", "median_ms": statistics.median(times), "p95_ms": p95(times),
            "samples_ms": [round(t, 1) for t in times]}


def measure_language(http: requests.Session, url: str, lang: str, runs: int) -> dict:
    walls, inside = [], []
    for i in range(runs + 1):
        started = time.perf_counter()
        response = http.post(f"{url}/v1/exec", json={"lang": lang, "code": HELLO[lang]}, timeout=120)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{lang}: HTTP {response.status_code}: {response.text[:500]}")
        body = response.json()
        if body["stdout"] != "hello\n" or body["run"]["code"] != 0:
            raise SystemExit(f"{lang}: unexpected result {json.dumps(body)[:1000]}")
        if i:  # run 0 is the warm-up
            walls.append(elapsed)
            inside.append(body["run"]["wall_time"])
    return {"median_ms": statistics.median(walls), "p95_ms": p95(walls),
            "container_median_ms": statistics.median(inside), "samples_ms": [round(t, 1) for t in walls]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SANDBOX_BENCH_URL"),
                        help="server base URL (default: start a LiveServer from tests/liveserver.py)")
    parser.add_argument("--api-key", default=os.environ.get("SANDBOX_BENCH_API_KEY") or os.environ.get("SANDBOX_API_KEY"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--langs", default=",".join(HELLO), help="comma-separated subset")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "languages.json"))
    options = parser.parse_args()
    langs = [lang.strip() for lang in options.langs.split(",") if lang.strip()]
    unknown = sorted(set(langs) - set(HELLO))
    if unknown:
        parser.error(f"no hello world for {', '.join(unknown)}")

    live = None
    if options.url:
        url, key = options.url.rstrip("/"), options.api_key
        if not key:
            parser.error("--api-key (or SANDBOX_API_KEY) is required with --url")
    else:
        from tests.liveserver import CANARY_KEY, LiveServer

        print("starting a LiveServer ...", file=sys.stderr)
        live = LiveServer().start()
        url, key = live.url, CANARY_KEY
    try:
        http = requests.Session()
        http.headers["X-API-Key"] = key
        # One /exec first, so the floor is not measured while the workers are still booting.
        http.post(f"{url}/v1/exec", json={"lang": "bash", "code": "true"}, timeout=120)
        floor = measure_floor(options.runs)
        results = {}
        for lang in langs:
            print(f"  {lang} ...", file=sys.stderr, flush=True)
            results[lang] = measure_language(http, url, lang, options.runs)
            results[lang]["ratio"] = results[lang]["median_ms"] / floor["median_ms"]
    finally:
        if live:
            live.stop()

    print(f"\nhello world via HTTP /exec, {options.runs} runs each (after one warm-up); "
          f"floor = {floor['command']} on the host\n")
    header = f"{'lang':<6} {'median ms':>10} {'p95 ms':>8} {'in-container ms':>16} {'x floor':>8}"
    print(header)
    print("-" * len(header))
    for lang, row in results.items():
        print(f"{lang:<6} {row['median_ms']:>10.0f} {row['p95_ms']:>8.0f} {row['container_median_ms']:>16.0f} {row['ratio']:>8.1f}")
    print("-" * len(header))
    print(f"{'floor':<6} {floor['median_ms']:>10.1f} {floor['p95_ms']:>8.1f} {'':>16} {1:>8.1f}")
    print("load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))

    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
        "server": url if not live else "LiveServer (tests/liveserver.py)",
        "runs": options.runs,
        "floor": floor,
        "languages": results,
    }, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
