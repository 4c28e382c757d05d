"""The whole benchmark: latency and throughput of /exec through HTTP, per backend and pool
setting, next to the bare floor measured in the same run. One command:

    .venv/bin/python bench/suite.py [--runs 30] [--configs docker-pool,docker-cold,runsc-cold,bwrap-cold,bwrap-fork-pool]

For each configuration it starts its own server on 127.0.0.1 (tests/liveserver.py), warms up,
then times each program `--runs` times in two call patterns: paced, so a warm sandbox is ready
again (an agent's calls are seconds apart: the LLM thinks in between), and back to back from
one client. Then sustained load: 1, 4 and 16 clients calling py print(1) back to back for
`--throughput-seconds` each, and 4 clients cycling through py, js, ts and bash (5 slots, the
default queue; every answer counted by status), while /health is polled to see that the server
stays responsive; beside each, the bare floor's rate at the same concurrency (the program
spawned directly by as many threads), and the CPU the whole machine spent per execution
outside the programs themselves (/proc/stat, less the programs' own cgroup CPU as /exec
reports it, less this benchmark's own CPU). Last, the memory of the server and of each idle
warm sandbox. The floor is each program spawned directly, with no sandbox, from the same
runtime files (the exported rootfs, chroot only) where they exist, else host python3. Prints
tables, writes bench/results/suite.json. Numbers, not verdicts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.liveserver import Client, LiveServer  # noqa: E402

PLOT = (
    "import pandas as pd, matplotlib.pyplot as plt\n"
    "df = pd.DataFrame({'x': range(50), 'y': [i * i for i in range(50)]})\n"
    "df.plot(x='x', y='y'); plt.savefig('plot.png')\n"
)
PROGRAMS = {
    "py print(1)": ("py", "print(1)", ["/opt/sandbox/python/bin/python3", "-c", "print(1)"]),
    "js": ("js", "console.log(1)", ["/usr/local/bin/bun", "-e", "console.log(1)"]),
    "ts": ("ts", "const n: number = 1; console.log(n)", ["/usr/local/bin/bun", "main.ts"]),
    "bash": ("bash", "echo 1", ["/bin/bash", "-c", "echo 1"]),
    "py pandas+matplotlib plot": ("py", PLOT, ["/opt/sandbox/python/bin/python3", "-c", PLOT]),
}
CONFIGS = {
    "docker-pool": {"SANDBOX_POOL": "py:4,js:1,bash:1"},
    "docker-cold": {"SANDBOX_POOL": "off"},
    "runsc-cold": {"SANDBOX_POOL": "off", "SANDBOX_DOCKER_RUNTIME": "runsc"},
    "bwrap-pool": {"SANDBOX_POOL": "py:4,js:1,bash:1", "SANDBOX_BACKEND": "bwrap"},
    "bwrap-cold": {"SANDBOX_POOL": "off", "SANDBOX_BACKEND": "bwrap"},
    # The fork-server (SANDBOX_FORKSERVER): warm sandboxes are forks of a template (Python, or the lean one).
    "bwrap-fork-pool": {"SANDBOX_POOL": "py:4,js:2,ts:2,bash:2", "SANDBOX_BACKEND": "bwrap", "SANDBOX_FORKSERVER": "true"},
}
# Left at the server's defaults (settings.py), as an operator runs it: tests/liveserver.py sets
# smaller ones for quick limit tests.
PRODUCTION_LIMITS = ("SANDBOX_MEMORY_MB", "SANDBOX_DISK_MB", "SANDBOX_TMP_MB", "SANDBOX_MAX_UPLOAD_MB", "SANDBOX_COMPILE_TIMEOUT_MS")
CONCURRENCY = (1, 4, 16)
ROOTFS = Path(os.environ.get("SANDBOX_BWRAP_ROOTFS", "/var/lib/codeinterp/rootfs"))


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(samples):
    return {"p50": statistics.median(samples), "p95": pct(samples, 0.95), "p99": pct(samples, 0.99), "n": len(samples)}


FLOOR_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/.mpl-floor"}


# Programs that need more than a bare chroot (bun reads /proc): spawned from the runtime's
# own files but in the host's root, in the bench's work directory (where main.ts is).
UNCHROOTED = ("/usr/local/bin/bun",)
TS_SOURCE = PROGRAMS["ts"][1]


def floor_command(argv):
    """(argv, chroot root or None) of a program's floor, or None when it has none."""
    if argv is None or not (ROOTFS / argv[0].lstrip("/")).exists():
        if argv and argv[0].endswith("python3") and "print(1)" in argv[-1]:
            return ["/usr/bin/python3", "-c", "print(1)"], None
        return None
    if argv[0] in UNCHROOTED:
        return [str(ROOTFS / argv[0].lstrip("/")), *argv[1:]], None
    return argv, str(ROOTFS)


