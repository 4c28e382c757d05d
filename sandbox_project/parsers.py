"""The JSON request body parser of every API route: strict JSON, bounded in shape.

Python's json module accepts what JSON does not (NaN, Infinity), builds strings holding lone
surrogates (which cannot be written out as UTF-8 again), and recurses once per nesting level
(a body nested thousands deep raised RecursionError, a 500). Here each of those is a 400 that
says why, checked in one linear pass over the parsed value before any view sees it.
"""

from __future__ import annotations

import json
import re

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# Deeper than any body a client sends (files[] refs are three levels down).
MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def check_shape(value, max_depth: int = MAX_DEPTH) -> None:
    """Raises ParseError for nesting deeper than max_depth or a string (or key) that is not
    valid Unicode. Iterative: the check itself cannot run out of stack."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ParseError("The request body holds a string that is not valid Unicode (a lone surrogate)")
        elif isinstance(item, (list, dict)):
            if depth > max_depth:
                raise ParseError(f"The request body is nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)


def loads(raw: bytes | str):
    """Strict json.loads with the checks above; ParseError on anything else."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ParseError(f"The request body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ParseError(f"The request body is not valid JSON: {str(error)[:200]}") from None
    check_shape(value)
    return value


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:  # Django's own check only knows the declared Content-Length
            from django.core.exceptions import RequestDataTooBig

            raise RequestDataTooBig("The request body is larger than SANDBOX_MAX_JSON_MB")
        return loads(raw)
