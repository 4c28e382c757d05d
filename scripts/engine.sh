#!/usr/bin/env bash
# Makes sure a Docker engine answers and the executor image exists.
# Idempotent: an engine that already answers (ours or the user's) is used as it is.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$here/scripts/common.sh"

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
  apt_install docker.io runsc debootstrap
  # Our own dockerd: no bridge, no iptables, no ip_forward, so the host's network is left
  # alone (isolation.md §5), containers get --network none anyway; runsc registered as a runtime.
  local pidfile=/run/codeinterp-dockerd.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "dockerd (pid $(cat "$pidfile")) is starting"
  else
    rm -f /var/run/docker.pid
    say "starting dockerd (log: /var/log/codeinterp-dockerd.log)"
    setsid nohup dockerd --config-file "$here/docker/daemon.json" --pidfile "$pidfile" \
      >>/var/log/codeinterp-dockerd.log 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do engine_answers && return 0; sleep 1; done
  say "dockerd did not answer within 60 s; see /var/log/codeinterp-dockerd.log"; tail -n 20 /var/log/codeinterp-dockerd.log; exit 1
}

# Our dockerd (its pid file), already running, re-reads its docker/daemon.json (the runtimes'
# arguments may have changed since it started): a reload, which leaves running containers alone.
reload_ours() {
  local pidfile=/run/codeinterp-dockerd.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    kill -HUP "$(cat "$pidfile")"
  fi
}

command -v docker >/dev/null 2>&1 || apt_install docker.io
if engine_answers; then reload_ours; else start_dockerd; fi
"$here/docker/build-executor.sh"
