"""Django settings. Every environment variable is read here, through sandbox_project.config."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import config as c
from .logging_config import build_logging

BASE_DIR = Path(__file__).resolve().parent.parent
if (BASE_DIR / ".env").is_file():
    c.env.read_env(BASE_DIR / ".env")  # real environment variables win

# --- where things live -------------------------------------------------------------------
# Everything the server writes is its own: users' uploads and outputs, the database, keys.
# No other account on the host reads them (directories 0700, files 0600); the few things a
# sandbox must read (its source file, its work dir) get their modes explicitly.
os.umask(0o077)
SANDBOX_PORT = c.integer("SANDBOX_PORT", 3081, 1, 65535)
SANDBOX_HOST = c.text("SANDBOX_HOST", "127.0.0.1")
SANDBOX_DATA_DIR = (BASE_DIR / c.text("SANDBOX_DATA_DIR", "./var")).resolve()
# A relative storage path is taken inside the data dir, so the seed's default `./storage`
# lands in ./var/storage: user files never mix with the source tree (or the `storage` app).
SANDBOX_STORAGE_PATH = (SANDBOX_DATA_DIR / c.text("SANDBOX_STORAGE_PATH", "./storage")).resolve()
(SANDBOX_STORAGE_PATH / ".incoming").mkdir(parents=True, exist_ok=True, mode=0o700)
# (also for folders an older version made). The data dir may be traversed by nginx's workers to
# reach their own folder in it (sandbox_project/front.py): never read or written by others.
if SANDBOX_STORAGE_PATH.stat().st_uid == os.getuid():
    SANDBOX_STORAGE_PATH.chmod(0o700)
if SANDBOX_DATA_DIR.stat().st_uid == os.getuid():
    SANDBOX_DATA_DIR.chmod(SANDBOX_DATA_DIR.stat().st_mode & 0o711)

# --- auth ---------------------------------------------------------------------------------
# The seed's two names for the shared key; SANDBOX_API_KEY wins when both are set.
SANDBOX_API_KEY = c.text("SANDBOX_API_KEY") or c.text("LIBRECHAT_CODE_API_KEY")
SANDBOX_AUTH_OPEN = c.boolean("SANDBOX_AUTH_OPEN", False)
SANDBOX_JWT_PUBLIC_KEY = c.text("SANDBOX_JWT_PUBLIC_KEY")
SANDBOX_JWT_PUBLIC_KEY_FILE = c.text("SANDBOX_JWT_PUBLIC_KEY_FILE")
SANDBOX_JWT_JWKS_FILE = c.text("SANDBOX_JWT_JWKS_FILE")
SANDBOX_JWT_ISSUER = c.text("SANDBOX_JWT_ISSUER", "librechat")
SANDBOX_JWT_AUDIENCE = c.text("SANDBOX_JWT_AUDIENCE", "codeapi")
for _name in ("SANDBOX_JWT_PUBLIC_KEY_FILE", "SANDBOX_JWT_JWKS_FILE"):
    if globals()[_name] and not Path(globals()[_name]).is_file():
        raise c.ImproperlyConfigured(f"{_name} must name a readable file, got {globals()[_name]!r}")

# --- execution ----------------------------------------------------------------------------
SANDBOX_BACKEND = c.choice("SANDBOX_BACKEND", "docker", c.BACKENDS)
SANDBOX_DOCKER_IMAGE = c.text("SANDBOX_DOCKER_IMAGE", "librechat/sandbox-executor:latest")
SANDBOX_DOCKER_RUNTIME = c.choice("SANDBOX_DOCKER_RUNTIME", "runc", c.RUNTIMES)
SANDBOX_DOCKER_HOST = c.text("SANDBOX_DOCKER_HOST") or c.text("DOCKER_HOST")
SANDBOX_BWRAP_ROOTFS = c.text("SANDBOX_BWRAP_ROOTFS", "/var/lib/codeinterp/rootfs")
# Host uids of the sandboxes (executor/backends/base.py): one per slot, one per warm sandbox.
# SANDBOX_BWRAP_UID_BASE is the older name, from when only bwrap had per-slot uids.
SANDBOX_UID_BASE = c.integer("SANDBOX_UID_BASE", c.integer("SANDBOX_BWRAP_UID_BASE", 200000, 1000, 4_000_000_000),
                             1000, 4_000_000_000)
SANDBOX_TIMEOUT_MS = c.integer("SANDBOX_TIMEOUT_MS", 30000, 100, 3_600_000)
SANDBOX_COMPILE_TIMEOUT_MS = c.integer("SANDBOX_COMPILE_TIMEOUT_MS", 30000, 100, 3_600_000)
SANDBOX_MEMORY_MB = c.integer("SANDBOX_MEMORY_MB", 512, 32, 1_048_576)
SANDBOX_PIDS_LIMIT = c.integer("SANDBOX_PIDS_LIMIT", 128, 8, 1_000_000)
SANDBOX_CPUS = c.number("SANDBOX_CPUS", 1.0, 0.01)
SANDBOX_OUTPUT_MAX_BYTES = c.integer("SANDBOX_OUTPUT_MAX_BYTES", 1 << 20, 1024)
SANDBOX_DISK_MB = c.integer("SANDBOX_DISK_MB", 256, 1)
SANDBOX_TMP_MB = c.integer("SANDBOX_TMP_MB", 128, 1)
SANDBOX_NOFILE = c.integer("SANDBOX_NOFILE", 1024, 64, 1_048_576)
SANDBOX_MAX_CONCURRENT_EXECUTIONS = c.integer("SANDBOX_MAX_CONCURRENT_EXECUTIONS", 5, 1, 1000)
# 20 waiting beside 5 running: a team's 16 clients calling back to back all wait rather than
# get 429s, and of the 32 request threads (SANDBOX_WORKERS x SANDBOX_THREADS) at least 7 stay
# free for /health, files and downloads (a waiting /exec holds a thread).
SANDBOX_MAX_QUEUE = c.integer("SANDBOX_MAX_QUEUE", 20, 0, 10000)
SANDBOX_QUEUE_TIMEOUT_MS = c.integer("SANDBOX_QUEUE_TIMEOUT_MS", 30000, 0, 3_600_000)
# How long a slot lease outlives the run's own time budget (copying files in and out).
# A worker killed mid-run gives its slot back when the lease runs out.
SANDBOX_LEASE_MARGIN_MS = c.integer("SANDBOX_LEASE_MARGIN_MS", 30000, 1000)
# bwrap only, experimental: warm sandboxes are forks of a template with the heavy modules
# imported (executor/forkserver), tens of ms of CPU each instead of about a second; the pool
# then refills without waiting for a pause. Python runs in the fork; other languages are
# exec'd by it once it is confined.
SANDBOX_FORKSERVER = c.boolean("SANDBOX_FORKSERVER", False)
# Warm sandboxes started ahead of time, per language (executor/pool.py); "off" for none. With
# the fork-server a warm sandbox is cheap enough for the interpreted languages too.
SANDBOX_POOL = c.pool_sizes("SANDBOX_POOL", "py:2,js:2,ts:2,bash:2" if SANDBOX_FORKSERVER and SANDBOX_BACKEND == "bwrap" else "py:2")
SANDBOX_POOL_MAX_AGE_S = c.integer("SANDBOX_POOL_MAX_AGE_S", 600, 10)
# The pool refills only in a pause: no execution ended for this long, none still running started
# in the last 5 s or this long (executor/pool.py, refill_allowed).
SANDBOX_POOL_REFILL_QUIET_MS = c.integer("SANDBOX_POOL_REFILL_QUIET_MS", 500, 0, 600_000)
SANDBOX_WORKERS = c.integer("SANDBOX_WORKERS", 2, 1, 64)
SANDBOX_THREADS = c.integer("SANDBOX_THREADS", 16, 1, 256)
# The buffering front (sandbox_project/front.py): nginx faces the clients, the workers only
# ever see complete requests. "none": gunicorn listens on SANDBOX_HOST itself (behind a proxy
# of your own that buffers requests; slow clients can tie up its threads otherwise).
SANDBOX_FRONT = c.choice("SANDBOX_FRONT", "nginx", ("nginx", "none"))
SANDBOX_FRONT_HEADER_TIMEOUT_S = c.integer("SANDBOX_FRONT_HEADER_TIMEOUT_S", 10, 1, 3600)
SANDBOX_FRONT_BODY_TIMEOUT_S = c.integer("SANDBOX_FRONT_BODY_TIMEOUT_S", 30, 1, 3600)
SANDBOX_FRONT_MAX_CONNECTIONS = c.integer("SANDBOX_FRONT_MAX_CONNECTIONS", 4096, 64, 1_000_000)
# SIGTERM (sandbox_project/drain.py): how long /health says "draining" while everything is
# still served, before the front stops accepting: the time a load balancer needs to notice.
SANDBOX_DRAIN_DELAY_S = c.integer("SANDBOX_DRAIN_DELAY_S", 0, 0, 600)

# --- programmatic tool calling (programmatic/) -----------------------------------------------
# A run holds its slot while it waits for tool results: at most this many runs per user at once,
# and programmatic runs together at most SANDBOX_PTC_MAX_SLOTS slots (0: half of them).
SANDBOX_PTC_MAX_RUN_S = c.integer("SANDBOX_PTC_MAX_RUN_S", 600, 10, 86400)
SANDBOX_PTC_RUNS_PER_USER = c.integer("SANDBOX_PTC_RUNS_PER_USER", 2, 1, 1000)
SANDBOX_PTC_MAX_SLOTS = c.integer("SANDBOX_PTC_MAX_SLOTS", 0, 0, 1000)

# --- stateful workspaces (runtime_sessions) -----------------------------------------------
# The "stateful" execution profile: /mnt/data's files kept between executions with the same
# runtime_session_hint, per user. Off: the server is the "default" profile only, and answers
# a request that expects "stateful" with 409 execution_profile_mismatch.
SANDBOX_STATEFUL = c.boolean("SANDBOX_STATEFUL", False)
SANDBOX_RUNTIME_SESSION_IDLE_S = c.integer("SANDBOX_RUNTIME_SESSION_IDLE_S", 2100, 1)  # LibreChat's cold-after: 35 min
SANDBOX_RUNTIME_SESSION_WAIT_MS = c.integer("SANDBOX_RUNTIME_SESSION_WAIT_MS", 15000, 0, 600_000)

# --- files --------------------------------------------------------------------------------
SANDBOX_MAX_UPLOAD_MB = c.integer("SANDBOX_MAX_UPLOAD_MB", 150, 1)
SANDBOX_MAX_BATCH_FILES = c.integer("SANDBOX_MAX_BATCH_FILES", 200, 1)
SANDBOX_MAX_INPUT_FILES = c.integer("SANDBOX_MAX_INPUT_FILES", 256, 0)
SANDBOX_MAX_OUTPUT_FILES = c.integer("SANDBOX_MAX_OUTPUT_FILES", 50, 0)
SANDBOX_MAX_OUTPUT_FILE_MB = c.integer("SANDBOX_MAX_OUTPUT_FILE_MB", 10, 1)
SANDBOX_MAX_OUTPUT_DEPTH = c.integer("SANDBOX_MAX_OUTPUT_DEPTH", 10, 1, 64)
SANDBOX_FILE_TTL_HOURS = c.integer("SANDBOX_FILE_TTL_HOURS", 24, 1)
SANDBOX_MAX_JSON_MB = c.integer("SANDBOX_MAX_JSON_MB", 50, 1)

# Where stored files live (storage/backends.py): the local volume, or an S3-compatible bucket
# shared by every replica. Work areas, the warm pool and upload spooling stay on the local
# volume (SANDBOX_STORAGE_PATH) either way.
SANDBOX_STORAGE_BACKEND = c.choice("SANDBOX_STORAGE_BACKEND", "local", ("local", "s3"))
SANDBOX_S3_BUCKET = c.text("SANDBOX_S3_BUCKET")
SANDBOX_S3_ENDPOINT_URL = c.text("SANDBOX_S3_ENDPOINT_URL")  # empty: AWS itself
SANDBOX_S3_REGION = c.text("SANDBOX_S3_REGION", "us-east-1")
# Empty: boto3's own chain (AWS_ACCESS_KEY_ID..., a web identity, an instance role).
SANDBOX_S3_ACCESS_KEY_ID = c.text("SANDBOX_S3_ACCESS_KEY_ID")
SANDBOX_S3_SECRET_ACCESS_KEY = c.text("SANDBOX_S3_SECRET_ACCESS_KEY")
SANDBOX_S3_PREFIX = c.text("SANDBOX_S3_PREFIX").strip("/")
SANDBOX_S3_PREFIX = SANDBOX_S3_PREFIX + "/" if SANDBOX_S3_PREFIX else ""
SANDBOX_S3_ADDRESSING = c.choice("SANDBOX_S3_ADDRESSING", "path", ("path", "virtual", "auto"))
# Uploads larger than one part go up as multipart uploads, two parts in flight at most.
SANDBOX_S3_PART_MB = c.integer("SANDBOX_S3_PART_MB", 8, 5, 5120)
SANDBOX_S3_TIMEOUT_S = c.integer("SANDBOX_S3_TIMEOUT_S", 10, 1, 600)
if SANDBOX_STORAGE_BACKEND == "s3" and not SANDBOX_S3_BUCKET:
    raise c.ImproperlyConfigured("SANDBOX_STORAGE_BACKEND=s3 needs SANDBOX_S3_BUCKET")

# --- audit and logs -----------------------------------------------------------------------
MONGO_URI = c.text("MONGO_URI")
MONGO_MAX_POOL_SIZE = c.integer("MONGO_MAX_POOL_SIZE", 10, 1)
MONGO_MIN_POOL_SIZE = c.integer("MONGO_MIN_POOL_SIZE", 2, 0)
if MONGO_MIN_POOL_SIZE > MONGO_MAX_POOL_SIZE:
    raise c.ImproperlyConfigured("MONGO_MIN_POOL_SIZE must not exceed MONGO_MAX_POOL_SIZE")
SANDBOX_AUDIT_TTL_DAYS = c.integer("SANDBOX_AUDIT_TTL_DAYS", 0, 0)  # 0 = keep forever
# Refused credentials: one entry per address at once, the rest of each window as one summary
# entry (audit/events.py), so anonymous clients cannot grow the audit store without bound.
SANDBOX_AUTH_FAILURE_WINDOW_S = c.integer("SANDBOX_AUTH_FAILURE_WINDOW_S", 60, 1, 86400)
# GET /metrics: open (counts only, keep it off the public network), or only with the API key.
SANDBOX_METRICS_REQUIRE_KEY = c.boolean("SANDBOX_METRICS_REQUIRE_KEY", False)
SANDBOX_LOG_LEVEL = c.choice("SANDBOX_LOG_LEVEL", "info", c.LOG_LEVELS)
LOGGING = build_logging(SANDBOX_LOG_LEVEL)
# Prometheus multiprocess mode (one file per gunicorn worker, summed at scrape). Always set
# here, overriding the environment: each server (and each test server) has its own folder.
SANDBOX_METRICS_DIR = SANDBOX_DATA_DIR / "metrics"
SANDBOX_METRICS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(SANDBOX_METRICS_DIR)

# --- Django -------------------------------------------------------------------------------
SECRET_KEY = c.text("DJANGO_SECRET_KEY") or c.persistent_secret(SANDBOX_DATA_DIR / "django-secret-key")
DEBUG = c.boolean("DJANGO_DEBUG", False)
# This server's own names, plus those the operator adds (e.g. `sandbox` for Docker Compose). A
# Host header naming anything else is refused (400): DNS rebinding cannot reach the API.
ALLOWED_HOSTS = sorted({*c.local_host_names(SANDBOX_HOST),
                        *(h.strip() for h in c.text("DJANGO_ALLOWED_HOSTS").split(",") if h.strip())})
CSRF_TRUSTED_ORIGINS = [o.strip() for o in c.text("DJANGO_CSRF_TRUSTED_ORIGINS").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "storage",
    "executor",
    "runtime_sessions",
    "programmatic",
    "audit",
]

MIDDLEWARE = [
    "sandbox_project.timing.ServerTimingMiddleware",
    "sandbox_project.middleware.FrontProxyMiddleware",
    "sandbox_project.middleware.NormalizePathMiddleware",
    "sandbox_project.middleware.ForeignOriginMiddleware",
    "sandbox_project.middleware.ExecutionProfileMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
APPEND_SLASH = False  # the API is served with and without trailing slashes (middleware)

ROOT_URLCONF = "sandbox_project.urls"
WSGI_APPLICATION = "sandbox_project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": c.env.db_url("DATABASE_URL", default=f"sqlite:///{SANDBOX_DATA_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Several gunicorn workers write the slot table: wait for the lock instead of failing,
    # and use WAL so readers never block the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
# Each gunicorn thread keeps its connection (opening one, with the PRAGMAs above, cost about a
# millisecond per request on /exec's path); a connection that broke is replaced before use.
DATABASES["default"].update({"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The audit trail lives in MongoDB when MONGO_URI is set (only AuditLog goes there, through the
# "audit" alias and audit.routers), else in the default database. The database name comes from
# the URI's path; without one MongoDB drivers (and the seed's mongoose) use "test".
DATABASE_ROUTERS = ["audit.routers.AuditRouter"]
if MONGO_URI:
    _mongo_options = {"maxPoolSize": MONGO_MAX_POOL_SIZE, "minPoolSize": MONGO_MIN_POOL_SIZE, "appname": "codeinterp-sandbox"}
    for _option, _default in (("serverSelectionTimeoutMS", 3000), ("connectTimeoutMS", 3000), ("socketTimeoutMS", 10000)):
        if _option.lower() not in MONGO_URI.lower():  # a value in the URI wins
            _mongo_options[_option] = _default  # audit writes run in the background; fail fast anyway
    DATABASES["audit"] = {
        "ENGINE": "django_mongodb_backend",
        "HOST": MONGO_URI,
        "NAME": unquote(urlsplit(MONGO_URI).path.strip("/")) or "test",
        "OPTIONS": _mongo_options,
    }

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
STATIC_URL = "static/"
STATIC_ROOT = SANDBOX_DATA_DIR / "static"

# Uploads always stream to a temporary file on the storage volume (never whole in memory),
# so the final rename is atomic and on the same file system.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_TEMP_DIR = str(SANDBOX_STORAGE_PATH / ".incoming")
FILE_UPLOAD_HANDLERS = ["storage.uploads.CappedUploadHandler"]
DATA_UPLOAD_MAX_MEMORY_SIZE = SANDBOX_MAX_JSON_MB << 20
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
DATA_UPLOAD_MAX_NUMBER_FILES = SANDBOX_MAX_BATCH_FILES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["sandbox_project.auth.CodeApiAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["sandbox_project.auth.IsCodeApiClient"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "sandbox_project.parsers.StrictJSONParser",
        "storage.parsers.CodeApiMultiPartParser",
    ],
    "EXCEPTION_HANDLER": "sandbox_project.errors.json_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
