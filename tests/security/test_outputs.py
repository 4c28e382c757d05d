"""What a program leaves in /mnt/data cannot poison the conversation or the host's disk.

- Output names follow the rule input names follow (a name the server hands back must be one it
  accepts back): control characters, backslashes, overlong paths, invalid UTF-8
  are reported in artifact_truncation, never returned, never a 500.
- Stored bytes are bounded per execution (the disk quota): hard links count once, sparse files
  are charged their apparent size.
"""

import os

import pytest
import requests

from tests.liveserver import paths_under


@pytest.fixture(autouse=True)
def server_stays_healthy(sandbox_server):
    yield
    assert requests.get(sandbox_server.url + "/health", timeout=5).status_code == 200


POISON = {
    "newline": "a\nb.txt", "carriage return": "a\rb.txt", "tab": "a\tb.txt", "escape": "a\x1bb.txt",
    "delete": "a\x7fb.txt", "backslash": "a\\b.txt",
    "overlong path": "/".join(["d" * 60] * 5) + "/f.txt",
}


def test_poisonous_output_names_are_reported_not_returned(sandbox):
    code = (
        "import os, json\n"
        f"names = {list(POISON.values())!r}\n"
        "for name in names:\n"
        "    folder = os.path.dirname(name)\n"
        "    if folder: os.makedirs(folder, exist_ok=True)\n"
        "    open(name, 'w').write('x')\n"
        "open(b'bad-\\xff\\xfe.txt', 'w').write('x')\n"          # not UTF-8 at all
        "os.makedirs(b'dir-\\xc3', exist_ok=True); open(b'dir-\\xc3/in.txt', 'w').write('x')\n"
        "open('fine.txt', 'w').write('ok')\n"
        "print('made')\n"
    )
    out = sandbox.exec("py", code)
    assert out["stdout"] == "made\n", out
    returned = [f["name"] for f in out["files"]]
    assert returned == ["fine.txt"], returned
    reported = [t for t in out.get("artifact_truncation", []) if t["reason"] == "invalid_name"]
    assert len(reported) == len(POISON) + 2, out.get("artifact_truncation")
    for entry in reported:  # printable, so it is safe to show (and JSON-encodable)
        assert entry["name"].isprintable() and entry.get("detail"), entry


def test_every_returned_name_is_accepted_back(sandbox):
    # The longest names the rule allows: a conversation that sends them back is never refused.
    code = (
        "import os\n"
        "long = 'e' * 251 + '.txt'\n"               # 255 bytes, the most a Linux name holds
        "open(long, 'w').write('1')\n"
        "deep = '/'.join(['g' * 20] * 9) + '/' + 'h' * 40 + '.txt'\n"  # 9 folders, 229 characters
        "os.makedirs(os.path.dirname(deep)); open(deep, 'w').write('2')\n"
        "open('ünïcödé ✓.txt', 'w').write('3')\n"
    )
    first = sandbox.exec("py", code)
    names = sorted(f["name"] for f in first["files"])
    assert len(names) == 3, first
    refs = [{"id": f["id"], "storage_session_id": f["storage_session_id"], "name": f["name"], "kind": "user",
             "resource_id": f["id"]} for f in first["files"]]
    again = sandbox.post("/exec", json={"lang": "bash", "code": "find . -type f | wc -l", "files": refs})
    assert again.status_code == 200, again.text
    assert again.json()["stdout"].strip() == "3"


def stored_bytes(server) -> int:
    """Blocks used on the host by every stored output (what the disk really holds)."""
    total = 0
    seen = set()
    for path in paths_under(server.storage):
        if path.parent.name != "outputs":
            continue
        info = path.stat()
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def test_hard_links_are_stored_once(sandbox, sandbox_server):
    before = stored_bytes(sandbox_server)
    code = (
        "import os\nopen('base.csv', 'wb').write(os.urandom(9 << 20))\n"
        "for n in range(40):\n    os.link('base.csv', f'link{n}.csv')\n"
    )
    out = sandbox.exec("py", code)
    assert out["stdout"] == "" and out["stderr"] == "", out
    grew = stored_bytes(sandbox_server) - before
    # The quota is 64 MiB here; 41 names of one 9 MiB inode used to become 369 MiB on disk.
    assert grew <= 64 << 20, f"{grew >> 20} MiB stored for 9 MiB of the sandbox's disk"
    returned = {f["name"] for f in out["files"]}
    assert "base.csv" in returned


def test_sparse_files_are_charged_their_apparent_size(sandbox, sandbox_server):
    before = stored_bytes(sandbox_server)
    code = (
        "for n in range(40):\n"
        "    with open(f'sparse{n}.csv', 'wb') as f:\n        f.truncate(9 << 20)\n"
    )
    out = sandbox.exec("py", code)
    grew = stored_bytes(sandbox_server) - before
    assert grew <= 64 << 20, f"{grew >> 20} MiB stored for a sandbox whose disk is 64 MiB"
    budget = [t for t in out.get("artifact_truncation", []) if t["reason"] == "storage_budget"]
    assert budget, out.get("artifact_truncation")
    assert len(out["files"]) + len(budget) == 40
