#!/bin/sh
# Runs once at image build: fills the read-only caches that make every run start fast.
set -eu
# Matplotlib's font list (copied into the per-run MPLCONFIGDIR by sitecustomize.py).
MPLCONFIGDIR=/opt/sandbox/mpl-cache /opt/sandbox/python/bin/python -c 'import matplotlib.font_manager'
chmod -R a+rX /opt/sandbox/mpl-cache
# Java class-data sharing archive of the JDK's default classes (-Xshare:auto uses it).
java -Xshare:dump >/dev/null 2>&1 || true
