"""A programmatic run's program can reach the FIFOs the server reads (they are in its own
/mnt/code): whatever it writes there may end its own run, never the server, another run, or a
tool the client did not register. Runs on runc, runsc and bwrap (the `sandbox_server` fixture).

- a call it forges for a tool not in this run's `tools` ends the run with the client's
  "unregistered tool" error; garbage on the calls channel ends it too;
- its status channel and its calls channel are bounded: flooding them ends the run, the worker
  keeps no more than a line;
- /mnt/code stays read-only for it (under runsc the mount is writable so gVisor lets the FIFOs
  be written: only ownership keeps the folder read-only there).
"""

import pytest
import requests

from tests.api.test_programmatic import drive
from tests.liveserver import Client


@pytest.fixture(autouse=True)
def server_stays_healthy(sandbox_server):
    yield
    assert requests.get(sandbox_server.url + "/health", timeout=5).status_code == 200


def test_a_round_trip_works_on_this_sandbox(sandbox_server):
    final, batches = drive(Client(sandbox_server), {"code": 'r = await get_weather(city="Oslo")\nprint(r["city"])'})
    assert final["status"] == "completed" and final["stdout"] == "Oslo\n", final
    assert [c["name"] for c in batches[0]] == ["get-weather"]


FORGE = "import os\nfd = os.open('/mnt/code/.calls', os.O_WRONLY)\nos.write(fd, {line!r})\nimport time\ntime.sleep(5)\n"


@pytest.mark.parametrize("line,error", [
    (b'{"calls": [{"id": "call_001", "name": "delete_everything", "input": {}}]}\n',
     "Sandbox requested an unregistered tool: delete_everything"),
    (b'{"calls": [{"id": "call_001", "name": "get-weather", "input": {}}, {"id": 2, "name": "get-weather"}]}\n',
     "sandbox emitted an empty pending tool call block; aborting to avoid a tight retry loop"),
    (b"not json at all\n", "sandbox emitted an empty pending tool call block; aborting to avoid a tight retry loop"),
])
def test_forged_calls_end_the_run(sandbox_server, line, error):
    final, batches = drive(Client(sandbox_server), {"code": FORGE.format(line=line), "timeout": 8000})
    assert batches == [] and final["status"] == "error" and final["error"] == error, final


@pytest.mark.parametrize("channel", ["calls", "status"])
def test_flooding_a_channel_ends_the_run(sandbox_server, channel):
    code = (f"import os\nfd = os.open('/mnt/code/.{channel}', os.O_WRONLY)\nchunk = b'x' * 65536\n"
            "for _ in range(16 * 160):\n    os.write(fd, chunk)\n")  # 160 MiB, no newline
    final, _ = drive(Client(sandbox_server), {"code": code, "timeout": 20000})
    assert final["status"] == "error" and "larger than the server accepts" in final["error"], final


def test_the_code_folder_is_read_only_for_the_program(sandbox_server):
    code = ("import os\nfor path in ('/mnt/code/main.py', '/mnt/code/.ptc_tools.json', '/mnt/code/new.txt'):\n"
            "    try:\n        open(path, 'a').write('x')\n        print('wrote', path)\n"
            "    except OSError as error:\n        print('refused', path, error.errno)\n"
            "try:\n    os.unlink('/mnt/code/.results')\n    print('unlinked')\nexcept OSError:\n    print('kept')\n")
    final, _ = drive(Client(sandbox_server), {"code": code})
    assert final["status"] == "completed", final
    assert "wrote" not in final["stdout"] and "unlinked" not in final["stdout"], final["stdout"]
    assert final["stdout"].count("refused") == 3
    plain = Client(sandbox_server).exec("py", code.replace("'/mnt/code/.ptc_tools.json', ", ""))
    assert "wrote" not in plain["stdout"] and plain["stdout"].count("refused") == 2, plain
