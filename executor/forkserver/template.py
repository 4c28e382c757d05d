"""The fork-server's template process and the sandbox each of its children makes for itself.

Standard library only: stage `enter` runs with the server's Python as host root, stage
`serve` with the executor image's Python, inside the image's files. See
docs/ARCHITECTURE.md ("The fork-server") for the design and docs/SECURITY.md for its threats.

enter (host root, a fresh single-threaded process the keeper started):
    mount, pid, network, ipc and uts namespaces of its own; a new root on a tmpfs holding
    single read-only binds of the image's top-level directories, a /proc of the new pid
    namespace, a minimal /dev, a small /tmp and this file's directory (/forkserver);
    pivot_root into it (not chroot: the kernel refuses a new user namespace to a chrooted
    process); then the template uid with CAP_SETUID and CAP_SETGID only, no_new_privs, its own
    seccomp filter, the image's environment and nothing else, and exec of the image's python3.
serve (the template, pid 1 of its pid namespace, unprivileged):
    imports numpy, pandas and matplotlib once (warm_runner.preload) if it is the Python
    template, says "ready" on fd 3 and forks one child per request. It never runs a program
    itself. The template for exec'd languages (js, ts, bash) is lean: no imports, started
    with -S, so each child copies a few MB instead of the Python template's ~150.
a child:
    C1 (forked): becomes the sandbox's host uid and drops its capabilities, says hello with its
    credentials (the kernel gives the keeper its host pid), unshares user, mount, network, ipc,
    uts and pid namespaces, waits while the keeper writes its uid/gid map (that uid only) and
    moves it into the execution's cgroups, unshares a cgroup namespace, spawns the image's
    codeinterp-init as pid 1 (vfork and exec: no copy of this address space) and forks the
    program's process (pid 2). It stays outside the pid namespace as the sandbox's monitor:
    waits for the program's process, reports its exit status on the exit FIFO as bwrap's
    --json-status-fd would, and kills the init (the namespace ends with it).
    The program's process: a fresh root of single binds (a tmpfs, the image's directories
    read-only, /etc/passwd and friends, /proc of its pid namespace, /dev, /tmp, /mnt/data and
    /mnt/code attached from the keeper's open_tree clones), pivot_root and the old root
    detached as a whole, lo up, hostname, rlimits, a session of its own, every fd but 0-2
    closed, every capability dropped, no_new_privs, the sandbox seccomp filter, the image
    environment; then the warm runner (announce ready, wait for the program, run it in this
    interpreter or exec it).
"""

import ctypes
import errno
import json
import os
import signal
import socket
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC = 0x20, 0x1000, 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 2, 4
PR_SET_KEEPCAPS = 8
CAP_SETGID, CAP_SETUID = 6, 7
SYS_OPEN_TREE, SYS_MOVE_MOUNT, MOVE_MOUNT_F_EMPTY_PATH = 428, 429, 0x4
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
SYS_PIVOT_ROOT, SYS_CAPSET = 155, 126  # x86-64, the only architecture the sandboxes run on
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
LAUNCH_FAILED = 125  # as the bwrap launcher reports a sandbox that could not be made
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READ_ONLY = ("sys", "sysrq-trigger", "irq", "bus")
ROOT_FS = "/newroot"  # in the template's root: where each child builds its own
WARM_RUNNER_DIR = "/opt/sandbox/bin"
INIT = "/opt/sandbox/bin/codeinterp-init"  # docker/executor/sandbox_init.c

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda value: None if value is None else str(value).encode()  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def bind(source: str, target: str, read_only: bool) -> None:
    mount(source, target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if read_only else 0)
    present = os.statvfs(target).f_flag  # flags the kernel has locked must be kept
    if present & os.ST_NODEV:
        flags |= MS_NODEV
    if present & os.ST_NOEXEC:
        flags |= MS_NOEXEC
    mount(None, target, None, flags)


def unshare(flags: int) -> None:
    _check(libc.unshare(flags), "unshare")


