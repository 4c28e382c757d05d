#!/usr/bin/env bash
# A test topology of several replicas on one machine, every part in a network namespace of
# its own that this script makes (addresses exist only inside them; the balancer's listening
# sockets are on this machine's loopback):
#
#   127.0.0.1:$CLUSTER_PORT ── HAProxy (ns lb, least connections, /health checks)
#        (and 127.0.0.1:$CLUSTER_PORT+n: replica n alone, for tests that pick a replica)
#            ├── replica 1 (ns r1)  python -m sandbox_project.serve (nginx front, workers, pool keeper)
#            ├── replica 2 (ns r2)        each with its own data dir, uid range, warm pool
#            └── replica N (ns rN)
#   PostgreSQL (ns db) : sessions, files, slots, audit      SeaweedFS (ns s3) : the files' bytes
#
# All namespaces hang on one bridge in a hub namespace (10.214.0.0/24 lives only there). The
# replicas share this machine's Docker engine and cgroup tree: uids, pools and work areas are
# kept apart by settings (docs/SCALING.md).
#
#   scripts/cluster.sh up [N]       make it all (N replicas, default 3); prints the URL once every replica answers
#   scripts/cluster.sh status       what runs, and each replica's /health
#   scripts/cluster.sh kill N       SIGKILL replica N (every process of it at once, as a crashed host)
#   scripts/cluster.sh stop N       SIGTERM replica N and wait until it has drained and exited
#   scripts/cluster.sh start N      start replica N again (same data dir, same name)
#   scripts/cluster.sh restart N    stop N, then start N (one step of a rolling restart)
#   scripts/cluster.sh db stop|start    stop (fast) or start PostgreSQL
#   scripts/cluster.sh s3 stop|start    stop or start the object store (its data is kept)
#   scripts/cluster.sh manage N [NAME=value...] ARGS...   manage.py ARGS with replica N's settings, in its namespace
#   scripts/cluster.sh env N        replica N's settings, as shell lines
#   scripts/cluster.sh down         remove everything this script made, and only that
#
# Settings: CLUSTER_PORT (3090), SANDBOX_API_KEY (required for up: the key every replica
# takes), CLUSTER_DIR (/var/tmp/codeinterp-cluster-$CLUSTER_PORT, the state). Other SANDBOX_*
# variables in the environment of `up` go to every replica (e.g. the tests' limits).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
. scripts/common.sh

port="${CLUSTER_PORT:-3090}"
state="${CLUSTER_DIR:-/var/tmp/codeinterp-cluster-$port}"
ns="cix$port"                       # namespace names: cix3090-hub, -db, -s3, -lb, -r1...
net=10.214.0
py="$here/.venv/bin/python"
weed="${SEAWEEDFS_VENV:-/opt/seaweedfs}/bin/weed"
pgbin=/usr/lib/postgresql/15/bin
db_password_file="$state/db-password"

