"""What a sandbox read from the runtime stays in the page cache once its cgroup is removed.

On cgroup v1 the bubblewrap backend wrote `memory.force_empty` before removing an execution's
memory cgroup. That reclaims every page charged to the cgroup, and a file's cache pages are
charged to whoever read them first: once a language's files had been read first inside a
sandbox (after a rootfs export or any eviction), every run of that language read them from disk
again and threw them away again (measured: js 85 ms instead of 19, C 103 instead of 52, Go 317
instead of 213, for as long as the server ran)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from tests.conftest import bwrap_missing
from tests.liveserver import Client, LiveServer

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
PROT_READ, MAP_PRIVATE = 1, 2
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident(path: Path) -> float:
    """The share of the file's pages in the page cache (mincore on a mapping that reads nothing)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        addr = libc.mmap(None, size, PROT_READ, MAP_PRIVATE, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            pages = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
            assert libc.mincore(addr, size, pages) == 0, os.strerror(ctypes.get_errno())
            return sum(page & 1 for page in pages) / len(pages)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    """Drops the file's clean cache pages (this file only; nothing maps it now)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def cold_bwrap_server():
    if bwrap_missing():
        pytest.skip(bwrap_missing())
    live = LiveServer(SANDBOX_BACKEND="bwrap", SANDBOX_POOL="off", SANDBOX_FORKSERVER="false").start()
    yield live
    live.stop()


def test_the_runtime_a_run_read_stays_cached(cold_bwrap_server):
    rootfs = Path(os.environ.get("SANDBOX_BWRAP_ROOTFS", "/var/lib/codeinterp/rootfs"))
    bun = rootfs / "usr/local/bin/bun"
    evict(bun)
    assert resident(bun) < 0.05, "the probe cannot evict the file, so it proves nothing here"
    out = Client(cold_bwrap_server).exec("js", "console.log(1)")
    assert out["stdout"] == "1\n", out
    # (a cold run's cgroups are removed before it answers: test_bwrap.py, nothing is left)
    assert resident(bun) > 0.2, "the run's reads of bun were thrown out with its cgroup"
