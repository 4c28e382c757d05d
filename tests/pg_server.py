"""A real PostgreSQL (Debian's package) for the tests, on a unix socket only: no TCP port, so
it collides with nothing and no network is involved. Run as the `postgres` account in a data
dir of its own; stopped by PID.

    with PostgresServer() as pg:
        url = pg.url("codeinterp")      # postgres://postgres@/%2Fvar%2Ftmp%2F.../codeinterp (the socket dir)
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

BIN = Path(os.environ.get("SANDBOX_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def missing() -> str | None:
    if not (BIN / "postgres").is_file():
        return f"PostgreSQL is not installed at {BIN} (scripts/setup.sh --dev installs Debian's postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' account (Debian's postgresql package makes it)"
    return None


class PostgresServer:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="codeinterp-pg-", dir="/var/tmp"))
        self.data = self.dir / "data"
        self.socket_dir = self.dir
        self.process: subprocess.Popen | None = None
        account = pwd.getpwnam("postgres")
        self.uid, self.gid = account.pw_uid, account.pw_gid
        os.chown(self.dir, self.uid, self.gid)
        self.dir.chmod(0o755)

    def _as_postgres(self):
        os.setgid(self.gid)
        os.setuid(self.uid)

    def start(self) -> "PostgresServer":
        subprocess.run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, preexec_fn=self._as_postgres, timeout=120)
        self.log = open(self.dir / "postgres.log", "ab")
        self.process = subprocess.Popen(
            [str(BIN / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir), "-c", "listen_addresses=",
             "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=self._as_postgres, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'postgres.log').read_text()[-2000:]}")
            if (self.socket_dir / ".s.PGSQL.5432").exists() and self.psql("SELECT 1").returncode == 0:
                return self
            time.sleep(0.2)
        raise RuntimeError("postgres did not answer within 60 s")

    def psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess:
        return subprocess.run(["psql", "-h", str(self.socket_dir), "-U", "postgres", "-d", database, "-Atc", sql],
                              capture_output=True, text=True, timeout=60)

    def create_database(self, name: str) -> str:
        done = self.psql(f'CREATE DATABASE "{name}"')
        assert done.returncode == 0, done.stderr
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://postgres@/{quote(str(self.socket_dir), safe='')}/{database}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # smart shutdown... then fast
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
