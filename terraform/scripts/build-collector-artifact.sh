#!/usr/bin/env bash
# Build the collector artifact the Terraform collectors module ships: a wheelhouse (.tar.gz) with
# the mirrorscope wheel (its C extensions compiled here) and a wheel of every dependency, so the
# instances install it with `pip install --no-index` and no package index is ever asked.
#
# usage: terraform/scripts/build-collector-artifact.sh [OUT.tar.gz]
#   default OUT: dist/mirrorscope-collector.tar.gz; prints "<sha256>  <path>" when done.
#   PYTHON: the interpreter to build with (default python3.11).
# Build it on the collectors' platform (Amazon Linux 2023, x86_64, Python 3.11), e.g.
#   docker run --rm -v "$PWD:/src" -w /src amazonlinux:2023 sh -c \
#     'dnf install -y python3.11 python3.11-pip python3.11-devel gcc tar gzip && terraform/scripts/build-collector-artifact.sh'
# so the compiled extensions link against its glibc. The tarball is deterministic for a given set
# of wheels (sorted names, zero mtimes and owners, gzip without a timestamp).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=${1:-$ROOT/dist/mirrorscope-collector.tar.gz}
PY=${PYTHON:-python3.11}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "build-collector-artifact: $PY is not Python 3.11 (the collectors run python3.11)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$PY" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$tmp/wheelhouse" "$ROOT[stream,aws]" \
    > "$tmp/build.log" 2>&1; then
  cat "$tmp/build.log" >&2
  echo "build-collector-artifact: pip wheel failed (log above)" >&2
  exit 1
fi
ls "$tmp/wheelhouse"/mirrorscope-*.whl > /dev/null  # the project's own wheel is in it
mkdir -p "$(dirname "$OUT")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/wheelhouse" -cf - . \
  | gzip -n > "$OUT.partial"
mv "$OUT.partial" "$OUT"
sha256sum "$OUT"
