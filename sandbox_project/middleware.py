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


class FrontProxyMiddleware:
    """The client's address, as the nginx front saw it. With the front on, the workers listen
    only on a unix socket that nginx alone reaches, and nginx overwrites X-Real-IP with the
    peer address, so the header is trustworthy there; with SANDBOX_FRONT=none it is ignored
    (a client could set it to anything)."""

    def __init__(self, get_response):
        from django.conf import settings

        self.trust = settings.SANDBOX_FRONT == "nginx"
        self.get_response = get_response

    def __call__(self, request):
        if self.trust:
            request.META["REMOTE_ADDR"] = request.META.get("HTTP_X_REAL_IP", "")[:64]
        return self.get_response(request)


class ForeignOriginMiddleware:
    """Refuses API requests that carry a foreign Origin header (403), in every auth mode.

    Browsers send Origin with cross-origin requests; the API's real clients (LibreChat's
    server, @librechat/agents) are not browsers and send none. A page elsewhere must not get
    to run code or read files through a user's browser, even with open auth on a private
    network. The admin keeps Django's own CSRF checks. Also validates the Host header of every
    request (a foreign one is a 400)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.conf import settings
        from django.http import JsonResponse
        from django.http.request import split_domain_port, validate_host

        host = request.get_host()  # DisallowedHost (400) for a name this server does not have
        origin = request.META.get("HTTP_ORIGIN")
        if origin is not None and not request.path_info.startswith(_KEEP_AS_IS):
            scheme, _, rest = origin.partition("://")
            origin_host = rest.split("/", 1)[0]
            same = origin_host == host or validate_host(split_domain_port(origin_host)[0], settings.ALLOWED_HOSTS)
            trusted = origin in settings.CSRF_TRUSTED_ORIGINS
            if not (scheme in ("http", "https") and origin_host and (same or trusted)):
                return JsonResponse({"error": "forbidden_origin", "message": "Requests from web pages of other sites are refused"},
                                    status=403)
        return self.get_response(request)


PROFILES = ("default", "stateful")


class ExecutionProfileMiddleware:
    """Execution profiles, as LibreChat >= v0.8.6 asks for them: every answer says which
    profile served it (X-CodeAPI-Execution-Profile); a request that expects a profile this
    server does not offer is refused with 409 execution_profile_mismatch, never run in another
    one. The stateful server (SANDBOX_STATEFUL) also serves requests that expect "default",
    as the default profile (hints ignored)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.conf import settings
        from django.http import JsonResponse

        offered = "stateful" if settings.SANDBOX_STATEFUL else "default"
        expected = request.headers.get("X-CodeAPI-Expected-Profile")
        served = offered
        refusal = None
        if expected is not None and not request.path_info.startswith(_KEEP_AS_IS):
            wanted = expected.strip().lower()
            body = {"expected_profile": expected[:64], "actual_profile": offered}
            if wanted not in PROFILES:
                refusal = JsonResponse({"error": "invalid_execution_profile", "message": f"Invalid execution profile: {expected[:64]}",
                                        **body}, status=400)
            elif wanted == "stateful" and offered != "stateful":
                refusal = JsonResponse({"error": "execution_profile_mismatch",
                                        "message": f"Expected the {wanted} execution profile, but reached {offered}", **body}, status=409)
            else:
                served = wanted
        request.execution_profile = served
        response = refusal or self.get_response(request)
        response["X-CodeAPI-Execution-Profile"] = served
        return response
