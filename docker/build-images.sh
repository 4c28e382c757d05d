#!/usr/bin/env bash
# Builds what docker/compose.yml runs, each image only when its inputs changed:
# the base (debian:bookworm-slim, made locally by make-base-image.sh where no registry
# answers), the executor image (build-executor.sh) and the server image (Dockerfile).
#   SANDBOX_SERVER_IMAGE   tag of the server image (default librechat/sandbox-server:latest)
#   SANDBOX_DOCKER_IMAGE   tag of the executor image (default librechat/sandbox-executor:latest)
#   FORCE=1                rebuild both even when the inputs did not change
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
image="${SANDBOX_SERVER_IMAGE:-librechat/sandbox-server:latest}"

# The base and the executor image; this also writes .build/extra-ca.pem, which both use.
"$here/build-executor.sh"

cd "$root"
# The server image's inputs: its Dockerfile and what .dockerignore lets into the context.
mapfile -t context < <(sed -n 's/^!//p' .dockerignore)
inputs_hash="$( (cat docker/Dockerfile .dockerignore
                 find "${context[@]}" -name __pycache__ -prune -o -type f -print | LC_ALL=C sort | xargs cat) \
                | sha256sum | cut -c1-16)"
have="$(docker image inspect -f '{{ index .Config.Labels "codeinterp.inputs" }}' "$image" 2>/dev/null || true)"
if [ "$have" = "$inputs_hash" ] && [ -z "${FORCE:-}" ]; then
  echo "[image] $image is up to date ($inputs_hash)" >&2; exit 0
fi
echo "[image] building $image (inputs $inputs_hash)" >&2
# --network host: an engine without a bridge (ours) still reaches PyPI for the build.
docker build --network host -f docker/Dockerfile --label "codeinterp.inputs=$inputs_hash" -t "$image" . \
  >/var/tmp/codeinterp-server-image-build.log 2>&1 || { tail -n 40 /var/tmp/codeinterp-server-image-build.log >&2; exit 1; }
echo "[image] built $image" >&2
