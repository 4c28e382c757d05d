"""What a client-supplied file name or user id may be before it touches the disk."""

from __future__ import annotations

import hashlib
import re

MAX_NAME_LENGTH = 256
MAX_DEPTH = 10
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}$")


class InvalidName(ValueError):
    pass


def check_relative_name(name: object, max_depth: int = MAX_DEPTH) -> str:
    """A relative path under /mnt/data: the official service's rules (spec §E1).

    Non-empty, at most 256 characters, relative, no backslash, NUL or other control
    character, no empty, `.` or `..` segment, at most `max_depth` segments.
    """
    if not isinstance(name, str) or name == "":
        raise InvalidName("file name must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"file name is longer than {MAX_NAME_LENGTH} characters")
    if "\\" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidName("file name must not contain backslashes or control characters")
    if name.startswith("/"):
        raise InvalidName("file name must be relative")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidName("file name must not contain empty, '.' or '..' segments")
    if len(parts) > max_depth:
        raise InvalidName(f"file name is nested deeper than {max_depth} levels")
    return name


def extension_of(name: str) -> str:
    """The stored object's extension ('.csv'), or '' when the name has no plain one."""
    base = name.rsplit("/", 1)[-1]
    dot = base.rfind(".")
    if dot <= 0:
        return ""
    ext = base[dot:]
    return ext.lower() if _EXTENSION.match(ext) else ""


def user_dir(user_id: str | None) -> str:
    """The directory name for a user id: the id itself when it is plainly safe, else a hash."""
    if not user_id:
        return "anonymous"
    if _SAFE_USER.match(user_id) and user_id not in (".", ".."):
        return user_id
    return "u_" + hashlib.sha256(user_id.encode()).hexdigest()[:32]
