"""The seccomp policy every sandbox gets: an allow-list of system calls, the same rules as a
Docker JSON profile (docker and runsc, `--oci-seccomp`) and as a BPF program (bwrap).

Allowed: the calls ordinary programs of every language in the image make, for x86-64 only (a
32-bit or x32 call is refused outright: their `socketcall` multiplexer cannot be filtered by
argument). The list is that of Docker's default profile for a container without capabilities,
less what an untrusted program has no use for: tracing (ptrace, process_vm_*, kcmp), file
handles, io_uring, `modify_ldt`. Anything not allowed fails with EPERM, as under Docker's own
profile (Docker 20.10's runc ignores a default errno other than EPERM).

Allowed with conditions (arguments are 64-bit in seccomp, and the kernel often reads only 32
of them, so a rule compares exactly what the kernel will act on):
- socket: AF_UNIX, AF_INET and AF_INET6 only (the network namespace has nothing but loopback);
  AF_VSOCK (the hypervisor's side of this VM), AF_NETLINK, AF_PACKET, AF_KEY, AF_ALG... get
  EAFNOSUPPORT. socketpair: AF_UNIX only.
- clone: without namespace flags; clone3 gets ENOSYS (its flags are in memory, where seccomp
  cannot look), so libc falls back to clone.
- ioctl: anything but TIOCSTI (faking terminal input), compared on the low 32 bits.
- chmod, fchmod, fchmodat, fchmodat2: no setuid or setgid bit.
- personality: only the values Docker's profile admits (query, Linux, UNAME26 and 32-bit
  layout flags), no READ_IMPLIES_EXEC or ADDR_NO_RANDOMIZE.
"""

import errno
import json
import tempfile

ALLOWED = """
accept accept4 access alarm arch_prctl bind brk capget capset chdir chown clock_getres clock_gettime
clock_nanosleep close close_range connect copy_file_range creat dup dup2 dup3 epoll_create epoll_create1
epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fallocate fanotify_mark fchdir fchown fchownat fcntl fdatasync
fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs fsync ftruncate futex futex_waitv futimesat
getcpu getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername getpgid getpgrp getpid
getppid getpriority getrandom getresgid getresuid getrlimit get_robust_list getrusage getsid getsockname
getsockopt get_thread_area gettid gettimeofday getuid getxattr inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel io_destroy io_getevents io_pgetevents ioprio_get ioprio_set io_setup io_submit kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr link linkat listen listxattr
llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier memfd_create memfd_secret mincore mkdir mkdirat
mknod mknodat mlock mlock2 mlockall mmap mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend
mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat open openat
openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll prctl pread64
preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2 read readahead readlink readlinkat
readv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop sendfile sendmmsg sendmsg sendto setfsgid setfsuid
setgid setgroups setitimer setpgid setpriority setregid setresgid setresuid setreuid setrlimit set_robust_list
setsid setsockopt set_thread_area set_tid_address setuid setxattr shmat shmctl shmdt shmget shutdown sigaltstack
signalfd signalfd4 splice stat statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill
time timer_create timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create timerfd_gettime
timerfd_settime times tkill truncate umask uname unlink unlinkat utime utimensat utimes vfork vmsplice wait4
waitid write writev
""".split()

# Not in ALLOWED, so refused (EPERM): what an escape or an attack on the host would use.
DENIED = """
ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd process_madvise mount umount2 pivot_root chroot
mount_setattr move_mount open_tree fsopen fsmount fsconfig fspick unshare setns kexec_load kexec_file_load
init_module finit_module delete_module bpf perf_event_open userfaultfd keyctl add_key request_key open_by_handle_at
name_to_handle_at reboot swapon swapoff acct settimeofday clock_settime clock_adjtime adjtimex syslog iopl ioperm
quotactl quotactl_fd lookup_dcookie vhangup uselib ustat sysfs _sysctl nfsservctl fanotify_init io_uring_setup
io_uring_enter io_uring_register modify_ldt sethostname setdomainname
""".split()

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCKET_FAMILIES = (AF_UNIX, AF_INET, AF_INET6)
SOCKETPAIR_FAMILIES = (AF_UNIX,)
HIGHEST_FAMILY_CHECKED = 10  # families above AF_INET6 are refused by one "greater than" rule
# clone() flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
NAMESPACE_MASK = sum(NAMESPACE_FLAGS)
SETUID_BITS = (0o4000, 0o2000)
TIOCSTI = 0x5412
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
CHMOD_MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2}

