import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import liveserver
from tests.liveserver import Client, LiveServer

# SANDBOX_TEST_BACKEND=bwrap runs every live server of the session (the `server` fixture and
# the ones tests start themselves) on the bubblewrap backend instead of Docker.
TEST_BACKEND = os.environ.get("SANDBOX_TEST_BACKEND", "docker")
if TEST_BACKEND != "docker":
    liveserver.BASE_ENV["SANDBOX_BACKEND"] = TEST_BACKEND
# SANDBOX_TEST_FORKSERVER=true: the same, with the bwrap fork-server making warm sandboxes.
# Its warm sandboxes are cheap, so every interpreted language has some (as the server's default
# with the fork-server on): the escape suite's bash and js programs run in forks too.
if os.environ.get("SANDBOX_TEST_FORKSERVER") == "true":
    liveserver.BASE_ENV["SANDBOX_FORKSERVER"] = "true"
    liveserver.BASE_ENV["SANDBOX_POOL"] = os.environ.get("SANDBOX_TEST_POOL", "py:2,js:2,ts:2,bash:2")
SANDBOX_KINDS = {
    "runc": {"SANDBOX_BACKEND": "docker"},
    "runsc": {"SANDBOX_BACKEND": "docker", "SANDBOX_DOCKER_RUNTIME": "runsc"},
    "bwrap": {"SANDBOX_BACKEND": "bwrap"},
}


def runsc_available() -> bool:
    out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return "runsc" in out.stdout


def bwrap_missing() -> str | None:
    rootfs = Path(os.environ.get("SANDBOX_BWRAP_ROOTFS", "/var/lib/codeinterp/rootfs"))
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (scripts/setup.sh installs it)"
    if not (rootfs / ".codeinterp" / "env").is_file():
        return f"no rootfs at {rootfs} (docker/export-rootfs.sh makes it)"
    return None


@pytest.fixture(scope="session")
def server():
    live = LiveServer().start()
    yield live
    live.stop()


@pytest.fixture(scope="session", params=["runc", "runsc", "bwrap"])
def sandbox_server(request, server):
    """The default server, then the same settings under gVisor and under bubblewrap: the
    escape suite runs on all three."""
    if request.param == ("bwrap" if TEST_BACKEND == "bwrap" else "runc"):
        yield server
        return
    if request.param == "runsc" and not runsc_available():
        pytest.skip("runsc is not registered with this Docker engine (scripts/engine.sh registers it)")
    if request.param == "bwrap" and bwrap_missing():
        pytest.skip(bwrap_missing())
    live = LiveServer(**SANDBOX_KINDS[request.param]).start()
    yield live
    live.stop()


@pytest.fixture
def api(server) -> Client:
    return Client(server)


@pytest.fixture
def sandbox(sandbox_server) -> Client:
    return Client(sandbox_server)
