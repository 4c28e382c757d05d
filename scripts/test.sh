#!/usr/bin/env bash
# Runs the whole test suite against the real things (dockerd, containers, a live server,
# the @librechat/agents client, Chromium). Installs what is missing first. Extra arguments
# go to pytest (e.g. scripts/test.sh tests/security -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
scripts/setup.sh --dev
exec .venv/bin/python -m pytest "$@"
