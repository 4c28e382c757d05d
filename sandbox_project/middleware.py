"""Request-path normalisation for the Code API.

Clients build URLs as `<base>/<route>`: LibreChat concatenates verbatim (a base ending in `/`
gives `//upload`), operators put `/v1` in the base or not. Every API route is therefore
served with and without the `/v1` prefix, with duplicate slashes collapsed and a trailing
slash ignored. The admin keeps Django's own trailing-slash URLs.
"""

import re

_SLASHES = re.compile(r"/{2,}")
_KEEP_AS_IS = ("/admin", "/static")


def normalize_api_path(path: str) -> str:
    path = _SLASHES.sub("/", path)
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:] or "/"
    if path.startswith(_KEEP_AS_IS):
        return path
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    return path


class NormalizePathMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.path_info = normalize_api_path(request.path_info)
        return self.get_response(request)
