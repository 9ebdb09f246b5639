#!/usr/bin/env bash
# Refresh the dependency lock. Run it after changing a dependency in pyproject.toml (for example
# after merging branches that each added one), commit what it changes, and .ci/setup.sh then
# installs exactly that:
#
#   bash .ci/lock.sh                          # keep every existing pin, resolve only what changed
#   bash .ci/lock.sh --upgrade                # take the newest allowed release of everything
#   bash .ci/lock.sh --upgrade-package NAME   # ... of one package
#
# It writes uv.lock (uv's universal lock: every dependency of every extra, pinned, with hashes)
# and the two hash-pinned requirement files exported from it that .ci/setup.sh installs with
# `pip install --require-hashes`:
#   .ci/requirements-analyze.txt  the base install (mirrorscope analyze) + the build backend
#   .ci/requirements-test.txt     every extra (stream, aws, query, report, test, bench) + build backend + uv
# tests/test_packaging.py fails while they are out of step with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-}
if [ -z "$UV" ] && [ -x .venv/bin/uv ]; then UV=.venv/bin/uv; fi     # from the lock (dev group)
if [ -z "$UV" ] && command -v uv >/dev/null; then UV=$(command -v uv); fi
if [ -z "$UV" ]; then
  # No setup yet: a throwaway uv from PyPI, the version the lock pins (or the newest).
  want=$(python3 - <<'PY' 2>/dev/null || true
import tomllib
try:
    print(next(p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == "uv"))
except Exception:
    pass
PY
)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m venv "$tmp/uv"
  "$tmp/uv/bin/pip" install -q "uv${want:+==$want}"
  UV=$tmp/uv/bin/uv
fi

"$UV" lock "$@"
export_args=(--frozen --no-emit-project --format requirements-txt --quiet)
"$UV" export "${export_args[@]}" --no-default-groups --group build -o .ci/requirements-analyze.txt
"$UV" export "${export_args[@]}" --all-extras --all-groups -o .ci/requirements-test.txt
echo "lock: uv.lock, .ci/requirements-analyze.txt, .ci/requirements-test.txt written ($("$UV" --version)); commit them"
