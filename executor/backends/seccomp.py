"""The seccomp profile every container gets (Docker's JSON format; runsc loads it with
--oci-seccomp). The syscall list is the one measured in research/isolation.md §4.

Docker's built-in profile still allows ptrace, and none of the profiles forbid setuid bits;
this one denies what an untrusted program has no use for: tracing other processes, mounting,
namespaces, kernel keyrings, BPF, perf, module loading, clock setting, io_uring, and
setuid/setgid bits on files. Everything else is allowed; capabilities are all dropped anyway.
"""

import errno
import json
import tempfile

DENIED = """
ptrace process_vm_readv process_vm_writev kcmp mount umount umount2 pivot_root chroot mount_setattr
move_mount open_tree fsopen fsmount fsconfig fspick unshare setns kexec_load kexec_file_load
init_module finit_module delete_module create_module bpf perf_event_open userfaultfd keyctl add_key
request_key open_by_handle_at name_to_handle_at reboot swapon swapoff acct settimeofday clock_settime
clock_adjtime adjtimex syslog iopl ioperm quotactl lookup_dcookie vhangup personality uselib ustat
sysfs _sysctl nfsservctl vm86 vm86old fanotify_init io_uring_setup io_uring_enter io_uring_register
""".split()

# clone() flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
SETUID_BITS = (0o4000, 0o2000)
TIOCSTI = 0x5412


def _masked(index: int, bit: int) -> list[dict]:
    return [{"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}]


def _deny(names, args=None, err=errno.EPERM) -> dict:
    rule = {"names": list(names), "action": "SCMP_ACT_ERRNO", "errnoRet": err}
    if args:
        rule["args"] = args
    return rule


def build_profile() -> dict:
    rules = [_deny(DENIED)]
    rules += [_deny(["clone"], _masked(0, bit)) for bit in NAMESPACE_FLAGS]
    # clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes libc use clone.
    rules.append(_deny(["clone3"], err=errno.ENOSYS))
    rules.append(_deny(["ioctl"], [{"index": 1, "value": TIOCSTI, "op": "SCMP_CMP_EQ"}]))
    for bit in SETUID_BITS:
        rules.append(_deny(["chmod", "fchmod"], _masked(1, bit)))
        rules.append(_deny(["fchmodat", "fchmodat2"], _masked(2, bit)))
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    }


PROFILE_JSON = json.dumps(build_profile(), separators=(",", ":"))


# -- the same rules as a BPF program (bwrap --seccomp FD) -------------------------------------
# fchmodat2 (Linux 6.6) is unknown to older libseccomp releases; its number on x86_64.
_FALLBACK_NUMBERS = {"fchmodat2": 452}


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
    """DENIED, NAMESPACE_FLAGS, SETUID_BITS and TIOCSTI compiled to BPF for the native
    architecture. Unlike the JSON profile no 32-bit ABI is admitted: libseccomp kills a
    syscall of a foreign architecture (nothing in the sandbox needs one)."""
    seccomp = _libseccomp()
    flt = seccomp.SyscallFilter(defaction=seccomp.ALLOW)

    def deny(name, *args, err=errno.EPERM):
        try:
            flt.add_rule(seccomp.ERRNO(err), name, *args)
        except (ValueError, RuntimeError):  # not a syscall of this architecture (vm86, umount, create_module...)
            if name in _FALLBACK_NUMBERS:
                flt.add_rule(seccomp.ERRNO(err), _FALLBACK_NUMBERS[name], *args)

    masked = seccomp.MASKED_EQ
    for name in DENIED:
        deny(name)
    for bit in NAMESPACE_FLAGS:
        deny("clone", seccomp.Arg(0, masked, bit, bit))
    deny("clone3", err=errno.ENOSYS)
    # ioctl's request is an unsigned int: compare the low 32 bits only, like the kernel does.
    deny("ioctl", seccomp.Arg(1, masked, 0xFFFFFFFF, TIOCSTI))
    for bit in SETUID_BITS:
        deny("chmod", seccomp.Arg(1, masked, bit, bit))
        deny("fchmod", seccomp.Arg(1, masked, bit, bit))
        deny("fchmodat", seccomp.Arg(2, masked, bit, bit))
        deny("fchmodat2", seccomp.Arg(2, masked, bit, bit))
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()
