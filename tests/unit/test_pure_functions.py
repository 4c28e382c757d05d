"""The pure functions under the server: request parsing, name rules, command building, status
parsing, path normalisation, the seccomp rules and the front's config. Seconds, no root, no
Docker, no server (scripts/test.sh runs these first)."""

from __future__ import annotations

import json

import pytest
from rest_framework.exceptions import ParseError

from executor.backends.base import SandboxClock, runner_status
from executor.backends.bwrap import _bwrap_exit
from executor.languages import find_language
from executor.pipeline import MAX_TRUNCATION_ENTRIES, _more, command_for
from sandbox_project.config import local_host_names, pool_sizes
from sandbox_project.middleware import normalize_api_path
from sandbox_project.parsers import MAX_DEPTH, loads
from storage.names import (
    InvalidName,
    check_relative_name,
    extension_of,
    printable,
    user_dir,
)


# -- request parsing --------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ['{"a": NaN}', '[Infinity]', "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
                                 "[" * 5000 + "]" * 5000, '"\\ud800"', '{"\\udfff": 1}', b"\xff", "", "{", "1 2"])
def test_json_bodies_refused(raw):
    with pytest.raises(ParseError):
        loads(raw)


@pytest.mark.parametrize("raw,value", [('{"a": [1, {"b": "\\u00e9"}]}', {"a": [1, {"b": "é"}]}), ("1e400", float("inf")),
                                       ("[" * MAX_DEPTH + "]" * MAX_DEPTH, [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
                                       ('"\\ud83d\\ude00"', "😀")])
def test_json_bodies_accepted(raw, value):
    assert loads(raw) == value


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a.txt", "dir/sub/f.csv", "ünï ✓.txt", "e" * 251 + ".txt", "/".join(["d"] * 9) + "/f"])
def test_names_accepted(name):
    assert check_relative_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "/abs", "a//b", "./a", "a\\b", "a\nb", "a\rb", "a\tb", "a\x1bb", "a\x7fb",
                                  "a\x00b", "x" * 257, "é" * 128 + ".txt", "bad-\udcff.txt", "/".join(["d"] * 11), None, 3])
def test_names_refused(name):
    with pytest.raises(InvalidName):
        check_relative_name(name)


def test_printable_names_and_directories():
    assert printable("a\nb\x1b\udcff.txt") == "a\\nb\\x1b\\xff.txt"
    assert printable("x" * 400).endswith("...") and len(printable("x" * 400)) == 300
    assert extension_of("a/b.CSV") == ".csv" and extension_of(".bashrc") == "" and extension_of("a.tar.gz") == ".gz"
    assert user_dir(None) == "anonymous" and user_dir("alice") == "alice" and user_dir("../x").startswith("u_")


def test_truncation_list_is_bounded():
    assert _more(MAX_TRUNCATION_ENTRIES) == []
    assert _more(MAX_TRUNCATION_ENTRIES + 7) == [{"name": "", "reason": "more_not_listed", "count": 7}]


# -- command building and the sandbox's clock ------------------------------------------------
def limits(**change):
    from executor.backends.base import Limits

    base = dict(timeout_ms=5000, compile_timeout_ms=9000, memory_mb=256, pids=64, cpus=1.0, output_max_bytes=1 << 20,
                tmp_mb=64, disk_mb=64, nofile=1024)
    return Limits(**{**base, **change})


def test_interpreted_commands_run_directly():
    command = command_for(find_language("python"), "main.py", ["a b", "c"], limits())
    assert command.argv == ["python3", "/mnt/code/main.py", "a b", "c"]
    assert command.budget_ms == 5000 and command.compile_marker == b""


def test_compiled_commands_mark_the_end_of_the_compile_step():
    first = command_for(find_language("c"), "main.c", ["x"], limits())
    second = command_for(find_language("c"), "main.c", ["x"], limits())
    assert first.argv[:2] == ["sh", "-c"] and first.argv[-2:] == ["main", "x"]
    assert "timeout" not in first.argv[2]  # the server's clock decides, not a timer in the sandbox
    token = first.compile_marker.strip().decode()
    assert token.startswith("codeinterp-compiled-") and token in first.argv[2]
    assert first.compile_marker != second.compile_marker  # random per execution
    assert first.budget_ms == 9000 + 5000 + 2000


def test_clock_switches_phase_on_the_marker_even_split_across_chunks():
    clock = SandboxClock(100.0, run_s=5, compile_s=9, marker=b"\nMARK\n")
    assert clock.phase == "compile" and clock.deadline == 109
    out = clock.filter_stderr(b"warning: x\n\nMA", 101.0)
    out += clock.filter_stderr(b"RK\nprogram says hi", 102.0)
    assert clock.phase == "run" and clock.deadline == 107
    assert out + clock.leftover() == b"warning: x\nprogram says hi"
    assert clock.filter_stderr(b"\nMARK\n", 103.0) == b"\nMARK\n"  # later copies are the program's own


