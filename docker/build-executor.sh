#!/usr/bin/env bash
# Builds the executor image unless an image built from the same inputs already exists.
#   SANDBOX_DOCKER_IMAGE   tag to build (default librechat/sandbox-executor:latest)
#   SANDBOX_BUILD_CA_BUNDLE extra CA bundle for TLS-inspecting proxies (default: the host's
#                           /etc/ssl/certs/ca-certificates.crt when it exists; "none" for none)
#   FORCE=1                rebuild even when the inputs did not change
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
image="${SANDBOX_DOCKER_IMAGE:-librechat/sandbox-executor:latest}"
ca="${SANDBOX_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

mkdir -p .build
if [ "$ca" != none ] && [ -s "$ca" ]; then cp "$ca" .build/extra-ca.pem; else : >.build/extra-ca.pem; fi

# The inputs that define the image; their hash is stored as a label to make rebuilds idempotent.
inputs_hash="$(./executor-inputs.sh)"
have="$(docker image inspect -f '{{ index .Config.Labels "codeinterp.inputs" }}' "$image" 2>/dev/null || true)"
if [ "$have" = "$inputs_hash" ] && [ -z "${FORCE:-}" ]; then
  echo "[image] $image is up to date ($inputs_hash)" >&2; exit 0
fi

base="$(sed -n 's/^FROM \([^ ]*\).*/\1/p' Dockerfile.executor | head -n 1)"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  docker pull "$base" >/dev/null 2>&1 || ./make-base-image.sh "$base"
fi

echo "[image] building $image (inputs $inputs_hash); the first build takes several minutes" >&2
# --network host: our dockerd has no bridge; the build's RUN steps need the package registries.
docker build --network host -f Dockerfile.executor --label "codeinterp.inputs=$inputs_hash" -t "$image" . \
  >/var/tmp/codeinterp-image-build.log 2>&1 || { tail -n 40 /var/tmp/codeinterp-image-build.log >&2; exit 1; }
echo "[image] built $image" >&2