# Each rule: (action, errno or None, syscall, [(arg index, op, value, mask)]): conditions of one
# rule must all hold; several rules for one call are alternatives. op: "eq", "gt", "masked_eq".
ALLOW, ERRNO = "allow", "errno"


def rules() -> list[tuple]:
    found: list[tuple] = [(ALLOW, None, name, []) for name in ALLOWED]
    # (DENIED is what the default does anyway; listed so the intent, and a test, can see it.)
    for call, families in (("socket", SOCKET_FAMILIES), ("socketpair", SOCKETPAIR_FAMILIES)):
        found += [(ALLOW, None, call, [(0, "eq", family, None)]) for family in families]
        refused = [f for f in range(HIGHEST_FAMILY_CHECKED + 1) if f not in families]
        found += [(ERRNO, errno.EAFNOSUPPORT, call, [(0, "eq", family, None)]) for family in refused]
        found.append((ERRNO, errno.EAFNOSUPPORT, call, [(0, "gt", HIGHEST_FAMILY_CHECKED, None)]))
    found.append((ALLOW, None, "clone", [(0, "masked_eq", 0, NAMESPACE_MASK)]))
    found += [(ERRNO, errno.EPERM, "clone", [(0, "masked_eq", bit, bit)]) for bit in NAMESPACE_FLAGS]
    found.append((ERRNO, errno.ENOSYS, "clone3", []))  # ENOSYS, not EPERM: only then does libc fall back
    # "request != TIOCSTI in its low 32 bits" is an alternative of 32 single-bit tests: some bit
    # differs from TIOCSTI's.
    for bit in range(32):
        found.append((ALLOW, None, "ioctl", [(1, "masked_eq", (~TIOCSTI) & (1 << bit), 1 << bit)]))
    found.append((ERRNO, errno.EPERM, "ioctl", [(1, "masked_eq", TIOCSTI, 0xFFFFFFFF)]))
    for call, index in CHMOD_MODE_ARG.items():
        found.append((ALLOW, None, call, [(index, "masked_eq", 0, sum(SETUID_BITS))]))
        found += [(ERRNO, errno.EPERM, call, [(index, "masked_eq", bit, bit)]) for bit in SETUID_BITS]
    found += [(ALLOW, None, "personality", [(0, "eq", value, None)]) for value in PERSONALITIES]
    return found


# -- Docker's JSON format --------------------------------------------------------------------
_JSON_OPS = {"eq": "SCMP_CMP_EQ", "gt": "SCMP_CMP_GT", "masked_eq": "SCMP_CMP_MASKED_EQ"}


def _json_arg(index: int, op: str, value: int, mask: int | None) -> dict:
    if op == "masked_eq":  # Docker's format: value = the mask, valueTwo = the expected bits
        return {"index": index, "value": mask, "valueTwo": value, "op": _JSON_OPS[op]}
    return {"index": index, "value": value, "op": _JSON_OPS[op]}


DEFAULT_ERRNO = errno.EPERM


def effective_rules() -> list[tuple]:
    """rules() without those that only say what the default says (libseccomp refuses them)."""
    return [rule for rule in rules() if not (rule[0] == ERRNO and rule[1] == DEFAULT_ERRNO)]


def build_profile() -> dict:
    syscalls = []
    for action, err, name, args in effective_rules():
        rule = {"names": [name], "action": "SCMP_ACT_ALLOW" if action == ALLOW else "SCMP_ACT_ERRNO"}
        if action == ERRNO:
            rule["errnoRet"] = err
        if args:
            rule["args"] = [_json_arg(*arg) for arg in args]
        syscalls.append(rule)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": DEFAULT_ERRNO,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    }


PROFILE_JSON = json.dumps(build_profile(), separators=(",", ":"))