die() { say "$*"; exit 1; }
nsexec() { local name="$1"; shift; nsenter --net="/run/netns/$ns-$name" "$@"; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
replicas() { cat "$state/replicas" 2>/dev/null || echo 0; }

# -- the network ---------------------------------------------------------------------------
make_ns() {  # name address: a namespace on the hub's bridge
  local name="$1" address="$2"
  echo "$ns-$name" >>"$state/namespaces"  # first: a step below that fails still leaves it to `down`
  ip netns add "$ns-$name"
  ip -n "$ns-$name" link set lo up
  ip -n "$ns-hub" link add "v$name" type veth peer name eth0 netns "$ns-$name"
  ip -n "$ns-hub" link set "v$name" master br0 up
  ip -n "$ns-$name" addr add "$address/24" dev eth0
  ip -n "$ns-$name" link set eth0 up
}

make_network() {
  echo "$ns-hub" >>"$state/namespaces"
  ip netns add "$ns-hub"
  ip -n "$ns-hub" link set lo up
  ip -n "$ns-hub" link add br0 type bridge
  ip -n "$ns-hub" link set br0 up
  make_ns db "$net.2"
  make_ns s3 "$net.3"
  make_ns lb "$net.4"
}

# -- PostgreSQL ----------------------------------------------------------------------------
start_db() {
  alive "$state/db.pid" && return 0
  setsid nsenter --net="/run/netns/$ns-db" setpriv --reuid=postgres --regid=postgres --init-groups -- "$pgbin/postgres" -D "$state/pg" -k "$state/pg" \
    -c listen_addresses="$net.2" -c max_connections=300 -c fsync=off -c synchronous_commit=off \
    >>"$state/db.log" 2>&1 </dev/null &
  echo $! >"$state/db.pid"
  for _ in $(seq 1 100); do
    nsexec db runuser -u postgres -- psql -h "$state/pg" -Atc 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "PostgreSQL did not start; see $state/db.log"
}

stop_db() {
  alive "$state/db.pid" || return 0
  local pid; pid="$(cat "$state/db.pid")"
  kill -INT "$pid"  # fast shutdown: open transactions are rolled back, clients disconnected
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

make_db() {
  mkdir -p "$state/pg"; chown postgres:postgres "$state/pg"; chmod 700 "$state/pg"
  (umask 077; "$py" -c 'import secrets; print(secrets.token_hex(16))' >"$db_password_file")
  runuser -u postgres -- "$pgbin/initdb" -D "$state/pg" -U postgres --auth-local=peer --auth-host=scram-sha-256 -E UTF8 \
    >>"$state/db.log" 2>&1
  echo "host codeinterp codeinterp $net.0/24 scram-sha-256" >>"$state/pg/pg_hba.conf"
  start_db
  nsexec db runuser -u postgres -- psql -h "$state/pg" -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE codeinterp LOGIN PASSWORD '$(cat "$db_password_file")'" -c "CREATE DATABASE codeinterp OWNER codeinterp"
}

# -- SeaweedFS -----------------------------------------------------------------------------
start_s3() {
  alive "$state/s3.pid" && return 0
  # SeaweedFS's parts talk over unix sockets in $TMPDIR named by port: a folder of this
  # cluster's own (another SeaweedFS on the machine uses the same names in /tmp), emptied of
  # what a killed one left.
  mkdir -p "$state/s3/tmp"; rm -f "$state/s3/tmp"/seaweedfs-*.sock
  setsid nsenter --net="/run/netns/$ns-s3" env TMPDIR="$state/s3/tmp" "$weed" server -dir="$state/s3/data" -ip="$net.3" -ip.bind="$net.3" \
    -s3 -s3.port=8333 -s3.config="$state/s3/identities.json" -master.volumeSizeLimitMB=256 -volume.max=16 \
    >>"$state/s3.log" 2>&1 </dev/null &
  echo $! >"$state/s3.pid"
}

s3_answers() {  # the bucket answers a listing with the cluster's credentials
  local s3_key s3_secret
  read -r s3_key s3_secret <"$state/s3-credentials"
  nsexec lb "$py" - "$s3_key" "$s3_secret" <<EOF >/dev/null 2>&1
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://$net.3:8333", region_name="us-east-1",
                  aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2])
s3.list_objects_v2(Bucket="codeinterp", MaxKeys=1)
EOF
}

