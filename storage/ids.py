"""Session and file ids: 21 characters of the nanoid alphabet, as every client expects."""

import re
import secrets

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
ID_LENGTH = 21
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{21}$")


def new_id() -> str:
    # 64 symbols: each byte's low 6 bits are uniform, so no modulo bias.
    return "".join(ALPHABET[b & 63] for b in secrets.token_bytes(ID_LENGTH))


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(ID_PATTERN.match(value))
