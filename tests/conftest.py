import subprocess

import pytest

from tests.liveserver import Client, LiveServer


def runsc_available() -> bool:
    out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True)
    return "runsc" in out.stdout


@pytest.fixture(scope="session")
def server():
    live = LiveServer().start()
    yield live
    live.stop()


@pytest.fixture(scope="session", params=["runc", "runsc"])
def sandbox_server(request, server):
    """The default server, then the same settings under gVisor: the escape suite runs on both."""
    if request.param == "runc":
        yield server
        return
    if not runsc_available():
        pytest.skip("runsc is not registered with this Docker engine (scripts/engine.sh registers it)")
    live = LiveServer(SANDBOX_DOCKER_RUNTIME="runsc").start()
    yield live
    live.stop()


@pytest.fixture
def api(server) -> Client:
    return Client(server)


@pytest.fixture
def sandbox(sandbox_server) -> Client:
    return Client(sandbox_server)
