#!/bin/sh
# The server container's start: check that the data dir is what compose.yml promises, make
# an API key when no credential is configured (as scripts/start.sh does), migrate, serve.
set -eu
data="${SANDBOX_DATA_DIR:?SANDBOX_DATA_DIR must be set (compose.yml sets it)}"
say() { printf '[entrypoint] %s\n' "$*" >&2; }

if [ "${SANDBOX_BACKEND:-docker}" = docker ]; then
  # The Docker engine resolves the bind sources of every sandbox on the host, so the data dir
  # must have the same path here and there, and the tmpfs the server mounts per execution
  # must propagate to the host: a bind of the volume's host path, rshared.
  [ -S /var/run/docker.sock ] || [ -n "${DOCKER_HOST:-}" ] || { say "no Docker socket at /var/run/docker.sock"; exit 1; }
  if [ -d /var/lib/codeinterp/volume ]; then
    if [ "$(stat -c %d:%i "$data")" != "$(stat -c %d:%i /var/lib/codeinterp/volume)" ]; then
      say "$data is not the named volume mounted at /var/lib/codeinterp/volume: set SANDBOX_DOCKER_ROOT to the engine's data root (docker info -f '{{.DockerRootDir}}')"
      exit 1
    fi
  fi
  propagation="$(findmnt -n -o PROPAGATION --target "$data" 2>/dev/null || true)"
  case "$propagation" in
    shared*) ;;
    *) say "$data is mounted '$propagation', not shared: the per-execution tmpfs would not reach the engine"; exit 1 ;;
  esac
fi

if [ -z "${SANDBOX_API_KEY:-}${LIBRECHAT_CODE_API_KEY:-}${SANDBOX_JWT_PUBLIC_KEY:-}${SANDBOX_JWT_PUBLIC_KEY_FILE:-}${SANDBOX_JWT_JWKS_FILE:-}" ] \
   && [ "${SANDBOX_AUTH_OPEN:-false}" != true ]; then
  keyfile="$data/api-key"
  if [ ! -s "$keyfile" ]; then
    (umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$keyfile")
  fi
  SANDBOX_API_KEY="$(cat "$keyfile")"; export SANDBOX_API_KEY
  say "no credential configured: API key kept in the volume ($keyfile): $SANDBOX_API_KEY"
fi

python3 manage.py migrate --noinput -v0
python3 manage.py collectstatic --noinput -v0
exec "$@"