def pivot(new_root: str) -> None:
    """pivot_root into new_root and detach the old root with everything below it."""
    os.mkdir(f"{new_root}/.old", 0o700)
    _check(libc.syscall(SYS_PIVOT_ROOT, new_root.encode(), f"{new_root}/.old".encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")


def prctl(option: int, arg2=0, arg3=0) -> None:
    _check(libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl {option}")


def touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))


def root_skeleton(root: str, image: str, names: list, devices_from: str) -> None:
    """The read-only directories `names` of `image` (symlinks recreated) and a minimal /dev in
    `root` (a fresh tmpfs)."""
    for name in names:
        source = f"{image}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), f"{root}/{name}")
        elif os.path.isdir(source):
            os.mkdir(f"{root}/{name}")
            bind(source, f"{root}/{name}", read_only=True)
    os.mkdir(f"{root}/dev")
    mount("tmpfs", f"{root}/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k")
    for name in DEVICES:
        touch(f"{root}/dev/{name}")
        mount(f"{devices_from}/{name}", f"{root}/dev/{name}", None, MS_BIND)
    os.mkdir(f"{root}/proc")


# -- stage "enter" (host root) -------------------------------------------------------------
def enter(config: dict) -> None:
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the keeper gone: this process goes too
    pid = os.fork()
    if pid:  # stays outside as the template's parent, so that the keeper sees it end
        signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # its parent gone: the whole pid namespace goes
    root = config["mount_point"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k")
    root_skeleton(root, config["rootfs"], config["rootfs_dirs"], "/dev")
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in ("forkserver", ROOT_FS.strip("/")):
        os.mkdir(f"{root}/{name}", 0o755)
    os.mkdir(f"{root}/tmp")  # the imports write (MPLCONFIGDIR); a child gets a fresh one
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=16m")
    bind(os.path.dirname(os.path.abspath(__file__)), f"{root}/forkserver", read_only=True)
    pivot(root)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    uid = config["template_uid"]
    os.setgroups([])
    # Of root's capabilities only CAP_SETUID and CAP_SETGID stay, through the exec (ambient):
    # a child becomes its sandbox's host uid before it makes its user namespace (see
    # seccomp.build_template_bpf, applied below, for why and for what bounds them).
    keep = (1 << CAP_SETGID) | (1 << CAP_SETUID)
    set_capabilities(keep, bounding=keep)  # (the bounding set while still root: that takes CAP_SETPCAP)
    prctl(PR_SET_KEEPCAPS, 1)
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    set_capabilities(keep, bounding=None)  # the uid change emptied the effective set
    for cap in (CAP_SETGID, CAP_SETUID):
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # (a change of credentials clears it)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    apply_filter(bytes.fromhex(config["template_bpf"]))
    os.chdir("/")
    # The keeper's socket becomes fd 3, the pipe with the seccomp program fd 4; nothing else.
    import fcntl

    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in config["fds"]]  # out of the way of 3 and 4 first
    for fd, target in zip(moved, (3, 4)):
        os.dup2(fd, target)  # (inheritable)
    os.closerange(5, 1 << 16)
    env = dict(config["env"])
    # -S for the lean template: no site hook, no site-packages (its children only exec).
    argv = ["python3", "/forkserver/template.py", "serve"] if config["preload"] else ["python3", "-S", "/forkserver/template.py", "serve"]
    os.execvpe(argv[0], argv, env)


# -- stage "serve" (the template) ------------------------------------------------------------
def recv_request(sock: socket.socket):
    fds = []
    message, ancillary, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(8 * 4))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(data) // 4}i", data[: len(data) - len(data) % 4]))
    return message, fds


def serve() -> None:
    # As the gc module's documentation advises for fork without exec: no collections while
    # loading (they leave freed holes in pages every fork would then copy), everything loaded
    # frozen before the first fork (so a child's collections never write to those objects'
    # pages), collections back on in the child.
    import gc

    gc.disable()
    # The warm runner's directory first, as when it is the script; not this file's (a
    # program's sys.path is that of `python3 main.py`: run_python replaces entry 0).
    sys.path[:] = [WARM_RUNNER_DIR] + [entry for entry in sys.path[1:] if entry != os.path.dirname(os.path.abspath(__file__))]
    import warm_runner

    config = json.loads(os.read(4, 1 << 20))  # the keeper's one-off message: the seccomp program, what to load
    os.close(4)
    if config["preload"]:
        warm_runner.preload()
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    keeper = socket.socket(fileno=3)
    keeper.send(b"ready")
    while True:
        try:
            message, fds = recv_request(keeper)
        except OSError:
            os._exit(1)
        if not message:
            os._exit(0)  # the keeper closed its end
        try:
            request = json.loads(message)
        except ValueError:
            request = None
        # (Only the keeper, root, writes here; still, nothing it sends may end this loop.)
        if not isinstance(request, dict) or len(fds) != 6 or (request.get("mode") == "python") != config["preload"]:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                child(keeper, request, fds, bytes.fromhex(config["bpf"]), warm_runner)
            except BaseException as error:  # noqa: BLE001 - nothing may return into the loop
                try:
                    os.write(2, f"codeinterp-forkserver: {error}\n".encode())  # the keeper's log, or once redirected the program's stderr
                except OSError:
                    pass
            os._exit(LAUNCH_FAILED)
        for fd in fds:
            os.close(fd)