stop_s3() {
  alive "$state/s3.pid" || return 0
  local pid; pid="$(cat "$state/s3.pid")"
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

make_s3() {
  [ -x "$weed" ] || die "SeaweedFS is not installed ($weed; scripts/setup.sh --dev installs it)"
  mkdir -p "$state/s3/data"; chmod 700 "$state/s3"
  (umask 077; "$py" -c 'import secrets; print("codeinterp", secrets.token_hex(16))' >"$state/s3-credentials")
  read -r s3_key s3_secret <"$state/s3-credentials"
  (umask 077; printf '{"identities":[{"name":"codeinterp","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$s3_key" "$s3_secret" >"$state/s3/identities.json")
  start_s3
  for _ in $(seq 1 150); do
    if nsexec lb "$py" - "$s3_key" "$s3_secret" <<EOF 2>/dev/null
import sys, boto3
s3 = boto3.client("s3", endpoint_url="http://$net.3:8333", region_name="us-east-1",
                  aws_access_key_id=sys.argv[1], aws_secret_access_key=sys.argv[2])
s3.create_bucket(Bucket="codeinterp")
EOF
    then return 0; fi
    sleep 0.4
  done
  die "SeaweedFS did not make the bucket; see $state/s3.log"
}

# -- the replicas --------------------------------------------------------------------------
replica_env() {  # n: the settings of replica n, one NAME=value a line
  local n="$1" s3_key s3_secret
  read -r s3_key s3_secret <"$state/s3-credentials"
  cat "$state/passed.env"
  cat <<EOF
SANDBOX_HOST=$net.$((10 + n))
SANDBOX_PORT=3081
SANDBOX_DATA_DIR=$state/r$n
SANDBOX_API_KEY=$(cat "$state/api-key")
DATABASE_URL=postgres://codeinterp:$(cat "$db_password_file")@$net.2:5432/codeinterp
SANDBOX_STORAGE_BACKEND=s3
SANDBOX_S3_ENDPOINT_URL=http://$net.3:8333
SANDBOX_S3_BUCKET=codeinterp
SANDBOX_S3_ACCESS_KEY_ID=$s3_key
SANDBOX_S3_SECRET_ACCESS_KEY=$s3_secret
SANDBOX_UID_BASE=$((600000 + 20000 * n))
SANDBOX_DRAIN_DELAY_S=${CLUSTER_DRAIN_DELAY_S:-3}
SANDBOX_WORKERS=${SANDBOX_WORKERS:-1}
SANDBOX_POOL=${SANDBOX_POOL:-py:1}
EOF
}

replica_vars=()
load_env() {  # n: replica n's settings into replica_vars (NAME=value words for env -i)
  replica_vars=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root)
  local line
  while IFS= read -r line; do [ -n "$line" ] && replica_vars+=("$line"); done < <(replica_env "$1")
}

run_in_replica() {  # n command...: in replica n's namespace with its settings only
  local n="$1"; shift
  load_env "$n"
  nsenter --net="/run/netns/$ns-r$n" env -i "${replica_vars[@]}" "$@"
}

start_replica() {  # n: migrate (all replicas at once: the advisory lock orders them), then serve
  local n="$1"
  alive "$state/r$n.pid" && return 0
  mkdir -p "$state/r$n"
  load_env "$n"
  # Its own session (setsid): `kill` takes every process of it at once.
  setsid nsenter --net="/run/netns/$ns-r$n" env -i "${replica_vars[@]}" \
    bash -c 'cd "$1" && "$2" manage.py migrate --noinput -v0 && exec "$2" -m sandbox_project.serve' replica "$here" "$py" \
    >>"$state/r$n.log" 2>&1 </dev/null &
  echo $! >"$state/r$n.pid"
}

replica_health() {  # n: replica n's /health status through its own port of the balancer
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Host: localhost' "http://127.0.0.1:$((port + $1))/health" 2>/dev/null || true
}

wait_replica() {
  local n="$1"
  for _ in $(seq 1 300); do
    [ "$(replica_health "$n")" = 200 ] && return 0
    alive "$state/r$n.pid" || die "replica $n exited; see $state/r$n.log: $(tail -n 5 "$state/r$n.log")"
    sleep 0.5
  done
  die "replica $n did not answer within 150 s; see $state/r$n.log"
}

kill_replica() {  # n: SIGKILL to every process of it (its own session), like a host that dies
  local n="$1"
  alive "$state/r$n.pid" || return 0
  local pid; pid="$(cat "$state/r$n.pid")"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

stop_replica() {  # n: SIGTERM to the master alone; it drains (sandbox_project/drain.py) and exits
  local n="$1"
  alive "$state/r$n.pid" || return 0
  local pid; pid="$(cat "$state/r$n.pid")"
  kill -TERM "$pid"
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  say "replica $n did not exit within 300 s of SIGTERM; killing it"; kill_replica "$n"
}

# -- the balancer --------------------------------------------------------------------------
write_haproxy_config() {
  local count="$1" n
  {
    cat <<EOF
# Made by scripts/cluster.sh.
global
    maxconn 4096
defaults
    mode http
    option httplog
    log stdout format raw local0 err
    timeout connect 2s
    timeout client 240s
    timeout server 240s
    timeout http-request 15s
    timeout queue 60s
    # A connection a replica refused (stopped, restarting, or just stopped listening while it
    # drains) never reached it: sent again, to another replica. Nothing else is retried: an
    # /exec that reached a replica may have run.
    retries 3
    option redispatch 1
    retry-on conn-failure
EOF
    # What HAProxy answers itself is the API's small JSON, as the replicas' own front does.
    for code in 400 408 500 501 502 503 504; do echo "    errorfile $code $state/haproxy-$code.http"; done
    cat <<EOF
frontend api
    bind fd@10
    http-response set-header X-Replica %s
    # A programmatic run's sandbox stands on the replica that started it, and its
    # continuations must reach that replica: they are routed by the client's address
    # (docs/SCALING.md, "What stays on one replica").
    acl programmatic path_beg /exec/programmatic /v1/exec/programmatic
    use_backend by_client if programmatic
    default_backend replicas
EOF
    local backend
    for backend in replicas by_client; do
      echo "backend $backend"
      if [ "$backend" = replicas ]; then echo "    balance leastconn"; else echo "    balance source"; echo "    hash-type consistent"; fi
      cat <<EOF
    option httpchk
    # The Host every replica answers to by default (ALLOWED_HOSTS has localhost).
    http-check send meth GET uri /health ver HTTP/1.1 hdr Host localhost
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 maxconn 64
EOF
      for n in $(seq 1 "$count"); do echo "    server r$n $net.$((10 + n)):3081 check"; done
    done
    for n in $(seq 1 "$count"); do
      printf 'frontend r%s\n    bind fd@%s\n    http-response set-header X-Replica r%s\n    default_backend only_r%s\n' "$n" $((10 + n)) "$n" "$n"
      printf 'backend only_r%s\n    server r%s %s.%s:3081\n' "$n" "$n" "$net" $((10 + n))
    done
  } >"$state/haproxy.cfg"
  local code reason body
  for code in 400 408 500 501 502 503 504; do
    case "$code" in
      400) reason="Bad Request" body='{"error":"bad_request","message":"Malformed HTTP request"}' ;;
      408) reason="Request Timeout" body='{"error":"request_timeout","message":"The request did not arrive in time"}' ;;
      501) reason="Not Implemented" body='{"error":"bad_request","message":"The request uses an HTTP feature this server does not take"}' ;;
      *) reason="Service Unavailable" body='{"error":"service_unavailable","message":"No replica could answer; retry shortly"}' ;;
    esac
    printf 'HTTP/1.1 %s %s\r\nContent-Type: application/json\r\nRetry-After: 2\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
      "$code" "$reason" "${#body}" "$body" >"$state/haproxy-$code.http"
  done
}

