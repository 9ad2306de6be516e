#!/usr/bin/env bash
# Refresh requirements.lock, the container image's hash-locked dependencies, from pyproject.toml
# (the daemon) and clients/python/pyproject.toml (the client it requires), as listed in
# requirements.in. Run it after changing a dependency, then commit both files:
#
#   scripts/lock_requirements.sh
#
# It resolves for Python 3.11 on every platform (--universal) against PyPI with uv, pinned
# below and installed into a throwaway virtualenv, and records the sha256 of every file of
# each pinned release (--generate-hashes), so `pip install --require-hashes` in the Dockerfile
# installs exactly these bytes. The two local packages are built from the source tree and are
# left out of the lock (--no-emit-package).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
UV_VERSION=0.13.10
TOOLS="$(mktemp -d)"
trap 'rm -rf "$TOOLS"' EXIT
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install --quiet "uv==$UV_VERSION"
cd "$ROOT"
"$TOOLS/venv/bin/uv" pip compile requirements.in --universal --python-version 3.11 --generate-hashes \
  --no-emit-package memoryd --no-emit-package memoryd-client \
  --custom-compile-command "scripts/lock_requirements.sh" --quiet -o requirements.lock
echo "requirements.lock: $(grep -c '^[a-z0-9]' requirements.lock) packages locked"