# -- a child ---------------------------------------------------------------------------------
def child(keeper: socket.socket, request: dict, fds: list, bpf: bytes, warm_runner) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    keeper.close()
    ctl_fd, out_fd, err_fd, exit_fd, data_fd, code_fd = fds
    ctl = socket.socket(fileno=ctl_fd)
    ctl.settimeout(10)
    # The sandbox's host uid first, so that its user namespace is charged to that uid, then no
    # capability at all in the host's namespaces.
    host_uid = request["host_uid"]
    os.setresgid(host_uid, host_uid, host_uid)
    os.setresuid(host_uid, host_uid, host_uid)
    drop_capabilities(bounding=False)  # (its bounding set is the template's two; a new user namespace gets a full one)
    credentials = struct.pack("iII", os.getpid(), os.getuid(), os.getgid())
    ctl.sendmsg([b"hello"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)])
    unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID)
    ctl.send(b"unshared")
    if ctl.recv(16) != b"go":  # the keeper has written the maps and moved this process into the cgroups
        raise RuntimeError("the keeper did not confirm the sandbox")
    unshare(CLONE_NEWCGROUP)  # rooted at the sandbox's own cgroup, which it is now in
    # The namespace's init (pid 1) is a small program of the image, spawned without copying
    # this large address space (posix_spawn: vfork and exec); the program's process (pid 2) is
    # the one fork of it. This process (C1) stays outside the pid namespace, where the program
    # cannot see or signal it, and plays the part of bwrap's monitor: it reports the program's
    # exit status on the exit FIFO as bwrap's --json-status-fd does, then ends the namespace.
    init = os.posix_spawn(INIT, [INIT], {})
    program = os.fork()
    if program:
        supervise(ctl, program, init, exit_fd, (out_fd, err_fd, data_fd, code_fd))
    ctl.close()
    os.close(exit_fd)
    make_sandbox(request, out_fd, err_fd, data_fd, code_fd, bpf)
    mode = request["mode"]
    if mode == "python":
        import gc

        import numpy

        numpy.random.seed()  # the template's seed is every child's: draw a fresh one (random reseeds itself at fork)
        gc.enable()
        startup = sys.modules.get("sandbox_startup")
        if startup is not None:  # what every Python start does in the image, for the fresh /tmp
            startup._seed_matplotlib_cache()
    # "exec": the program replaces this process, confined as it is now (its stdout and stderr
    # are the FIFOs the keeper passed, its environment the image's).
    warm_runner.serve(mode, announce=False)


