#!/usr/bin/env bash
# Set up everything MirrorScope needs on a fresh Debian machine (root, or sudo available):
# the Debian packages its tests and lab use, and a virtualenv in .venv with the project
# installed (editable, with its C fast path built) plus test tools. Safe to run again: it
# installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(tshark tcpdump iproute2 ethtool nginx-light wrk apache2-utils curl)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "setup: Python >= 3.11 is required (found $("$PY" --version))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# Reinstall when pyproject.toml or the C source changed since the last install.
stamp=.venv/.mirrorscope-installed
want=$(cat pyproject.toml collectors/_fastdecode.c | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing mirrorscope and its test tools into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

if [ -x .ci/install-deploy-tools.sh ] && [ "${MIRRORSCOPE_SKIP_DEPLOY_TOOLS:-}" != 1 ]; then
  bash .ci/install-deploy-tools.sh
fi
echo "setup: ready (.venv/bin/mirrorscope)"
