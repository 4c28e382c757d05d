"""Reads and validates every environment variable the server understands.

One place for every knob: settings.py turns this into Django settings, the docs
(docs/CONFIGURATION.md) list the same names. An invalid value stops start-up with a message
that names the variable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

LOG_LEVELS = ("error", "warn", "info", "debug", "verbose")
RUNTIMES = ("runc", "runsc")
BACKENDS = ("docker", "bwrap")


def _fail(name: str, wanted: str, raw: object) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name} must be {wanted}, got {raw!r}")


def integer(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise _fail(name, "an integer", raw) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise _fail(name, f"an integer {bound}", raw)
    return value


def number(name: str, default: float, minimum: float) -> float:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise _fail(name, "a number", raw) from None
    if value < minimum:
        raise _fail(name, f"a number >= {minimum}", raw)
    return value


def boolean(name: str, default: bool) -> bool:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _fail(name, "true or false", raw)


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise _fail(name, "one of " + ", ".join(choices), raw)
    return value


def text(name: str, default: str = "") -> str:
    raw = env.str(name, default=None)
    return default if raw is None else raw.strip()


def persistent_secret(path: Path) -> str:
    """A random secret kept in a 0600 file, made on first use (Django's signing key)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        return value


def pool_sizes(name: str, default: str) -> dict[str, int]:
    """`py:2,js:1` -> {"py": 2, "js": 1}; empty or `off` -> {}."""
    raw = text(name, default)
    if raw.lower() in ("", "off", "0", "none"):
        return {}
    sizes: dict[str, int] = {}
    for item in raw.split(","):
        lang, _, count = item.strip().partition(":")
        try:
            sizes[lang.strip().lower()] = int(count)
        except ValueError:
            raise _fail(name, "a list like 'py:2,js:1'", raw) from None
        if sizes[lang.strip().lower()] < 0:
            raise _fail(name, "a list like 'py:2,js:1' with counts >= 0", raw)
    return {lang: n for lang, n in sizes.items() if n > 0}


WILDCARDS = ("0.0.0.0", "::", "")


def local_host_names(bound: str) -> list[str]:
    """The host names a request to this server may carry by default: the address it is bound
    to, localhost, and (bound to every address) the machine's names and addresses. A name a
    web page chose (DNS rebinding) is none of these."""
    import socket

    names = {"localhost", "127.0.0.1", "[::1]"}
    if bound not in WILDCARDS:
        names.add(f"[{bound}]" if ":" in bound else bound)
        return sorted(names)
    names.update(n for n in (socket.gethostname(), socket.getfqdn()) if n)
    try:  # the IPv4 addresses of this host's interfaces ("/32 host LOCAL" in the routing trie)
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for previous, line in zip(lines, lines[1:]):
            if "/32 host LOCAL" in line:
                names.add(previous.split()[-1])
    except OSError:
        pass
    try:  # and the IPv6 ones
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            names.add("[" + socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)) + "]")
    except (OSError, ValueError):
        pass
    return sorted(names)