def supervise(ctl: socket.socket, program: int, init: int, exit_fd: int, others) -> None:
    """C1 once the sandbox's two processes exist: says "made", gives up what it holds, waits
    for the program's process and reports how it ended."""
    for fd in others:
        os.close(fd)
    ctl.send(b"made")
    ctl.close()
    drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    try:
        _, status = os.waitpid(program, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
    except ChildProcessError:
        code = LAUNCH_FAILED
    try:
        os.write(exit_fd, json.dumps({"exit-code": code}).encode() + b"\n")
    finally:
        os.kill(init, signal.SIGKILL)  # and with it whatever is left in the pid namespace
        os._exit(code)


def make_sandbox(request: dict, out_fd: int, err_fd: int, data_fd: int, code_fd: int, bpf: bytes) -> None:
    """The program's process, pid 2 of the execution's namespaces, with every capability in
    its own user namespace only: builds its root (the mount namespace is its maker's and its
    init's too), then gives up everything before the program runs."""
    # Its uid and gid are already the one mapped id (the sandbox's), with every capability in
    # its own user namespace, as its creator.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = ROOT_FS
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    root_skeleton(root, "", request["rootfs_dirs"], "/dev")  # the template's root is the image
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open(f"{root}/proc/sys/user/max_user_namespaces", "w") as limit:
        limit.write("0\n")  # none below this one (the seccomp filter refuses them too)
    for name in PROC_READ_ONLY:  # as bwrap's --proc covers them
        if os.path.exists(f"{root}/proc/{name}"):
            bind(f"{root}/proc/{name}", f"{root}/proc/{name}", read_only=True)
    tmp_size = request["tmp_bytes"]
    os.mkdir(f"{root}/dev/shm")
    mount("tmpfs", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_size}")
    os.mkdir(f"{root}/dev/pts")
    mount("devpts", f"{root}/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.mkdir(f"{root}/tmp")
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={tmp_size}")
    os.makedirs(f"{root}/sys/class/net")
    os.makedirs(f"{root}/mnt/data")
    os.makedirs(f"{root}/mnt/code")
    # The work area comes as two detached mounts the keeper cloned (open_tree): the template
    # never sees any work area, and a child only its own.
    for tree_fd, target, read_only in ((data_fd, "/mnt/data", False), (code_fd, "/mnt/code", True)):
        attach(tree_fd, f"{root}{target}")
        os.close(tree_fd)
        mount(None, f"{root}{target}", None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | (MS_RDONLY if read_only else 0))
    # /etc/passwd, group, hosts, hostname: files of this root's tmpfs bound over the image's,
    # then unlinked (the binds keep them).
    os.mkdir(f"{root}/.etc", 0o700)
    for name, content in request["etc"].items():
        staged = f"{root}/.etc/{name}"
        with open(staged, "w") as handle:
            handle.write(content)
        bind(staged, f"{root}/etc/{name}", read_only=True)
        os.unlink(staged)
    os.rmdir(f"{root}/.etc")
    pivot(root)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    socket.sethostname("sandbox")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        import fcntl

        flags = struct.unpack("16sh", fcntl.ioctl(probe, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
    os.chdir("/mnt/data")
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (request["nofile"], request["nofile"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (request["fsize"], request["fsize"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.closerange(3, 1 << 16)  # the template's, the keeper's, the sandbox-making ones
    drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.environ.clear()
    os.environ.update(dict(request["env"]))
    os.environ["PWD"] = "/mnt/data"  # as bwrap's --chdir leaves it
    apply_filter(bpf)


def set_capabilities(keep: int, bounding: int | None) -> None:
    """Effective, permitted and inheritable = `keep` (a bit mask); every capability outside
    `bounding` leaves the bounding set (None: the bounding set stays, as dropping from it
    takes CAP_SETPCAP)."""
    for cap in range(64 if bounding is not None else 0):
        if not bounding & (1 << cap) and libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break  # past the last capability this kernel knows
            _check(-1, f"drop capability {cap}")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    low, high = keep & 0xFFFFFFFF, keep >> 32
    data = struct.pack("6I", low, low, low, high, high, high)  # (effective, permitted, inheritable) x 2 words
    _check(libc.syscall(SYS_CAPSET, ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def drop_capabilities(bounding: bool = True) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    set_capabilities(0, bounding=0 if bounding else None)


def apply_filter(bpf: bytes) -> None:
    program = ctypes.create_string_buffer(bpf, len(bpf))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(bpf) // 8, ctypes.cast(program, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")


def attach(tree_fd: int, target: str) -> None:
    """Mounts a detached tree the keeper made (open_tree) at target."""
    _check(libc.syscall(SYS_MOVE_MOUNT, tree_fd, b"", -100, target.encode(), MOVE_MOUNT_F_EMPTY_PATH), f"move_mount {target}")


if __name__ == "__main__":
    stage = sys.argv[1] if len(sys.argv) > 1 else ""
    if stage == "enter":
        enter(json.loads(sys.argv[2]))
    elif stage == "serve":
        serve()
    else:
        sys.exit("usage: template.py enter CONFIG | serve")
