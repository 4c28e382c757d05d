"""Clients that send slowly cannot stop the server answering others.

The gthread workers used to read request heads themselves, a thread per connection with no
deadline: 64 connections holding half a head made the server answer nobody, /health included.
The nginx front (sandbox_project/front.py) now reads heads and bodies, and drops a client whose
head is not complete within SANDBOX_FRONT_HEADER_TIMEOUT_S or whose body pauses longer than
SANDBOX_FRONT_BODY_TIMEOUT_S. Only 127.0.0.1, a bounded number of sockets, and every socket
is closed by the test.
"""

import os
import select
import socket
import time

import pytest
import requests

from tests.liveserver import CANARY_KEY, Client, LiveServer

SLOW = 128


@pytest.fixture(scope="module")
def quick_front():
    live = LiveServer(SANDBOX_FRONT_HEADER_TIMEOUT_S="4", SANDBOX_FRONT_BODY_TIMEOUT_S="4").start()
    yield live
    live.stop()


def open_slow(server, payload: bytes, count: int = SLOW) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(payload)
        sockets.append(sock)
    return sockets


def still_open(sockets: list[socket.socket], within_s: float) -> list[socket.socket]:
    """The sockets the server has not closed within `within_s` (end of stream or a reset)."""
    pending = set(sockets)
    deadline = time.monotonic() + within_s
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], 0.5)
        for sock in readable:
            try:
                while sock.recv(65536):  # nginx may say 408 first
                    pass
            except (ConnectionResetError, BlockingIOError, socket.timeout):
                pass
            pending.discard(sock)
    return list(pending)


def answers_promptly(server) -> None:
    health = requests.get(server.url + "/health", timeout=5)
    assert health.status_code == 200, health.text
    ran = Client(server).post("/exec", json={"lang": "bash", "code": "echo alive"}, timeout=5)
    assert ran.status_code == 200 and ran.json()["stdout"] == "alive\n", ran.text


@pytest.mark.parametrize("payload", [
    b"POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-",                       # half a head
    b"GET /health HTTP/1.1\r\n",                                                     # a request line only
    (b"POST /v1/exec HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
     b"X-API-Key: " + CANARY_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"lang\""),  # a body that stops
], ids=["half-head", "request-line", "stalled-body"])
def test_slow_clients_neither_block_others_nor_stay(quick_front, payload):
    sockets = open_slow(quick_front, payload)
    try:
        answers_promptly(quick_front)
        lingering = still_open(sockets, within_s=30)
        assert not lingering, f"{len(lingering)} of {SLOW} slow connections still open after 30 s"
        answers_promptly(quick_front)
    finally:
        for sock in sockets:
            sock.close()


def test_slow_clients_on_the_default_settings(server):
    # The settings a fresh install runs with: heads within 10 s.
    sockets = open_slow(server, b"GET /v1/files/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-")
    try:
        answers_promptly(server)
        assert not still_open(sockets, within_s=40)
    finally:
        for sock in sockets:
            sock.close()


def test_workers_are_not_reachable_around_the_front(server):
    # The workers' socket lies in a folder only root and nginx's workers may enter.
    folder = server.data_dir / "front"
    assert (folder / "app.sock").exists()
    assert oct(folder.stat().st_mode & 0o777) == "0o700" and folder.stat().st_uid != 0
    if os.geteuid() == 0:
        pid = os.fork()
        if pid == 0:  # as an ordinary local account
            os.setgid(65534)
            os.setuid(65534)
            try:
                probe = socket.socket(socket.AF_UNIX)
                probe.connect(str(folder / "app.sock"))
                os._exit(1)
            except PermissionError:
                os._exit(0)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0, "an ordinary account reached the workers' socket"
