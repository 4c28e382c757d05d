#!/usr/bin/env bash
# Prints the hash of what defines the executor image (its Dockerfile, the regular files of
# docker/executor/ and the extra CA bundle its build trusts, .build/extra-ca.pem, which both
# callers write first): build-executor.sh and export-rootfs.sh label the image with it, so a
# rebuild happens only when an input changed (a new CA bundle too: it is copied into the
# image). Directories there (a __pycache__ that a test's import left) are not inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
for file in Dockerfile.executor executor/* .build/extra-ca.pem; do
  if [ -f "$file" ]; then cat "$file"; fi
done | sha256sum | cut -c1-16
