#!/usr/bin/env bash
# Installs what is missing and starts the server with the embedded defaults: SQLite, files on
# local disk, JSON log audit, the admin at /admin. Settings come from the environment or .env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/common.sh
scripts/setup.sh

# No credential configured at all: make one, keep it, and show it (once per start).
if [ -z "${SANDBOX_API_KEY:-}${LIBRECHAT_CODE_API_KEY:-}${SANDBOX_JWT_PUBLIC_KEY:-}${SANDBOX_JWT_PUBLIC_KEY_FILE:-}${SANDBOX_JWT_JWKS_FILE:-}" ] \
   && ! grep -qsE '^(SANDBOX_API_KEY|LIBRECHAT_CODE_API_KEY|SANDBOX_JWT_[A-Z_]+)=.' .env \
   && [ "${SANDBOX_AUTH_OPEN:-false}" != true ]; then
  keyfile="${SANDBOX_DATA_DIR:-var}/api-key"
  mkdir -p "$(dirname "$keyfile")"
  if [ ! -s "$keyfile" ]; then
    (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))' >"$keyfile")
  fi
  export SANDBOX_API_KEY="$(cat "$keyfile")"
  say "API key (kept in $keyfile): $SANDBOX_API_KEY"
  say "LibreChat .env: LIBRECHAT_CODE_BASEURL=http://<this host>:${SANDBOX_PORT:-3081}/v1 and LIBRECHAT_CODE_API_KEY=<the key>"
fi

say "serving on ${SANDBOX_HOST:-127.0.0.1}:${SANDBOX_PORT:-3081}"
exec .venv/bin/python -m sandbox_project.serve
