#!/usr/bin/env bash
# The compose stack, tested end to end: builds the images (docker/build-images.sh), brings
# docker/compose.yml up with a MongoDB-compatible audit store (SecantusDB on the host, as the
# audit tests use it: CI has no MongoDB itself), runs the API suite and the real
# @librechat/agents client and the escape suite (tests/api, tests/e2e,
# tests/security/test_escape.py) against the containerised server, then
# tests/compose (audit documents in the store and in the admin, files kept across down/up,
# the sandbox's confinement), and tears everything down. Extra arguments go to both pytest runs.
#   COMPOSE="docker compose"   the compose command (default: `docker compose` v2 when the
#                              plugin is there, else Debian's docker-compose 1.29)
#   SKIP_SETUP=1               do not run scripts/setup.sh --dev first
# The machine's tests may only talk to the loopback, so tests/compose/compose.test.yml puts
# the server in the host's network namespace on 127.0.0.1 (without compose.yml's published
# port, which the engine would forward to a bridge address); the rest is compose.yml's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/common.sh
[ -n "${SKIP_SETUP:-}" ] || scripts/setup.sh --dev
apt_install python3-yaml   # renders the compose file without its `ports` (below)
if [ -n "${COMPOSE:-}" ]; then read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then compose=(docker compose)
else apt_install docker-compose; compose=(docker-compose); fi
say "compose: $("${compose[@]}" version 2>/dev/null | head -n 1)"

started=$(date +%s)
docker/build-images.sh

work="$(mktemp -d /var/tmp/codeinterp-compose.XXXXXX)"
project="codeinterp-compose-test-$$"
export SANDBOX_VOLUME="$project-data" SANDBOX_DOCKER_ROOT="$(docker info -f '{{.DockerRootDir}}')"
data_dir="$SANDBOX_DOCKER_ROOT/volumes/$SANDBOX_VOLUME/_data"
free_port() { .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mongo_port="$(free_port)"
export SANDBOX_PORT="$(free_port)"
# The settings the API suite expects of its server (tests/liveserver.py's BASE_ENV, its key).
eval "$(.venv/bin/python -c 'import shlex; from tests.liveserver import BASE_ENV
for k, v in BASE_ENV.items():
    if k != "SANDBOX_HOST": print(f"export {k}={shlex.quote(v)}")')"
export MONGO_URI="mongodb://127.0.0.1:$mongo_port/codeinterp_compose_test"

secantus_pid=""
cleanup() {
  set +e
  if [ -f "$work/compose.json" ]; then "${compose[@]}" -p "$project" -f "$work/compose.json" down -v --remove-orphans >/dev/null 2>&1; fi
  # Sandbox containers of this stack's server (other servers share the engine): those that
  # mount its volume. Then any work area still mounted there, and the volume itself.
  for cid in $(docker ps -aq --filter label=org.librechat.codeinterp); do
    docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' "$cid" 2>/dev/null | grep -q "$data_dir" && docker rm -f "$cid" >/dev/null
  done
  findmnt -rn -o TARGET | grep "^$data_dir/" | sort -r | xargs -r -n1 umount -l
  docker volume rm "$SANDBOX_VOLUME" >/dev/null 2>&1
  [ -n "$secantus_pid" ] && kill "$secantus_pid" 2>/dev/null && wait "$secantus_pid" 2>/dev/null
  rm -rf "$work"
  say "compose test took $(( $(date +%s) - started )) s in all"
}
trap cleanup EXIT

# The audit store on the host's loopback, which the server (host network) reaches as is.
"${SECANTUSDB_VENV:-/opt/secantusdb}/bin/python" -c "$(.venv/bin/python -c 'from tests.mongo_store import LAUNCHER; print(LAUNCHER)')" \
  127.0.0.1 "$mongo_port" "$work/secantus" 1 >"$work/secantus.log" 2>&1 &
secantus_pid=$!

"${compose[@]}" -p "$project" -f docker/compose.yml -f tests/compose/compose.test.yml config >"$work/compose.yml"
# Drop the published port (meaningless, and refused, with the host's network); JSON is YAML.
/usr/bin/python3 -c 'import json, sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["services"]["sandbox"].pop("ports", None)
json.dump(config, open(sys.argv[2], "w"), indent=1)' "$work/compose.yml" "$work/compose.json"
up() {
  "${compose[@]}" -p "$project" -f "$work/compose.json" up -d --no-build sandbox
  for _ in $(seq 1 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:$SANDBOX_PORT/health" 2>/dev/null && return 0
    sleep 1
  done
  say "the server did not answer within 120 s"; docker logs "$("${compose[@]}" -p "$project" -f "$work/compose.json" ps -q sandbox)" 2>&1 | tail -n 30
  exit 1
}
up
say "stack up after $(( $(date +%s) - started )) s"

export SANDBOX_TEST_URL="http://127.0.0.1:$SANDBOX_PORT" SANDBOX_TEST_DATA_DIR="$data_dir"
export SANDBOX_TEST_CONTAINER="$("${compose[@]}" -p "$project" -f "$work/compose.json" ps -q sandbox)"
export COMPOSE_TEST_COMMAND="${compose[*]} -p $project -f $work/compose.json"
echo "== the API suite, @librechat/agents and the escape suite against the compose stack =="
.venv/bin/python -m pytest tests/api tests/e2e tests/security/test_escape.py "$@"
echo "== the compose stack itself: audit store, admin, down/up, confinement =="
.venv/bin/python -m pytest tests/compose "$@"
