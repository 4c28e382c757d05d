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
