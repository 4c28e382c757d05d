"""Stored files are the server's alone: no other account on the host reads a user's uploads or
outputs (directories 0700, files 0600), and the data dir's secrets are private too."""

import os
import stat
from pathlib import Path

# Work areas of running and warm sandboxes have their own rules (docs/SECURITY.md), and the warm
# pool creates and removes them while this test walks: the walk does not enter them at all.
WORK_AREAS = {".pool", "workspace"}


def modes_under(folder):
    modes = {Path(folder): stat.S_IMODE(os.lstat(folder).st_mode)}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in WORK_AREAS]
        for name in dirs + files:
            path = Path(root, name)
            if not path.is_symlink():
                modes[path] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def test_uploads_and_outputs_are_private(api, server):
    up = api.upload("in/data.csv", b"a,b\n1,2\n")
    out = api.exec("py", "import os\nos.makedirs('deep/er', exist_ok=True)\nopen('deep/er/out.csv', 'w').write('x')\n",
                   files=[{"id": up["files"][0]["fileId"], "session_id": up["session_id"], "name": "in/data.csv"}])
    assert [f["name"] for f in out["files"] if not f.get("inherited")] == ["deep/er/out.csv"]
    storage = server.storage
    seen = {"dirs": 0, "files": 0}
    for path, mode in modes_under(storage).items():
        if path.is_dir():
            seen["dirs"] += 1
            assert mode == 0o700, (path, oct(mode))
        else:
            seen["files"] += 1
            assert mode == 0o600, (path, oct(mode))
    assert seen["files"] >= 2 and seen["dirs"] >= 4, seen
    for secret in ("db.sqlite3", "django-secret-key"):
        path = server.data_dir / secret
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (secret, oct(path.stat().st_mode))
    # traversable (nginx's workers reach their folder in it), never listable or writable by others
    assert stat.S_IMODE(server.data_dir.stat().st_mode) & 0o066 == 0
