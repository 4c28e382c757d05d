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
                    import docker

                    from .base import SandboxUnavailable
                    from .docker import DockerBackend

                    try:  # the client asks the engine for its API version: it may be down now
                        _backend = DockerBackend()
                    except docker.errors.DockerException as error:
                        raise SandboxUnavailable(f"the Docker engine does not answer: {str(error)[:200]}") from None
                elif settings.SANDBOX_BACKEND == "bwrap":
                    from .bwrap import BwrapBackend

                    _backend = BwrapBackend()
    return _backend
