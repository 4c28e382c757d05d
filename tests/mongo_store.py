"""A MongoDB-wire-protocol server for the audit tests: MONGO_URI's, or one started here.

No MongoDB server package can be installed on the build machines, so when MONGO_URI is not
set the tests start SecantusDB: a third-party, GPL-2.0, beta reimplementation of the MongoDB
server in Python (WiredTiger storage), pinned at 0.7.0b3 and installed by scripts/setup.sh
--dev into a venv of its own (SECANTUSDB_VENV, default /opt/secantusdb), outside this project:
a test tool, never shipped, never imported by the server. CI therefore tests the audit path
against a MongoDB-compatible server, not MongoDB itself; set MONGO_URI to run the same tests
against a real MongoDB.

SecantusDB expires TTL-indexed documents with a sweeper thread that runs every 60 s, as
mongod's TTL monitor does. Its `secantusd.toml` knows `[storage] ttl_sweep_seconds`, but the
0.7.0b3 command line does not pass it on to the server, so the server is started here through
its own Python API (SecantusDBServer(..., ttl_sweep_seconds=1)) instead of `secantusd-py`.
Each server is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

VENV = Path(os.environ.get("SECANTUSDB_VENV", "/opt/secantusdb"))
VERSION = "0.7.0b3"
TTL_SWEEP_S = 1.0

# Run by the SecantusDB venv's python: the daemon's own start-up, with a fast TTL sweeper.
LAUNCHER = """
import signal, sys
from secantus.server import SecantusDBServer
host, port, path, sweep = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
server = SecantusDBServer(host=host, port=port, storage_path=path, ttl_sweep_seconds=sweep,
                          enable_test_commands=False)
def stop(signum, frame):
    server.stop()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
server.start()
print("ready", flush=True)
server.wait()
"""


def missing() -> str | None:
    """Why no SecantusDB can be started here, or None."""
    python = VENV / "bin" / "python"
    if not python.exists():
        return f"no SecantusDB venv at {VENV} (scripts/setup.sh --dev installs secantusdb=={VERSION} there)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SecantusServer:
    """One SecantusDB on 127.0.0.1 with its own storage folder; stop() ends it by PID and
    start() brings it back on the same port with the same data (the store going down and
    coming back)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="codeinterp-secantus-", dir="/var/tmp"))
        self.log_path = self.folder / "secantus.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 60) -> SecantusServer:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(VENV / "bin" / "python"), "-c", LAUNCHER, self.host, str(self.port),
                 str(self.folder / "data"), str(TTL_SWEEP_S)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:  # not listening yet
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SecantusDB did not listen on {self.host}:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # our own process group, by PID
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
