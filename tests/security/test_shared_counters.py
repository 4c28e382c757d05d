"""Per-user kernel counters are not shared between executions running at the same time.

The kernel counts inotify instances, POSIX message queue bytes and pipe buffer pages per user
(per host uid, without a user namespace): executions that ran as one uid could take them all
and make a concurrent execution of another user fail with EMFILE. Each execution slot, and each
warm sandbox, has a host uid of its own.
"""

import threading
import time

import pytest
import requests

HOG = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
held = []
while len(held) < 200:            # every inotify instance this uid may have (the host allows 128)
    fd = libc.inotify_init1(0)
    if fd < 0:
        break
    held.append(fd)
queues = 0
mq = ctypes.CDLL("librt.so.1", use_errno=True)
attr = (ctypes.c_long * 8)(0, 10, 8192, 0)
while queues < 200 and mq.mq_open(f"/hog{queues}".encode(), os.O_CREAT | os.O_RDWR, 0o600, attr) >= 0:
    queues += 1
print("holding", len(held), "inotify instances and", queues, "queues", flush=True)
time.sleep(6)
"""

VICTIM = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
mq = ctypes.CDLL("librt.so.1", use_errno=True)
fd = libc.inotify_init1(0)
print("inotify", "ok" if fd >= 0 else os.strerror(ctypes.get_errno()))
attr = (ctypes.c_long * 8)(0, 10, 8192, 0)
q = mq.mq_open(b"/victim", os.O_CREAT | os.O_RDWR, 0o600, attr)
print("mqueue", "ok" if q >= 0 else os.strerror(ctypes.get_errno()))
"""


@pytest.fixture(autouse=True)
def server_stays_healthy(sandbox_server):
    yield
    assert requests.get(sandbox_server.url + "/health", timeout=5).status_code == 200


def test_one_execution_cannot_exhaust_another_ones_counters(sandbox):
    hog_result = {}

    def hog():
        hog_result["out"] = sandbox.exec("py", HOG, timeout=8000)

    thread = threading.Thread(target=hog)
    thread.start()
    time.sleep(2.5)  # the hog has taken everything by now (it prints once it has)
    victim = sandbox.exec("py", VICTIM)
    thread.join(30)
    assert hog_result["out"]["stdout"].startswith("holding"), hog_result
    assert victim["stdout"].split("\n")[:2] == ["inotify ok", "mqueue ok"], (victim, hog_result["out"]["stdout"])
