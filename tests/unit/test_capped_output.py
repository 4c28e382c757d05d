"""The one output collector every backend path uses (executor/backends/base.py: CappedOutput):
the per-stream cap, the compile marker cut from stderr even when split across reads, and
docker's attach-stream frames (executor/backends/docker.py: OutputCollector)."""

from __future__ import annotations

import time

from executor.backends.base import CappedOutput, SandboxClock
from executor.backends.docker import OutputCollector


def test_each_stream_is_capped_on_its_own():
    output = CappedOutput(cap=5)
    assert output.add("stdout", b"abc") is False
    assert output.add("stderr", b"12345") is False and not output.truncated
    assert output.add("stdout", b"defg") is True and output.truncated
    assert output.text("stdout") == "abcde" and output.text("stderr") == "12345"


def test_the_compile_marker_is_cut_even_across_reads():
    clock = SandboxClock(time.monotonic(), run_s=5, compile_s=5, marker=b"<<MARK>>")
    output = CappedOutput(cap=1 << 10, clock=clock)
    output.add("stderr", b"warning: x\n<<MA")
    output.add("stderr", b"RK>>boom")
    output.finish()
    assert output.text("stderr") == "warning: x\nboom" and clock.phase == "run"


def test_what_the_clock_held_back_comes_out_at_the_end():
    clock = SandboxClock(time.monotonic(), run_s=5, compile_s=5, marker=b"<<MARK>>")
    output = CappedOutput(cap=1 << 10, clock=clock)
    output.add("stderr", b"error: no <<MA")  # the compile failed: no marker ever comes
    output.finish()
    assert output.text("stderr") == "error: no <<MA" and output.clock is None


def test_docker_frames_split_anywhere_and_foreign_streams_are_dropped():
    def frame(stream: int, payload: bytes) -> bytes:
        return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload

    raw = frame(1, b"out") + frame(0, b"stdin?") + frame(2, b"err") + frame(7, b"odd") + frame(1, b"!")
    collector = OutputCollector(cap=1 << 10)
    for i in range(0, len(raw), 3):
        collector.feed(raw[i:i + 3])
    assert collector.text("stdout") == "out!" and collector.text("stderr") == "err" and not collector.truncated