def spawn_floor(argv, root, workdir) -> bool:
    done = subprocess.run(argv, capture_output=True, env=FLOOR_ENV, cwd="/" if root else workdir,
                          preexec_fn=(lambda: (os.chroot(root), os.chdir("/tmp"))) if root else None)
    return done.returncode == 0


def floor(argv, runs, workdir):
    """The program with no sandbox: chroot into the same runtime files, nothing else."""
    command = floor_command(argv)
    if command is None:
        return None
    samples = []
    for _ in range(runs + 2):
        started = time.perf_counter()
        if not spawn_floor(*command, workdir):
            return None  # needs more than a bare chroot (bun wants /proc): no floor for it
        samples.append((time.perf_counter() - started) * 1000)
    return summary(samples[2:])


def floor_rate(argv, concurrency, seconds, workdir):
    """Spawns per second of the bare program from `concurrency` threads, back to back: the most
    this machine does at that concurrency with no server and no sandbox."""
    command = floor_command(argv)
    if command is None:
        return None
    stop = time.monotonic() + seconds
    done = [0]
    lock = threading.Lock()

    def spawner():
        while time.monotonic() < stop:
            if spawn_floor(*command, workdir):
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=spawner) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / seconds


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every core, user + system + irq)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this benchmark (its threads, and its reaped children: the /health poller)."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def server_timing(response) -> dict[str, float]:
    """The server's own phases of one /exec (Server-Timing header, sandbox_project/timing.py)."""
    phases: dict[str, float] = {}
    for part in response.headers.get("Server-Timing", "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            phases[name] = phases.get(name, 0.0) + float(duration)
    return phases


def latency(client, lang, code, runs, pace_s):
    for _ in range(2):
        client.exec(lang, code)
    samples, phases, warm = [], [], 0
    for _ in range(runs):
        time.sleep(pace_s)
        started = time.perf_counter()
        response = client.post("/exec", json={"lang": lang, "code": code})
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
        warm += bool(response.json()["run"].get("warm"))
        phases.append(server_timing(response))
    names = dict.fromkeys(n for p in phases for n in p)
    return {**summary(samples), "warm": warm,
            "phases_p50": {n: statistics.median(p.get(n, 0.0) for p in phases) for n in names}}


MIXED = [("py", "print(1)"), ("js", "console.log(1)"), ("ts", "const n: number = 1; console.log(n)"), ("bash", "echo 1")]


def throughput(server, concurrency, seconds=10.0, programs=(("py", "print(1)"),)):
    """`concurrency` clients calling /exec back to back for `seconds`, each cycling through
    `programs`; /health polled meanwhile; the machine's CPU outside the programs counted."""
    stop = time.monotonic() + seconds
    counts = {"ok": 0, "429": 0, "other": 0}
    program_cpu_ms = [0]
    lock = threading.Lock()

    def caller(offset):
        client = Client(server)
        n = offset
        while time.monotonic() < stop:
            lang, code = programs[n % len(programs)]
            n += 1
            response = client.post("/exec", json={"lang": lang, "code": code})
            with lock:
                counts["ok" if response.status_code == 200 else "429" if response.status_code == 429 else "other"] += 1
                if response.status_code == 200:
                    program_cpu_ms[0] += response.json()["run"].get("cpu_time") or 0

    # The poller is a process of its own, as a load balancer's probe is: inside this process
    # it would wait for the GIL behind the 16 caller threads and time that, not the server.
    results = multiprocessing.get_context("spawn").Queue()
    poller = multiprocessing.get_context("spawn").Process(target=poll_health, args=(server.url, seconds, results))
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    busy_before, own_before = busy_cpu_s(), own_cpu_s()
    poller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    health_ms, slowest = results.get(timeout=60)
    poller.join(10)
    busy, own = busy_cpu_s() - busy_before, own_cpu_s() - own_before
    outside_ms = (busy - own) * 1000 - program_cpu_ms[0]
    return {**counts, "per_s": counts["ok"] / seconds, "health_p50_ms": statistics.median(health_ms),
            "health_max_ms": max(health_ms), "health_n": len(health_ms), "health_over_50ms": sum(ms > 50 for ms in health_ms),
            "health_slowest_server_ms": slowest, "programs_cpu_ms": program_cpu_ms[0], "bench_cpu_ms": own * 1000,
            "outside_cpu_ms_per_exec": outside_ms / counts["ok"] if counts["ok"] else None}


def poll_health(url, seconds, results):
    """GET /health every 0.2 s for `seconds` (a new connection each time, as probes do);
    sends back the times and the server's own phases of the slowest answer."""
    stop = time.monotonic() + seconds
    health_ms, slowest = [], (0.0, None)
    while time.monotonic() < stop:
        started = time.perf_counter()
        response = requests.get(url + "/health", timeout=10)
        health_ms.append((time.perf_counter() - started) * 1000)
        if health_ms[-1] > slowest[0]:
            slowest = (health_ms[-1], server_timing(response))
        time.sleep(0.2)
    results.put((health_ms, slowest[1]))


def cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""


def parent(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent(int(entry))
            if ppid:
                children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory_mb(pids, field="Pss") -> float:
    """Proportional set size (shared library pages split among their users), in MB."""
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def warm_sandbox_mb(server) -> list[float]:
    """PSS of each idle warm sandbox: every process of it (tini or bwrap, and the runner)."""
    out = server.manage("shell", "-c", "from executor.models import WarmSandbox as W; [print('HANDLE', w.container_id) for w in W.objects.filter(state='ready')]").stdout
    rows = [line.split()[1] for line in out.splitlines() if line.startswith("HANDLE ")]
    sizes = []
    for handle in rows:
        if len(handle) == 64:  # a container id
            pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", handle], capture_output=True, text=True).stdout.strip()
            roots = [int(pid)] if pid.isdigit() and pid != "0" else []
        else:  # bwrap: the sandbox's processes are in its cgroup
            roots = []
            for procs in Path("/sys/fs/cgroup/pids").rglob("cgroup.procs"):
                if handle.split(":")[-1] in str(procs.parent):
                    roots += [int(p) for p in procs.read_text().split()]
        pids = sorted({p for r in roots for p in descendants(r)})
        sizes.append(memory_mb(pids))
    return sizes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--pace", type=float, default=2.0, help="seconds between latency calls (pool configs)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--throughput-seconds", type=float, default=60, help="length of each sustained run")
    args = parser.parse_args()
    report = {"machine": {"cores": os.cpu_count(), "kernel": os.uname().release}, "floor": {}, "configs": {}}
    workdir = Path("/var/tmp/codeinterp-bench")
    workdir.mkdir(exist_ok=True)
    (workdir / "main.ts").write_text(TS_SOURCE + "\n")
    for name, (_, _, argv) in PROGRAMS.items():
        report["floor"][name] = floor(argv, args.runs, workdir)
    report["floor_rate"] = {c: floor_rate(PROGRAMS["py print(1)"][2], c, min(args.throughput_seconds, 20), workdir) for c in CONCURRENCY}
    for config in args.configs.split(","):
        env = {**CONFIGS[config], "SANDBOX_LOG_LEVEL": "warn", "SANDBOX_MAX_CONCURRENT_EXECUTIONS": "5", "SANDBOX_TIMEOUT_MS": "30000"}
        try:
            server = LiveServer(**env)
            for name in PRODUCTION_LIMITS:  # the tests' small limits would slow the plot (memory)
                server.env.pop(name, None)
            server.start()
        except Exception as error:
            report["configs"][config] = {"error": str(error)[:300]}
            continue
        try:
            client = Client(server)
            time.sleep(8 if "pool" in config else 1)
            row = {"latency": {}, "memory": {}}
            for name, (lang, code, _) in PROGRAMS.items():
                row["latency"][name] = latency(client, lang, code, args.runs, args.pace if "pool" in config else 0)
            if "pool" in config:  # without a pool the paced calls above were back to back already
                row["back_to_back"] = {name: latency(client, lang, code, args.runs, 0) for name, (lang, code, _) in PROGRAMS.items()}
            row["throughput"] = {c: throughput(server, c, args.throughput_seconds) for c in CONCURRENCY}
            row["mixed"] = throughput(server, 4, args.throughput_seconds, MIXED)
            time.sleep(8)
            # The server: gunicorn's master and workers (`sandbox_project.serve`: this name, not
            # "gunicorn", is in their command line; before 2026-12-03 only the keeper was
            # counted), the keeper and the fork-server's template (its parent too), whose
            # memory its forks share.
            server_pids = [p for p in descendants(server.process.pid)
                           if any(part in cmdline(p) for part in (b"sandbox_project.serve", b"gunicorn", b"pool_keeper", b"forkserver/template.py"))
                           and b"template.py\x00serve" not in cmdline(parent(p))]  # (not its forks: warm sandboxes, below)
            row["memory"] = {"server_mb": memory_mb(server_pids), "warm_sandboxes_mb": warm_sandbox_mb(server)}
            report["configs"][config] = row
        finally:
            server.stop()
    print_report(report)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "suite.json").write_text(json.dumps(report, indent=2))


def latency_row(config, latencies, floors, names):
    """One line of a latency table: p50 / p95 of each program, and its p50 over the floor's."""
    cells = []
    for n in names:
        lat, f = latencies[n], floors[n]
        ratio = f" (x{lat['p50'] / f['p50']:.1f})" if f else ""
        cells.append(f"{lat['p50']:.1f} / {lat['p95']:.1f}{ratio}")
    print(f"{config:32}" + "".join(f"{c:>26}" for c in cells))


def print_report(report):
    print(f"\nmachine: {report['machine']}")
    names = list(PROGRAMS)
    print(f"\n{'p50 / p95 ms (x floor)':32}" + "".join(f"{n[:22]:>26}" for n in names))
    cells = []
    for n in names:
        f = report["floor"][n]
        cells.append(f"{f['p50']:.1f} / {f['p95']:.1f}" if f else "-")
    print(f"{'floor (spawned directly)':32}" + "".join(f"{c:>26}" for c in cells))
    for config, row in report["configs"].items():
        if "error" in row:
            print(f"{config:32} failed to start: {row['error']}")
            continue
        latency_row(config, row["latency"], report["floor"], names)
    print(f"\n{'back to back, one client':32}" + "".join(f"{n[:22]:>26}" for n in names))
    for config, row in report["configs"].items():
        if "back_to_back" in row:
            latency_row(config, row["back_to_back"], report["floor"], names)
    print("\nwhere the time goes, server side (Server-Timing p50, ms): pool configs, py print(1) and the plot")
    for config, row in report["configs"].items():
        for n in ("py print(1)", "py pandas+matplotlib plot"):
            lat = row.get("latency", {}).get(n)
            if lat and "pool" in config:
                phases = ", ".join(f"{k} {v:.1f}" for k, v in lat["phases_p50"].items())
                print(f"{config:14}{n[:12]:>13}  warm {lat['warm']}/{lat['n']}: {phases}")
    rates = report.get("floor_rate", {})
    print(f"\n{'sustained, back to back':32}{'clients':>8}{'ok/s':>8}{'floor/s':>9}{'ok':>6}{'429':>6}{'other':>6}"
          f"{'cpu/exec':>10}{'health p50':>12}{'health max':>12}")
    for config, row in report["configs"].items():
        runs = [(f"py print(1)", c, t, rates.get(c)) for c, t in row.get("throughput", {}).items()]
        if "mixed" in row:
            runs.append(("py/js/ts/bash", 4, row["mixed"], None))
        for what, c, t, rate in runs:
            inside = t.get("health_slowest_server_ms") or {}
            cpu = t.get("outside_cpu_ms_per_exec")
            print(f"{config + ' ' + what:32}{c:>8}{t['per_s']:>8.1f}{(f'{rate:.1f}' if rate else '-'):>9}{t['ok']:>6}{t['429']:>6}{t['other']:>6}"
                  f"{(f'{cpu:.0f}ms' if cpu is not None else '-'):>10}{t['health_p50_ms']:>11.1f}ms{t['health_max_ms']:>10.1f}ms"
                  f"   (slowest, in the server: {', '.join(f'{k} {v:.1f}' for k, v in inside.items())})")
    print("(cpu/exec: CPU the machine spent per execution outside the programs: server, engine, kernel, pool refills)")
    print("\nmemory (PSS: shared pages split among the processes that map them)")
    for config, row in report["configs"].items():
        if "memory" in row:
            warm = row["memory"]["warm_sandboxes_mb"]
            print(f"{config:32} server {row['memory']['server_mb']:.0f} MB; warm sandboxes: {len(warm)} idle, {sum(warm):.0f} MB in total "
                  f"({', '.join(f'{w:.0f}' for w in warm)})")


if __name__ == "__main__":
    main()
