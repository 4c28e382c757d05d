"""The execution backend chosen by SANDBOX_BACKEND, one instance per process."""

from __future__ import annotations

import threading

from django.conf import settings

_backend = None
_lock = threading.Lock()


def get_backend():
    global _backend
    if _backend is None:
        with _lock:
            if _backend is None:
                if settings.SANDBOX_BACKEND == "docker":
                    from .docker import DockerBackend

                    _backend = DockerBackend()
                elif settings.SANDBOX_BACKEND == "bwrap":
                    from .bwrap import BwrapBackend

                    _backend = BwrapBackend()
    return _backend
