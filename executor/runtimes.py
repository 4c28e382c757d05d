"""Languages and their versions, read from the executor image once per process."""

from __future__ import annotations

import logging
import shlex
import threading

from .languages import LANGUAGES

log = logging.getLogger("sandbox.runtimes")
_versions: dict[str, str] | None = None
_lock = threading.Lock()


def probe_versions() -> dict[str, str]:
    """Runs every row's version probe in one container (first line of each answer)."""
    from .backends import get_backend

    script = "; ".join(
        f"printf '%s\\t' {lang.key}; ({shlex.join(lang.version)}) 2>&1 | grep -m1 . || echo unknown" for lang in LANGUAGES
    )
    out = get_backend().probe(["sh", "-c", script])
    versions = {}
    for line in out.splitlines():
        key, _, text = line.partition("\t")
        versions[key] = text.strip()
    return versions


def versions() -> dict[str, str]:
    global _versions
    with _lock:
        if _versions is None:
            try:
                _versions = probe_versions()
            except Exception as error:  # the engine may be down; say so and retry next time
                log.warning("version probe failed", extra={"error": str(error)[:300]})
                return {}
    return _versions


def describe() -> list[dict]:
    found = versions()
    return [
        {"language": lang.key, "aliases": list(lang.aliases), "version": found.get(lang.key, "unknown"),
         "compiled": bool(lang.compile), "source": lang.source}
        for lang in LANGUAGES
    ]
