"""A real server (gunicorn, the project's own config) on 127.0.0.1 for the HTTP tests.

Each server gets its own data dir and database, a canary API key, and small limits so the
limit tests run quickly. Stopped by PID at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
CANARY_KEY = "canary-key-7c1d0b9e5f3a4e21"

BASE_ENV = {
    "SANDBOX_API_KEY": CANARY_KEY,
    "SANDBOX_HOST": "127.0.0.1",
    "SANDBOX_TIMEOUT_MS": "8000",
    "SANDBOX_COMPILE_TIMEOUT_MS": "30000",
    "SANDBOX_MEMORY_MB": "256",
    "SANDBOX_DISK_MB": "64",
    "SANDBOX_TMP_MB": "64",
    "SANDBOX_MAX_UPLOAD_MB": "5",
    "SANDBOX_MAX_CONCURRENT_EXECUTIONS": "4",
    "SANDBOX_LOG_LEVEL": "info",
    "SANDBOX_WORKERS": "2",
    "SANDBOX_THREADS": "16",
    # The API suite runs with the warm pool on (the default) and, in scripts/test.sh, off.
    "SANDBOX_POOL": os.environ.get("SANDBOX_TEST_POOL", "py:2"),
}


# SANDBOX_TEST_S3_ENDPOINT: every server the tests start keeps its files in that S3-compatible
# store instead of on local disk (tests/object_store.py starts SeaweedFS for it).
if os.environ.get("SANDBOX_TEST_S3_ENDPOINT"):
    BASE_ENV.update({
        "SANDBOX_STORAGE_BACKEND": "s3",
        "SANDBOX_S3_ENDPOINT_URL": os.environ["SANDBOX_TEST_S3_ENDPOINT"],
        "SANDBOX_S3_BUCKET": os.environ.get("SANDBOX_TEST_S3_BUCKET", "codeinterp-test"),
        "SANDBOX_S3_ACCESS_KEY_ID": os.environ.get("SANDBOX_TEST_S3_KEY", "codeinterp"),
        "SANDBOX_S3_SECRET_ACCESS_KEY": os.environ.get("SANDBOX_TEST_S3_SECRET", "codeinterp-secret"),
    })
STORE = BASE_ENV.get("SANDBOX_STORAGE_BACKEND", "local")


def mounts_under(folder: Path) -> list[str]:
    """Mount points below `folder` (/proc/self/mountinfo's fifth field; a space is \\040 there,
    as executor/housekeeping.py reads it)."""
    prefix = str(folder).rstrip("/") + "/"
    points = (line.split()[4].replace("\\040", " ") for line in Path("/proc/self/mountinfo").read_text().splitlines())
    return [point for point in points if point.startswith(prefix)]


def paths_under(root: Path, *, work_areas: bool = False) -> list[Path]:
    """Every folder and file below `root`. A warm sandbox's work area (storage/.pool/<id>) is
    made and removed by the server while a test looks, and pathlib's rglob raises when a folder
    it listed is gone before it enters it (a CI run failed so); os.walk skips such a folder.
    The work areas are left out unless `work_areas`. Any other error fails the walk, so that a
    "nothing is stored" check cannot pass by not looking."""
    def vanished_only(error: OSError) -> None:
        if not isinstance(error, FileNotFoundError) or Path(error.filename) == root:
            raise error

    if not root.is_dir():
        raise FileNotFoundError(f"no folder to walk: {root}")
    found = []
    for folder, subfolders, files in os.walk(root, onerror=vanished_only):
        if not work_areas and Path(folder) == root:
            subfolders[:] = [name for name in subfolders if name != ".pool"]
        found += [Path(folder, name) for name in subfolders + files]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# SANDBOX_TEST_URL: run the HTTP tests against a server they did not start (scripts/compose-test.sh
# points them at the compose stack; see ExternalServer).
EXTERNAL_URL = os.environ.get("SANDBOX_TEST_URL", "").rstrip("/")


class LiveServer:
    def __new__(cls, **overrides: str):
        if EXTERNAL_URL:
            if overrides:
                import pytest

                pytest.skip(f"needs a server of its own with {', '.join(sorted(overrides))}; "
                            f"SANDBOX_TEST_URL names one fixed server ({EXTERNAL_URL})")
            return ExternalServer()
        return super().__new__(cls)

    def __init__(self, **overrides: str):
        self.data_dir = Path(tempfile.mkdtemp(prefix="codeinterp-test-", dir="/var/tmp"))
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "LIBRECHAT_", "MONGO_"))},
            **BASE_ENV,
            "SANDBOX_DATA_DIR": str(self.data_dir),
            "SANDBOX_PORT": str(self.port),
            **overrides,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def storage(self) -> Path:
        return self.data_dir / "storage"

    def manage(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env={**self.env, **extra_env},
            capture_output=True, text=True, timeout=300,
        )

    def start(self) -> "LiveServer":
        done = self.manage("migrate", "--noinput", "-v0")
        assert done.returncode == 0, done.stderr
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sandbox_project.serve"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code in (200, 503):
                    return self
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not answer within 60 s")

    def children(self) -> dict[int, bytes]:
        """{pid: command line} of the master's children: workers, the front, the keeper."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        found = {}
        for pid in map(int, out.split()):
            try:
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
        return found

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (forks of the master, so the same command line)."""
        return [pid for pid, cmdline in self.children().items() if b"sandbox_project.serve" in cmdline]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # our own process group, by PID
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if getattr(self, "log", None):
            self.log.close()
        # A server stopped (or a worker killed) before its teardown thread unmounted a work area
        # leaves that mount in its data dir; its own sweep would take it at its next start, but
        # this data dir has none. Detach what is mounted there, deepest first, then remove it.
        for point in sorted(mounts_under(self.data_dir.resolve()), key=len, reverse=True):  # the mount table's paths are resolved
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.data_dir.exists():  # what a test server leaves on the machine is a failure
            raise RuntimeError(f"the test server's data dir could not be removed: {self.data_dir}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class ExternalServer:
    """The server at SANDBOX_TEST_URL, started by someone else with BASE_ENV's settings and
    CANARY_KEY: the compose stack (scripts/compose-test.sh) or the balancer of a cluster
    (scripts/cluster-test.sh).

    - SANDBOX_TEST_DATA_DIR: its data dir, readable here (the compose volume has the same path
      on the host and in the container; for a cluster, replica 1's).
    - SANDBOX_TEST_CONTAINER: manage.py runs there (docker exec) and log_text() is its log; or
    - SANDBOX_TEST_MANAGE: a command that runs manage.py with the server's settings (words,
      e.g. `scripts/cluster.sh manage 1`), and SANDBOX_TEST_LOGS: its log files (colon-separated).
    """

    def __init__(self):
        self.url = EXTERNAL_URL
        self.port = urlsplit(EXTERNAL_URL).port
        self.data_dir = Path(os.environ["SANDBOX_TEST_DATA_DIR"])
        self.container = os.environ.get("SANDBOX_TEST_CONTAINER", "")
        self.manage_command = shlex.split(os.environ.get("SANDBOX_TEST_MANAGE", ""))
        self.logs = [Path(p) for p in os.environ.get("SANDBOX_TEST_LOGS", "").split(":") if p]
        self.env: dict[str, str] = {}
        self.process = None

    @property
    def storage(self) -> Path:
        return self.data_dir / "storage"

    def manage(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
        if self.manage_command:
            # The command takes leading NAME=value words as settings (scripts/cluster.sh manage).
            return subprocess.run([*self.manage_command, *(f"{k}={v}" for k, v in extra_env.items()), *args],
                                  cwd=ROOT, check=False, capture_output=True, text=True, timeout=300)
        env_args = [f"--env={key}={value}" for key, value in extra_env.items()]
        return subprocess.run(["docker", "exec", *env_args, self.container, "python3", "manage.py", *args],
                              check=False, capture_output=True, text=True, timeout=300)

    def start(self) -> ExternalServer:
        response = requests.get(self.url + "/health", timeout=10)
        assert response.status_code == 200, f"{self.url} is not healthy: {response.text}"
        return self

    def worker_pids(self) -> list[int]:
        import pytest

        pytest.skip("the workers of an external server are not this test's to signal")

    def stop(self) -> None:
        pass  # not ours

    def log_text(self) -> str:
        if self.logs:
            return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())
        done = subprocess.run(["docker", "logs", self.container], check=False, capture_output=True, timeout=60)
        return (done.stdout + done.stderr).decode(errors="replace")

    def __repr__(self) -> str:
        return f"ExternalServer({self.url}, container {shlex.quote(self.container)})"


class Client:
    """requests against one server, with the API key and a base URL (default /v1)."""

    def __init__(self, server: LiveServer, prefix: str = "/v1", headers: dict | None = None):
        self.server = server
        self.base = server.url + prefix
        self.http = requests.Session()
        self.http.headers.update(headers if headers is not None else {"X-API-Key": CANARY_KEY})

    def request(self, method: str, route: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 120)
        return self.http.request(method, self.base + route, **kw)

    def get(self, route, **kw):
        return self.request("GET", route, **kw)

    def post(self, route, **kw):
        return self.request("POST", route, **kw)

    def delete(self, route, **kw):
        return self.request("DELETE", route, **kw)

    def exec(self, lang: str, code: str, **body) -> dict:
        response = self.post("/exec", json={"lang": lang, "code": code, **body})
        assert response.status_code == 200, response.text
        return response.json()

    def upload(self, name: str, content: bytes, **fields) -> dict:
        response = self.post("/upload", files={"file": (name, content)}, data=fields, headers={"User-Id": "user-1"})
        assert response.status_code == 200, response.text
        return response.json()


def sqlite_of(server) -> Path:
    """The server's SQLite file, for a test that looks into it; the test is skipped, saying
    why, where the server's database is another one (the cluster's PostgreSQL)."""
    import pytest

    path = server.data_dir / "db.sqlite3"
    if not path.exists():
        pytest.skip(f"reads the server's SQLite file, and {server!r} has none (its database is not SQLite)")
    return path
