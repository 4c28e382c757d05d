"""The buffering front: nginx between the clients and the gunicorn workers.

gthread workers read a request head with no deadline, one thread per connection: 64 clients
that send half a head and then nothing made the server answer nobody. nginx reads every head
and body itself, event-driven (a slow client costs it a few KiB, never a thread), drops clients
that are too slow (a head within SANDBOX_FRONT_HEADER_TIMEOUT_S, no pause in a body longer than
SANDBOX_FRONT_BODY_TIMEOUT_S), and hands the workers only complete requests over a unix
socket. It also answers what it refuses itself (a malformed head, a URI or header too long, a
body over the limit, read and discarded so the client sees the answer) with the same small JSON
bodies as the API.

The workers listen only on that socket, in a directory that only root and nginx's unprivileged
workers (www-data) can enter, so every request they see came through nginx, and the client
address is the X-Real-IP header nginx sets (FrontProxyMiddleware).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
from pathlib import Path

from django.conf import settings

NGINX_USER = "www-data"

# What nginx answers itself (the body of each is what the API's own errors look like).
FRONT_ERRORS = {
    400: ("bad_request", "Malformed HTTP request"),
    408: ("request_timeout", "The request did not arrive in time"),
    413: ("payload_too_large", "The request body is larger than this server accepts (SANDBOX_MAX_UPLOAD_MB)"),
    414: ("uri_too_long", "The request URI is too long"),
    431: ("request_header_fields_too_large", "The request headers are too large"),
    494: ("request_header_fields_too_large", "The request headers are too large"),
    501: ("bad_request", "The request uses an HTTP feature this server does not take (e.g. a transfer encoding)"),
    505: ("bad_request", "The request's HTTP version is not supported"),
    # nginx's own 500: it could not buffer the body (its temporary files live on the data volume).
    500: ("insufficient_storage", "The server could not store the request body; its disk may be full"),
    502: ("service_unavailable", "The application server is not answering; retry shortly"),
    503: ("service_unavailable", "The server is overloaded; retry shortly"),
    504: ("service_unavailable", "The application server did not answer in time; retry shortly"),
}
# nginx's internal 500 means its temporary files failed; the API calls that 507.
# What a client did wrong is a 4xx, whatever nginx's own code for it.
FRONT_STATUS = {494: 431, 500: 507, 501: 400, 502: 503, 504: 503, 505: 400}


def enabled() -> bool:
    return settings.SANDBOX_FRONT == "nginx"


def folder() -> Path:
    """nginx's own directory: the workers' socket, its temporary files, its pid file."""
    return settings.SANDBOX_DATA_DIR / "front"


def app_socket() -> Path:
    return folder() / "app.sock"


def nginx_binary() -> str | None:
    return shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")


def request_timeout_s() -> int:
    """How long nginx waits for the workers' answer: the longest an /exec can take (queue,
    compile, run, copying files) with room to spare."""
    longest_ms = (settings.SANDBOX_QUEUE_TIMEOUT_MS + settings.SANDBOX_COMPILE_TIMEOUT_MS + settings.SANDBOX_TIMEOUT_MS
                  + settings.SANDBOX_LEASE_MARGIN_MS)
    return int(longest_ms / 1000) + 60


def _listen(host: str, port: int) -> str:
    if ":" in host:  # IPv6
        return f"[{host}]:{port}" + (" ipv6only=off" if host == "::" else "")
    return f"{host}:{port}"


def _json_error(status: int) -> str:
    code, message = FRONT_ERRORS[status]
    body = json.dumps({"error": code, "message": message}).replace("'", "\\'")
    shown = FRONT_STATUS.get(status, status)
    return (f"        location = /.front-error/{status} {{\n            internal;\n            default_type application/json;\n"
            f"            return {shown} '{body}';\n        }}\n")


PROXY = """            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_read_timeout {timeout}s;
            proxy_send_timeout {timeout}s;
"""


def render() -> str:
    """nginx.conf for this server's settings."""
    base = folder()
    # Each route's own limit, so that nginx answers the 413 itself (it reads and discards the
    # rest of the body, and the client reads the answer) instead of handing the workers a body
    # they refuse half-way (their early answer broke nginx's write: a 502).
    upload_mb = settings.SANDBOX_MAX_UPLOAD_MB + 1  # multipart framing
    json_mb = settings.SANDBOX_MAX_JSON_MB
    temp = "\n".join(f"    {kind}_temp_path {base / 'tmp' / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = f"user {NGINX_USER} {NGINX_USER};\n" if os.geteuid() == 0 else ""
    error_pages = "".join(f"        error_page {status} ={FRONT_STATUS.get(status, status)} /.front-error/{status};\n"
                          for status in FRONT_ERRORS)
    error_locations = "".join(_json_error(status) for status in FRONT_ERRORS)
    timeout = request_timeout_s()
    proxy = PROXY.format(timeout=timeout)
    return f"""# Made by sandbox_project/front.py at start-up; edits are overwritten.
{user}worker_processes 1;
pid {base / 'nginx.pid'};
error_log stderr error;
daemon off;
events {{
    worker_connections {settings.SANDBOX_FRONT_MAX_CONNECTIONS};
}}
http {{
    access_log off;
    server_tokens off;
{temp}
    # Slow clients are dropped, never waited for by a worker.
    client_header_timeout {settings.SANDBOX_FRONT_HEADER_TIMEOUT_S}s;
    client_body_timeout {settings.SANDBOX_FRONT_BODY_TIMEOUT_S}s;
    send_timeout {settings.SANDBOX_FRONT_BODY_TIMEOUT_S}s;
    keepalive_timeout 65s;
    client_header_buffer_size 4k;
    large_client_header_buffers 8 16k;
    client_max_body_size {json_mb}m;
    client_body_buffer_size 64k;
    # A body over the limit is read and thrown away (for this long at most), so the client
    # gets to read the 413 instead of a broken pipe.
    lingering_time 60s;
    lingering_timeout 10s;
    upstream app {{
        server unix:{app_socket()};
        keepalive 32;
    }}
    server {{
        listen {_listen(settings.SANDBOX_HOST, settings.SANDBOX_PORT)} backlog=1024;
{error_pages}        location ~ ^(/v1)?/upload(/batch)?/?$ {{
            client_max_body_size {upload_mb}m;
{proxy}        }}
        location / {{
{proxy}        }}
{error_locations}    }}
}}
"""


def prepare() -> list[str]:
    """Writes the config and makes nginx's folders; returns the command that runs nginx in
    the foreground. The folder is entered by nginx's workers, so the data dir around it may be
    traversed (0711: nothing in it can be listed, and everything in it is 0700 or 0600)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/setup.sh installs it), or set SANDBOX_FRONT=none")
    base = folder()
    for path in (base, *(base / "tmp" / kind for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
    if os.geteuid() == 0:
        worker = pwd.getpwnam(NGINX_USER)
        for path in [base, *(base / "tmp").rglob("*"), base / "tmp"]:
            os.chown(path, worker.pw_uid, worker.pw_gid)
        settings.SANDBOX_DATA_DIR.chmod(0o711)
    config = base.parent / "nginx.conf"  # root's alone (0600): nginx reads it as root
    config.write_text(render())
    return [binary, "-e", "stderr", "-c", str(config)]
