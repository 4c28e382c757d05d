#!/usr/bin/env bash
# Unpacks the executor image into a plain directory, the read-only root of SANDBOX_BACKEND=bwrap:
# one definition of what is installed (Dockerfile.executor), two ways to run it.
#   SANDBOX_BWRAP_ROOTFS   target directory (default /var/lib/codeinterp/rootfs)
#   SANDBOX_DOCKER_IMAGE   the image (default librechat/sandbox-executor:latest)
#   SANDBOX_ROOTFS_ENGINE  docker | podman (default: docker when an engine answers, else podman)
#   FORCE=1                export again even when the stamp says the image did not change
# Idempotent: the directory is stamped with the image id (.codeinterp/image-id) and left alone
# while it matches. A new export is unpacked beside the old one and swapped in with two renames.
# Without Docker, podman (Debian package, daemonless) builds Dockerfile.executor itself; it
# needs runc and explicit ulimits on hosts like ours (research/isolation.md §1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/../scripts/common.sh"
rootfs="${SANDBOX_BWRAP_ROOTFS:-/var/lib/codeinterp/rootfs}"
image="${SANDBOX_DOCKER_IMAGE:-librechat/sandbox-executor:latest}"
engine="${SANDBOX_ROOTFS_ENGINE:-}"

if [ -z "$engine" ]; then
  if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then engine=docker; else engine=podman; fi
fi

podman_build() {
  apt_install podman runc debootstrap
  local base
  base="$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$here/Dockerfile.executor" | head -n 1)"
  if ! podman image exists "$base"; then
    if ! podman pull -q "$base" >/dev/null 2>&1; then
      # make-base-image.sh speaks `docker import`; podman's import takes the same arguments.
      local shim; shim="$(mktemp -d)"
      printf '#!/bin/sh\nexec podman "$@"\n' >"$shim/docker"; chmod +x "$shim/docker"
      PATH="$shim:$PATH" "$here/make-base-image.sh" "$base"
      rm -rf "$shim"
    fi
  fi
  mkdir -p "$here/.build"
  local ca="${SANDBOX_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
  if [ "$ca" != none ] && [ -s "$ca" ]; then cp "$ca" "$here/.build/extra-ca.pem"; else : >"$here/.build/extra-ca.pem"; fi
  local inputs_hash have
  inputs_hash="$("$here/executor-inputs.sh")"
  have="$(podman image inspect -f '{{ index .Config.Labels "codeinterp.inputs" }}' "$image" 2>/dev/null || true)"
  [ "$have" = "$inputs_hash" ] && [ -z "${FORCE:-}" ] && return 0
  say "podman: building $image (inputs $inputs_hash); the first build takes several minutes"
  # crun fails on hybrid cgroup hosts, and the inherited rlimits break podman's defaults.
  podman build --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network host \
    -f "$here/Dockerfile.executor" --label "codeinterp.inputs=$inputs_hash" -t "$image" "$here" \
    >/var/tmp/codeinterp-podman-build.log 2>&1 || { tail -n 40 /var/tmp/codeinterp-podman-build.log >&2; exit 1; }
}

case "$engine" in
  docker) docker image inspect "$image" >/dev/null 2>&1 || "$here/build-executor.sh" ;;
  podman) podman_build ;;
  *) say "SANDBOX_ROOTFS_ENGINE must be docker or podman, got $engine"; exit 1 ;;
esac

image_id="$($engine image inspect -f '{{.Id}}' "$image")"
if [ "$(cat "$rootfs/.codeinterp/image-id" 2>/dev/null)" = "$image_id" ] && [ -z "${FORCE:-}" ]; then
  say "rootfs $rootfs is up to date (${image_id:0:19})"; exit 0
fi

parent="$(dirname "$rootfs")"
mkdir -p "$parent"
chmod 0755 "$parent"  # the sandbox's host uids (not root) must reach the rootfs
new="$rootfs.new.$$"
old="$rootfs.old.$$"
rm -rf "$new"
mkdir -m 0755 "$new"
trap 'rm -rf "$new"; [ -n "${cid:-}" ] && $engine rm -f "$cid" >/dev/null 2>&1 || true' EXIT
say "exporting $image (${image_id:0:19}) to $rootfs with $engine"
cid="$($engine create --network none "$image" true)"
$engine export "$cid" | tar -x -C "$new" --numeric-owner --same-permissions
$engine rm -f "$cid" >/dev/null
cid=""
# Mount points the sandbox binds over (bwrap cannot create them in a read-only root), and the
# image's environment, which bwrap reproduces with --clearenv/--setenv.
mkdir -p "$new/mnt/data" "$new/mnt/code" "$new/tmp" "$new/proc" "$new/dev" "$new/.codeinterp"
$engine image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed '/^$/d' >"$new/.codeinterp/env"
echo "$image_id" >"$new/.codeinterp/image-id"
chmod 0755 "$new" "$new/.codeinterp"
chmod 0644 "$new/.codeinterp/env" "$new/.codeinterp/image-id"
if [ -e "$rootfs" ]; then mv "$rootfs" "$old"; fi
mv "$new" "$rootfs"
trap - EXIT
rm -rf "$old"  # executions that still run keep their bind mounts of the old tree
say "rootfs ready: $rootfs"
