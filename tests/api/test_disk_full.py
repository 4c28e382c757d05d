"""A full storage volume: every request that needs room answers 507 JSON, leaves nothing
half-written, and the server serves normally again once space returns.

SANDBOX_STORAGE_PATH is a 24 MiB tmpfs this test mounts (and unmounts) itself; the database
and the front's buffers live in the data dir, elsewhere, as on a host whose file volume filled up.
"""

import ctypes
import os
import tempfile
from pathlib import Path

import pytest

from tests import liveserver
from tests.liveserver import Client, LiveServer

MiB = 1 << 20
libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def small_volume():
    if liveserver.STORE != "local":
        pytest.skip("files live in the object store here, not on the local volume this test fills; a full "
                    "bucket is not reproduced (SeaweedFS has no quota answer), storage/backends.py maps one to 507")
    folder = Path(tempfile.mkdtemp(prefix="codeinterp-full-", dir="/var/tmp"))
    if libc.mount(b"fulltest", str(folder).encode(), b"tmpfs", 0, b"size=24m,mode=0700") != 0:
        pytest.skip(f"cannot mount a tmpfs here: {os.strerror(ctypes.get_errno())} (needs root)")
    yield folder
    libc.umount2(str(folder).encode(), 2)
    folder.rmdir()


@pytest.fixture(scope="module")
def full_server(small_volume):
    live = LiveServer(SANDBOX_STORAGE_PATH=str(small_volume), SANDBOX_MAX_UPLOAD_MB="40", SANDBOX_POOL="off",
                      SANDBOX_DISK_MB="64").start()
    yield live
    live.stop()


def stored_files(volume: Path) -> list[Path]:
    return sorted(p for p in volume.rglob("*") if p.is_file())


def test_storage_full_is_507_and_leaves_nothing(full_server, small_volume):
    client = Client(full_server)
    first = client.upload("first.bin", os.urandom(14 * MiB))
    before = stored_files(small_volume)

    response = client.post("/upload", files={"file": ("second.bin", os.urandom(14 * MiB))})
    assert response.status_code == 507, response.text
    assert response.json()["error"] == "insufficient_storage"
    parts = [("file", (f"b{i}.bin", os.urandom(4 * MiB))) for i in range(4)]
    response = client.post("/upload/batch", files=parts)
    assert response.status_code == 507, response.text
    assert stored_files(small_volume) == before, "a refused upload left a file behind"

    # An execution whose outputs do not fit: 507, and none of its outputs stays.
    response = client.post("/exec", json={"lang": "py", "code": (
        "import os\nfor n in range(4):\n    open(f'out{n}.csv', 'wb').write(os.urandom(4 << 20))\n")})
    assert response.status_code == 507, response.text
    assert response.json()["error"] == "insufficient_storage"
    assert stored_files(small_volume) == before, "a failed execution left outputs behind"

    # Space returns: everything works again.
    assert client.delete(f"/files/{first['session_id']}/{first['files'][0]['fileId']}").status_code == 200
    again = client.upload("second.bin", os.urandom(14 * MiB))
    assert again["files"][0]["fileId"]
    result = client.exec("py", "open('ok.csv', 'w').write('fine')\n")
    assert [f["name"] for f in result["files"]] == ["ok.csv"]
