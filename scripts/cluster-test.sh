#!/usr/bin/env bash
# The cluster, tested end to end (scripts/cluster.sh, 3 replicas behind HAProxy, PostgreSQL,
# SeaweedFS): the API suite and the real @librechat/agents client through the balancer, then
# tests/cluster (a file stored through one replica used through every other, a replica
# SIGKILLed mid-load, a rolling restart under load, the database restarting mid-load), and
# the cluster taken down again. Extra arguments go to both pytest runs.
#   SKIP_SETUP=1   do not run scripts/setup.sh --dev first
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/common.sh
[ -n "${SKIP_SETUP:-}" ] || scripts/setup.sh --dev
started=$(date +%s)

# Four consecutive free loopback ports: the balancer, then one per replica.
export CLUSTER_PORT="$(.venv/bin/python -c '
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000)
    try:
        socks = [socket.create_server(("127.0.0.1", base + n)) for n in range(4)]
    except OSError:
        continue
    for s in socks:
        s.close()
    print(base)
    break')"
export CLUSTER_DIR="/var/tmp/codeinterp-cluster-$CLUSTER_PORT"
# The settings the API suite expects of its server (tests/liveserver.py's BASE_ENV, its key);
# short slot leases, so that a killed replica's slots come back within seconds.
eval "$(.venv/bin/python -c 'import shlex; from tests.liveserver import BASE_ENV
for k, v in BASE_ENV.items():
    if k != "SANDBOX_HOST": print(f"export {k}={shlex.quote(v)}")')"
export SANDBOX_LEASE_MARGIN_MS=2000
# Three replicas share this machine's cores: one worker and one warm Python sandbox each
# (a pool refill costs about a CPU-second, and six at once starved the runs of the suite).
export SANDBOX_WORKERS=1 SANDBOX_POOL=py:1

cleanup() {
  local status=$?
  set +e
  if [ "$status" != 0 ] && [ -d "$CLUSTER_DIR" ]; then  # what the replicas said, for whoever reads the failure
    keep="/var/tmp/codeinterp-cluster-logs-$CLUSTER_PORT"; mkdir -p "$keep"; cp "$CLUSTER_DIR"/*.log "$keep"/ 2>/dev/null
    say "the cluster's logs are kept in $keep"
  fi
  scripts/cluster.sh down
  # Taken down means gone: its state dir (database, bucket, logs) and its network namespaces.
  left="$( { [ ! -e "$CLUSTER_DIR" ] || echo "$CLUSTER_DIR"; ip netns list | grep -o "^cix$CLUSTER_PORT-[a-z0-9]*"; } | tr '\n' ' ')"
  if [ -n "${left// }" ]; then say "the cluster left behind: $left"; status=1; fi
  say "cluster test took $(( $(date +%s) - started )) s in all"
  exit "$status"
}
trap cleanup EXIT
scripts/cluster.sh up 3

export SANDBOX_TEST_URL="http://127.0.0.1:$CLUSTER_PORT" SANDBOX_TEST_DATA_DIR="$CLUSTER_DIR/r1"
export SANDBOX_TEST_MANAGE="scripts/cluster.sh manage 1" SANDBOX_TEST_FRONT=haproxy
export SANDBOX_TEST_LOGS="$CLUSTER_DIR/r1.log:$CLUSTER_DIR/r2.log:$CLUSTER_DIR/r3.log"
echo "== the API suite and @librechat/agents through the balancer =="
# The tests that read the server's SQLite file skip themselves here (this database is
# PostgreSQL) and say so. Programmatic runs go through, routed by client to one replica
# (docs/SCALING.md).
.venv/bin/python -m pytest -rs tests/api tests/e2e "$@"
echo "== the cluster itself: files across replicas, a replica killed, a rolling restart, the database restarting =="
.venv/bin/python -m pytest tests/cluster "$@"
