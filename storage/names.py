"""What a client-supplied file name or user id may be before it touches the disk."""

from __future__ import annotations

import hashlib
import re

MAX_NAME_LENGTH = 256
MAX_COMPONENT_BYTES = 255  # NAME_MAX of Linux file systems
MAX_DEPTH = 10
_EXTENSION = re.compile(r"^\.[A-Za-z0-9]{1,16}$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,63}$")


class InvalidName(ValueError):
    pass


def check_relative_name(name: object, max_depth: int = MAX_DEPTH) -> str:
    """A relative path under /mnt/data: the official service's rules (spec §E1).

    Non-empty, valid Unicode, at most 256 characters, relative, no backslash, NUL or other
    control character, no empty, `.` or `..` segment, no segment over 255 bytes, at most
    `max_depth` segments. The same rule applies to the names of files a program leaves
    behind, so a name the server hands out is always one it accepts back.
    """
    if not isinstance(name, str) or name == "":
        raise InvalidName("file name must be a non-empty string")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):  # undecodable bytes of a name on disk
        raise InvalidName("file name is not valid UTF-8")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"file name is longer than {MAX_NAME_LENGTH} characters")
    if "\\" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidName("file name must not contain backslashes or control characters")
    if name.startswith("/"):
        raise InvalidName("file name must be relative")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidName("file name must not contain empty, '.' or '..' segments")
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in parts):
        raise InvalidName(f"a segment of the file name is longer than {MAX_COMPONENT_BYTES} bytes")
    if len(parts) > max_depth:
        raise InvalidName(f"file name is nested deeper than {max_depth} levels")
    return name


def printable(name: str, limit: int = 300) -> str:
    """A name as it can be shown and logged: undecodable bytes and control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


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