def test_clock_without_a_compile_step():
    clock = SandboxClock(10.0, run_s=2)
    assert clock.phase == "run" and clock.remaining(11.0) == 1.0
    assert clock.filter_stderr(b"anything", 11.0) == b"anything"


# -- status parsing -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw,code", [(b"0\n", 0), (b"3\n", 3), (b"255\n", 255), (b"0\nmore", 0), (b"300\n", None),
                                      (b"-1\n", None), (b"+1\n", None), (b" 1\n", None), (b"0x1\n", None), (b"x\n", None),
                                      (b"1", None), (b"123456789\n", None), ("\u0663\n".encode(), None)])
def test_runner_status_line(raw, code):
    # One parser for the warm paths of both backends and for programmatic runs: a forged
    # b"300\n" used to be exit 44 on Docker and 300 on bwrap.
    assert runner_status(raw) == code


def test_bwrap_status_lines():
    assert _bwrap_exit(b'{"child-pid": 5}\n{"exit-code": 7}\n') == 7
    assert _bwrap_exit(b'{"child-pid": 5}\n') is None
    assert _bwrap_exit(b"not json\n{\"exit-code\": \"9\"}") is None


# -- paths, hosts, settings helpers ---------------------------------------------------------------
@pytest.mark.parametrize("raw,path", [("/v1/exec", "/exec"), ("//v1//upload/", "/upload"), ("/v1", "/"), ("/admin/", "/admin/"),
                                      ("/files/x//", "/files/x"), ("/v1x/exec", "/v1x/exec")])
def test_api_paths_normalised(raw, path):
    assert normalize_api_path(raw) == path


def test_default_host_names():
    assert local_host_names("127.0.0.1") == ["127.0.0.1", "[::1]", "localhost"]
    assert "[::1]" in local_host_names("::1")
    wide = local_host_names("0.0.0.0")
    assert "localhost" in wide and "127.0.0.1" in wide and len(wide) > 3


def test_pool_sizes():
    assert pool_sizes("SANDBOX_TEST_UNSET", "py:2, js:1,bash:0") == {"py": 2, "js": 1}
    assert pool_sizes("SANDBOX_TEST_UNSET", "off") == {}


# -- seccomp ---------------------------------------------------------------------------------------
def test_seccomp_rules_are_x86_64_syscalls_and_compile():
    pyseccomp = pytest.importorskip("pyseccomp")
    from executor.backends import seccomp

    unknown = [n for n in seccomp.ALLOWED + seccomp.DENIED if pyseccomp.resolve_syscall(pyseccomp.Arch.X86_64, n) < 0
               and n not in seccomp._FALLBACK_NUMBERS]
    assert unknown == []
    assert not set(seccomp.ALLOWED) & set(seccomp.DENIED)
    assert len(seccomp.build_bpf()) > 1000
    profile = json.loads(seccomp.PROFILE_JSON)
    assert profile["architectures"] == ["SCMP_ARCH_X86_64"] and profile["defaultAction"] == "SCMP_ACT_ERRNO"
    ioctl = [r for r in profile["syscalls"] if r["names"] == ["ioctl"]]
    # 32 one-bit alternatives ("some bit differs from TIOCSTI"), each on the low 32 bits only
    assert len(ioctl) == 32 and all(r["args"][0]["value"] < (1 << 32) for r in ioctl)
    sockets = [r for r in profile["syscalls"] if r["names"] == ["socket"] and r["action"] == "SCMP_ACT_ALLOW"]
    assert sorted(r["args"][0]["value"] for r in sockets) == [1, 2, 10]


# -- the front ---------------------------------------------------------------------------------------
def test_front_config_answers_its_own_errors_as_4xx_json():
    from sandbox_project import front

    text = front.render()
    for status in (400, 413, 414, 494, 501, 505):
        assert f"error_page {status} ={front.FRONT_STATUS.get(status, status)} " in text
    assert front.FRONT_STATUS[505] == 400 and front.FRONT_STATUS[500] == 507
    assert "client_header_timeout" in text and "proxy_request_buffering on" in text
    assert f"server unix:{front.app_socket()}" in text


@pytest.mark.parametrize("message,status,error", [("database is locked", 503, "database_unavailable"),
                                                  ("could not connect to server", 503, "database_unavailable"),
                                                  ("database or disk is full", 507, "insufficient_storage")])
def test_database_errors_are_5xx_json_with_a_reason(message, status, error):
    from django.db import OperationalError

    from sandbox_project.errors import json_exception_handler

    response = json_exception_handler(OperationalError(message), {})
    assert response.status_code == status and response.data["error"] == error
