#!/usr/bin/env bash
# Makes the Dockerfile's FROM image (debian:bookworm-slim) without a registry:
# debootstrap a minimal bookworm into a folder and `docker import` it under that tag.
# Used only when the tag is missing and cannot be pulled (machines with no Docker Hub).
set -euo pipefail
tag="${1:-debian:bookworm-slim}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
root="$(mktemp -d /var/tmp/codeinterp-rootfs.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "[base] debootstrap bookworm from $mirror into $root" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Same apt behaviour as the official slim image: no caches, no docs left behind by later layers.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "[base] imported $tag" >&2
