#!/usr/bin/env bash
# Runs the whole test suite against the real things (dockerd, containers, a live server,
# the @librechat/agents client, Chromium). Installs what is missing first. Extra arguments
# go to pytest (e.g. scripts/test.sh tests/security -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/setup.sh --dev
if [ $# -gt 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
# The pure functions first: seconds, no root, no Docker; a broken build fails here, not an hour in.
echo "== unit tests =="
.venv/bin/python -m pytest tests/unit -q
echo "== the whole suite against the real things =="
.venv/bin/python -m pytest --ignore=tests/unit
# The warm pool must not change anything a client can observe: the API suite again, cold.
echo "== the API suite again with the warm pool off =="
SANDBOX_TEST_POOL=off .venv/bin/python -m pytest tests/api tests/executor/test_basic_languages.py
# And the same API suite, every language (under the same seccomp allow-list) and the warm-pool
# tests on the bubblewrap backend (the escape suite already ran on it above).
echo "== the API suite, all languages and the warm pool again on the bubblewrap backend =="
SANDBOX_TEST_BACKEND=bwrap .venv/bin/python -m pytest tests/api tests/executor/test_basic_languages.py \
  tests/executor/test_all_languages.py tests/executor/test_pool.py
# The fork-server (SANDBOX_FORKSERVER, bwrap): the escape suite, the warm-pool tests and the
# API suite with the warm sandboxes (py, js, ts, bash) forked from a template (about 7 minutes).
echo "== the escape suite, the warm pool and the API suite with the bwrap fork-server =="
SANDBOX_TEST_BACKEND=bwrap SANDBOX_TEST_FORKSERVER=true .venv/bin/python -m pytest tests/security tests/executor/test_pool.py tests/api
# The server in its container (docker/compose.yml): the API suite and @librechat/agents again,
# the audit in a MongoDB-compatible store, files across down/up (about 1-2 minutes).
echo "== the compose stack =="
SKIP_SETUP=1 scripts/compose-test.sh
# Several replicas (docs/SCALING.md; tests/scaling ran above): 3 replicas behind HAProxy with
# PostgreSQL and SeaweedFS (scripts/cluster.sh), the API suite and @librechat/agents through
# the balancer, a replica killed, a rolling restart, the database restarting.
echo "== three replicas behind a load balancer =="
SKIP_SETUP=1 exec scripts/cluster-test.sh
