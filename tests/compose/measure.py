"""Latency of /exec through HTTP against a running server, for docs/SECURITY.md's comparison of
ways to run the server in a container (not a test: it asserts nothing).

    .venv/bin/python tests/compose/measure.py URL KEY [RUNS]

Prints p50 / p95 in ms of the client's round trip for a warm-pool Python `print(1)` and a cold
`bash` run (the pool holds Python only), RUNS each (default 30), 2 s apart
(as an agent's calls come, and as bench/suite.py times the warm pool: the pool refills between).
"""

from __future__ import annotations

import statistics
import sys
import time

import requests


def main() -> None:
    url, key = sys.argv[1].rstrip("/"), sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    http = requests.Session()
    http.headers.update({"X-API-Key": key})
    for label, body in (("py print(1), warm pool", {"lang": "py", "code": "print(1)"}),
                        ("bash echo, cold", {"lang": "bash", "code": "echo 1"})):
        times, warm = [], 0
        for _ in range(runs + 2):
            begin = time.perf_counter()
            answer = http.post(url + "/v1/exec", json=body, timeout=60)
            times.append((time.perf_counter() - begin) * 1000)
            assert answer.status_code == 200 and answer.json()["stdout"] == "1\n", answer.text
            warm += bool(answer.json()["run"].get("warm"))
            time.sleep(2)
        times = sorted(times[2:])  # the first two warm the connection and the pool up
        p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
        print(f"{label:24} p50 {statistics.median(times):6.1f} ms   p95 {p95:6.1f} ms   ({runs} runs, {warm} warm)")


if __name__ == "__main__":
    main()
