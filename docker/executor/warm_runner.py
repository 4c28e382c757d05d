"""The waiting process of a warm sandbox (a container started ahead of time by the pool).

It blocks on /mnt/code/.go, a FIFO the server writes one JSON line into when an execution
takes this sandbox: {"argv": [...]} (the same argv a cold container would have been given).
Then it becomes that program:
- `python` mode: numpy, pandas and matplotlib are imported before waiting; a Python program
  runs in this very interpreter, as `python3 /mnt/code/main.py ARGS` would run it (same argv,
  __main__, sys.path[0], tracebacks without this file's frame, exit status);
- anything else is exec'd in place of this process, with the image's environment.
A sandbox serves one execution and is destroyed afterwards; nothing is ever reused.
"""

import json
import os
import sys

GO = "/mnt/code/.go"
READY = "/mnt/code/.ready"
OUT, ERR, STATUS = "/mnt/code/.stdout", "/mnt/code/.stderr", "/mnt/code/.status"


def preload() -> None:
    import io

    # The backend comes from MPLBACKEND=Agg in the image's environment, as in a cold run;
    # matplotlib.use() here would leave rcParams["backend_fallback"] changed.
    import matplotlib.pyplot as pyplot  # the slow one: fonts, backends
    import numpy  # noqa: F401
    import pandas

    # A first plot still costs ~30 ms more than later ones: pandas' plotting module, the font
    # file and the PNG writer load on first use. One throw-away figure, drawn and closed now,
    # leaves no trace a program can see: no open figure (numbering starts at 1 again), and
    # pandas unregisters the unit converters it installed for the call (test_pool checks).
    axes = pandas.DataFrame({"x": [0, 1], "y": [0, 1]}).plot(x="x", y="y", title="warm-up")
    axes.figure.savefig(io.BytesIO(), format="png")
    pyplot.close("all")


def announce_ready() -> None:
    """Blocks until the keeper looks in (it opens .ready for reading), then says "ready"."""
    while True:
        fd = os.open(READY, os.O_WRONLY)
        try:
            os.write(fd, b"1\n")
            return
        except BrokenPipeError:
            continue  # the keeper had already stopped looking; wait for its next look
        finally:
            os.close(fd)


def wait_for_program() -> list[str]:
    with open(GO, encoding="utf-8") as fifo:
        request = json.loads(fifo.read())
    return [str(part) for part in request["argv"]]


def run_python(script: str, args: list[str]) -> None:
    import traceback
    import types

    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(script)
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    try:
        with open(script, "rb") as handle:
            code = compile(handle.read(), script, "exec")
    except SyntaxError as error:
        traceback.print_exception(type(error), error, None)  # as the interpreter prints it
        sys.exit(1)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        error = error.with_traceback(error.__traceback__.tb_next)  # drop this runner's frame
        sys.excepthook(type(error), error, error.__traceback__)
        sys.exit(1)


def redirect_output() -> None:
    """stdout and stderr go to FIFOs the server reads directly, so the end of the program is
    seen at once, not when the container has wound down (which costs tens of ms)."""
    for fd, name in ((1, OUT), (2, ERR)):
        pipe = os.open(name, os.O_WRONLY)
        os.dup2(pipe, fd)
        os.close(pipe)


def finish_quickly(status: int) -> None:
    """Ends the way the interpreter would (threads joined, atexit handlers run, streams
    flushed), then ends every other process the program started, as the end of a cold
    container would, and reports the exit status on its own FIFO. Tearing down the
    preloaded modules (~100 ms) is skipped: the sandbox is destroyed next."""
    import atexit
    import signal
    import threading

    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    try:
        os.kill(-1, signal.SIGKILL)  # every process of ours but this one (and tini, pid 1)
    except ProcessLookupError:
        pass
    fd = os.open(STATUS, os.O_WRONLY)
    os.write(fd, f"{status}\n".encode())
    os._exit(status)


def exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)  # sys.exit("message"), as the interpreter prints it
    return 1


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "exec"
    if mode == "python":
        preload()
    serve(mode)


def serve(mode: str, announce: bool = True) -> None:
    """Says ready, waits for the program and becomes it. The fork-server's children
    (executor/forkserver/template.py) come here, preloaded by their template, without
    announcing: a fork is claimable as soon as it is made, so nobody waits for its word."""
    if announce:
        announce_ready()
    argv = wait_for_program()
    if mode == "python" and len(argv) >= 2 and os.path.basename(argv[0]).startswith("python") and argv[1].endswith(".py"):
        redirect_output()
        try:
            run_python(argv[1], argv[2:])
            status = 0
        except SystemExit as done:
            status = exit_status(done.code)
        finish_quickly(status)
    import signal

    # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec: give the program
    # the defaults a cold start has.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
