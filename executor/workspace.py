"""The per-execution work area: a size-capped tmpfs on the host, mounted by the server.

    {SANDBOX_STORAGE_PATH}/{userId}/{sessionId}/workspace/exec_{sessionId}   (tmpfs, 0700)
        data/   -> /mnt/data  (owned by the sandbox uid; the disk quota is the tmpfs size)
        code/   -> /mnt/code  (root-owned, read-only inside; holds the source file)

A tmpfs gives the quota with no extra machinery, costs ~4 ms, and shows no host path in the
sandbox's /proc/self/mountinfo (the root of a bind from it is "/data", not a host path).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

from sandbox_project.errors import ApiError


_libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x2, 0x4, 0x20
MNT_DETACH = 0x2


class WorkspaceError(RuntimeError):
    pass


def _input_error(error: OSError, what: str) -> ApiError:
    """What the client sent does not fit the sandbox: a 4xx that says why, not a 500."""
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return ApiError(413, "payload_too_large", f"{what} does not fit in /mnt/data (SANDBOX_DISK_MB)")
    if error.errno == errno.ENAMETOOLONG:
        return ApiError(400, "bad_request", f"the file name of {what} is too long")
    if error.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        return ApiError(400, "bad_request", f"{what} clashes with a folder or file of the same name")
    raise error


def _mount_tmpfs(target: Path, size_mb: int, remount: bool = False) -> None:
    options = f"size={size_mb}m,nr_inodes={max(4096, size_mb * 64)},mode=0700,uid=0,gid=0".encode()
    flags = MS_NOSUID | MS_NODEV | (MS_REMOUNT if remount else 0)
    if _libc.mount(b"sandbox", str(target).encode(), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise WorkspaceError(f"cannot mount the work area tmpfs at {target}: {os.strerror(err)} (the server must run as root)")


def unmount(target: Path) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        raise WorkspaceError(f"cannot unmount {target}: {os.strerror(ctypes.get_errno())}")


class Workspace:
    def __init__(self, path: Path, disk_mb: int, code_bytes: int, owner_uid: int = 0):
        self.path = path
        self.owner = owner_uid  # the host uid the sandboxed program runs as
        # The source file lives in the same tmpfs; give it room on top of the quota.
        self.disk_mb = disk_mb
        self.size_mb = disk_mb + (code_bytes >> 20) + 1
        self.data = path / "data"
        self.code = path / "code"

    def __enter__(self) -> "Workspace":
        return self.open()

    def open(self) -> "Workspace":
        self.path.mkdir(parents=True, mode=0o700)
        try:
            _mount_tmpfs(self.path, self.size_mb)
            self.code.mkdir()
            self.code.chmod(0o755)  # the sandbox reads its source here (the server's umask is 077)
            self.data.mkdir(mode=0o700)
            os.chown(self.data, self.owner, self.owner)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def resize(self, code_bytes: int) -> None:
        """Gives an area opened ahead of time for any source (a warm sandbox's) the size a
        cold run's would have for this one: the same disk quota either way."""
        size_mb = self.disk_mb + (code_bytes >> 20) + 1
        if size_mb != self.size_mb:
            _mount_tmpfs(self.path, size_mb, remount=True)
            self.size_mb = size_mb

    def close(self) -> None:
        unmount(self.path)
        shutil.rmtree(self.path, ignore_errors=True)

    def write_code(self, name: str, code: str) -> None:
        target = self.code / name
        try:
            target.write_text(code, encoding="utf-8")
        except OSError as error:
            raise _input_error(error, "the source file") from None
        target.chmod(0o644)

    def place_input(self, name: str, copy) -> Path:
        """Copies a stored file to data/<name>, creating (sandbox-owned) parent folders.
        `copy(target)` streams the file's bytes into the new file `target` (storage.store.copy_into,
        whichever store holds them); a local path is copied as it is."""
        target = self.data / name
        parent = self.data
        for part in name.split("/")[:-1]:
            parent = parent / part
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise ApiError(400, "bad_request", f"input {name!r} needs a folder where a file of that name is")
            if not parent.exists():
                parent.mkdir()
                os.chown(parent, self.owner, self.owner)
                parent.chmod(0o755)
        try:
            if isinstance(copy, (str, Path)):
                shutil.copyfile(copy, target)
            else:
                copy(target)
        except OSError as error:
            raise _input_error(error, f"input {name!r}") from None
        os.chown(target, self.owner, self.owner)
        target.chmod(0o644)
        return target
