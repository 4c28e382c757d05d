#!/usr/bin/env bash
# Prints the hash of what defines the executor image (its Dockerfile and the regular files of
# docker/executor/): build-executor.sh and export-rootfs.sh label the image with it, so a
# rebuild happens only when an input changed. Directories there (a __pycache__ that a test's
# import left) are not inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for file in Dockerfile.executor executor/*; do
  if [ -f "$file" ]; then cat "$file"; fi
done | sha256sum | cut -c1-16