start_balancer() {  # the listening sockets are made here, on the loopback, then handed to HAProxy in its namespace
  local count="$1"
  write_haproxy_config "$count"
  setsid "$py" - "$port" "$count" "$ns-lb" "$state/haproxy.cfg" >>"$state/haproxy.log" 2>&1 </dev/null <<'EOF' &
import os, socket, sys
port, count, netns, config = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
for n in range(count + 1):  # fd 10: the balancer; fd 10+n: replica n alone
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port + n))
    sock.listen(1024)
    os.dup2(sock.fileno(), 10 + n)
    os.set_inheritable(10 + n, True)
    sock.close()
os.execvp("nsenter", ["nsenter", f"--net=/run/netns/{netns}", "haproxy", "-db", "-f", config])
EOF
  echo $! >"$state/haproxy.pid"
}

# -- commands ------------------------------------------------------------------------------
up() {
  local count="${1:-3}"
  [ -n "${SANDBOX_API_KEY:-}" ] || die "set SANDBOX_API_KEY: every replica takes that key"
  [ ! -e "$state" ] || die "$state exists: the cluster is up (or was not taken down): scripts/cluster.sh down"
  for tool in haproxy nsenter ip curl; do command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh --dev)"; done
  [ -x "$pgbin/postgres" ] || die "PostgreSQL 15 is missing (scripts/setup.sh --dev)"
  local started; started=$(date +%s)
  mkdir -p "$state"; chmod 711 "$state"
  echo "$count" >"$state/replicas"
  (umask 077; printf '%s\n' "$SANDBOX_API_KEY" >"$state/api-key")
  # SANDBOX_* settings of this environment go to every replica; the cluster's own win.
  env | grep -E '^SANDBOX_[A-Z0-9_]+=' | grep -vE '^SANDBOX_(HOST|PORT|DATA_DIR|API_KEY|STORAGE_BACKEND|S3_[A-Z_]+|UID_BASE|TEST_[A-Z_]+)=' \
    >"$state/passed.env" || true
  make_network
  make_db
  make_s3
  local n
  for n in $(seq 1 "$count"); do make_ns "r$n" "$net.$((10 + n))"; done
  start_balancer "$count"
  for n in $(seq 1 "$count"); do start_replica "$n"; done
  for n in $(seq 1 "$count"); do wait_replica "$n"; done
  say "cluster of $count replicas up in $(( $(date +%s) - started )) s"
  echo "http://127.0.0.1:$port"
}