# -- the same rules as a BPF program (bwrap --seccomp FD) -------------------------------------
# Calls newer than some libseccomp releases know, by their x86-64 numbers.
_FALLBACK_NUMBERS = {"fchmodat2": 452, "futex_waitv": 449, "process_mrelease": 448, "memfd_secret": 447,
                     "landlock_add_rule": 445, "landlock_create_ruleset": 444, "landlock_restrict_self": 446,
                     "epoll_pwait2": 441, "quotactl_fd": 443, "mount_setattr": 442, "process_madvise": 440}


class SeccompUnavailable(RuntimeError):
    pass


def _libseccomp():
    """pyseccomp (PyPI, requirements.txt) or Debian's python3-seccomp: same API, both ctypes
    or C bindings over libseccomp2."""
    try:
        import pyseccomp as seccomp
    except ImportError:
        try:
            import seccomp
        except ImportError:
            raise SeccompUnavailable(
                "no libseccomp binding: install pyseccomp (pip install -r requirements.txt) or python3-seccomp"
            ) from None
    except RuntimeError as error:  # pyseccomp without libseccomp2 itself
        raise SeccompUnavailable(f"{error} (apt-get install libseccomp2)") from None
    return seccomp


def build_bpf() -> bytes:
    """rules() compiled to BPF for the native architecture (x86-64): a call of another ABI is
    killed by libseccomp's architecture check."""
    seccomp = _libseccomp()
    flt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(DEFAULT_ERRNO))
    try:  # a binary search over ~350 calls instead of a linear scan on every system call
        flt.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except (AttributeError, OSError, ValueError, RuntimeError):
        pass  # libseccomp < 2.5: the same filter, scanned in order
    ops = {"eq": seccomp.EQ, "gt": seccomp.GT, "masked_eq": seccomp.MASKED_EQ}

    def arg(index, op, value, mask):
        if op == "masked_eq":
            return seccomp.Arg(index, ops[op], mask, value)
        return seccomp.Arg(index, ops[op], value)

    for action, err, name, args in effective_rules():
        _add_rule(flt, seccomp.ALLOW if action == ALLOW else seccomp.ERRNO(err), name, [arg(*a) for a in args])
    return _export(flt)


def _add_rule(flt, verdict, name: str, conditions: list) -> None:
    try:
        flt.add_rule(verdict, name, *conditions)
    except (ValueError, RuntimeError):  # a call this libseccomp does not know by name
        if name in _FALLBACK_NUMBERS:
            flt.add_rule(verdict, _FALLBACK_NUMBERS[name], *conditions)


def _export(flt) -> bytes:
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


# -- the fork-server template's own filter (executor/forkserver) -------------------------------
# The template keeps CAP_SETUID and CAP_SETGID (and nothing else), so that each child can
# become its sandbox's own host uid before it makes its user namespace: the kernel charges a
# user namespace's per-user counters (inotify instances, message queues, processes) to the uid
# that created it, so children of one uid would share them. This filter, inherited by every
# child before the sandbox's own, bounds that: the uid and gid calls take only ids of the warm
# sandboxes' range (each argument compared in full, so upper bits cannot smuggle in a 0),
# supplementary groups cannot be set, and the escape calls of DENIED stay refused, but for
# those a child needs to build its sandbox (namespaces, mounts, pivot_root, hostname).
CHILD_SETUP_CALLS = {"mount", "umount2", "pivot_root", "move_mount", "unshare", "sethostname"}
ID_CALLS = {"setuid": 1, "setgid": 1, "setfsuid": 1, "setfsgid": 1, "setreuid": 2, "setregid": 2, "setresuid": 3, "setresgid": 3}


def build_template_bpf(id_low: int, id_high: int) -> bytes:
    """(A program under it cannot set even its own uid again, a no-op a cold run allows: one
    argument cannot be compared twice in one libseccomp rule, so there is no "below the range
    but not the program's own id".)"""
    seccomp = _libseccomp()
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    refused = seccomp.ERRNO(errno.EPERM)
    for name in [*(call for call in DENIED if call not in CHILD_SETUP_CALLS), "setgroups"]:
        _add_rule(flt, refused, name, [])
    for name, count in ID_CALLS.items():
        for index in range(count):
            _add_rule(flt, refused, name, [seccomp.Arg(index, seccomp.LT, id_low)])
            _add_rule(flt, refused, name, [seccomp.Arg(index, seccomp.GT, id_high)])
    return _export(flt)