status() {
  [ -d "$state" ] || { echo "no cluster at $state"; return 1; }
  local part
  for part in db s3 haproxy; do printf '%-8s %s\n' "$part" "$(alive "$state/$part.pid" && echo "running (pid $(cat "$state/$part.pid"))" || echo stopped)"; done
  for n in $(seq 1 "$(replicas)"); do
    printf 'r%-7s %s, /health %s\n' "$n" "$(alive "$state/r$n.pid" && echo "running (pid $(cat "$state/r$n.pid"))" || echo stopped)" "$(replica_health "$n")"
  done
  echo "http://127.0.0.1:$port"
}

down() {
  [ -d "$state" ] || { say "nothing to remove at $state"; return 0; }
  local n pid
  for n in $(seq 1 "$(replicas)"); do kill_replica "$n"; done
  stop_s3
  for part in haproxy; do
    if alive "$state/$part.pid"; then pid="$(cat "$state/$part.pid")"; kill -TERM "$pid"; sleep 0.5; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  stop_db
  # The replicas' sandboxes (the engine is shared: only containers that mount this state dir),
  # then any work area still mounted in it.
  for cid in $(docker ps -aq --filter label=org.librechat.codeinterp 2>/dev/null); do
    docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' "$cid" 2>/dev/null | grep -q "$state/" && docker rm -f "$cid" >/dev/null 2>&1
  done
  # Deepest first; the state dir is compared as a plain prefix (not a regex), and no mount
  # left, or one gone before its umount, must not end the script (pipefail, set -e) before the
  # namespaces and the state dir go.
  findmnt -rn -o TARGET | awk -v prefix="$state/" 'index($0, prefix) == 1' | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || say "could not unmount $target"
  done
  if [ -f "$state/namespaces" ]; then
    tac "$state/namespaces" | while read -r name; do
      if [ -e "/run/netns/$name" ]; then ip netns del "$name" 2>/dev/null || say "could not delete namespace $name"; fi
    done
  fi
  rm -rf "$state"
  say "cluster at $state removed"
}

[ "$(id -u)" = 0 ] || die "run as root: network namespaces, and the replicas mount work areas"
command="${1:-}"; shift || true
case "$command" in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  kill) kill_replica "${1:?replica number}" ;;
  stop) stop_replica "${1:?replica number}" ;;
  start) start_replica "${1:?replica number}"; wait_replica "$1" ;;
  restart) stop_replica "${1:?replica number}"; start_replica "$1"; wait_replica "$1" ;;
  db) case "${1:-}" in stop) stop_db ;; start) start_db ;; *) die "db stop|start" ;; esac ;;
  s3)
    case "${1:-}" in
      stop) stop_s3 ;;
      start) start_s3; for _ in $(seq 1 150); do s3_answers && exit 0; sleep 0.4; done; die "SeaweedFS did not come back; see $state/s3.log" ;;
      *) die "s3 stop|start" ;;
    esac ;;
  manage)  # leading NAME=value words are settings on top of the replica's
    n="${1:?replica number}"; shift; extra=()
    while [ $# -gt 0 ] && [[ "$1" =~ ^[A-Z][A-Z0-9_]*= ]]; do extra+=("$1"); shift; done
    run_in_replica "$n" env "${extra[@]}" "$py" manage.py "$@" ;;
  env) replica_env "${1:?replica number}" ;;
  *) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
