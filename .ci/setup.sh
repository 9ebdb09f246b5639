#!/usr/bin/env bash
# Set up MirrorScope from its lock (issue #12: every dependency pinned with hashes).
#
#   bash .ci/setup.sh --analyze   what `mirrorscope analyze` needs: a virtualenv in .venv with the
#                                 base dependencies (.ci/requirements-analyze.txt) and the project
#                                 (editable, C fast paths built in place when a compiler is there).
#                                 No root, no Debian packages; Python >= 3.11 with venv.
#   bash .ci/setup.sh             everything the tests need: the Debian packages the tests and the
#                                 lab use (root, or sudo), every extra (.ci/requirements-test.txt),
#                                 the C fast paths (required), Kafka's jars, the deploy tools.
#
# pip installs exactly the lock's files with --require-hashes, then the project with --no-deps
# and without build isolation (so the build backend is the locked one too). The venv is rebuilt
# when the lock changes, so nothing from an older lock stays behind. Refresh the lock with
# `bash .ci/lock.sh`. Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=test
case "${1:-}" in
  --analyze) MODE=analyze ;;
  "") ;;
  *) echo "usage: bash .ci/setup.sh [--analyze]" >&2; exit 2 ;;
esac

APT_PACKAGES=(tshark tcpdump iproute2 ethtool nginx-light wrk apache2-utils curl
  # the collector's tests: a real Kafka broker (Java 17, jars via Maven), ping in the lab,
  # and a C compiler (the fast path; bench/bench_collect.py's sender)
  openjdk-17-jdk-headless maven iputils-ping gcc
  # the detectors' e2e tests: real attack tools in the lab (tests/e2e/test_detectors_lab.py)
  nmap hping3
  # Redis for the distributed mode's tests and `mirrorscope services up` (Debian does not
  # start it: tests/services/redis_service.py runs its own); redis-tools has redis-cli for the
  # Redis Cluster test, openssl makes the TLS test's certificates
  redis-server redis-tools openssl
  # mirrorscope report's test opens the report in headless Chromium (tests/test_report.py)
  chromium)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# tests/deploy's tfcheck.sh fetches the AWS provider schema with npm once (nodejs may bring it)
command -v npm >/dev/null || APT_PACKAGES+=(npm)
missing=()
[ "$MODE" = analyze ] && APT_PACKAGES=()  # analyze needs no Debian package
for p in ${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}; do
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
# A venv made from another lock is rebuilt: pip adds and upgrades but never removes.
lock_id=$(sha256sum uv.lock | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.mirrorscope-lock 2>/dev/null)" != "$lock_id" ]; then
  echo "setup: .venv was installed from another lock: recreating it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv || { echo "setup: '$PY -m venv' failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  echo "$lock_id" > .venv/.mirrorscope-lock
fi
# Reinstall when the lock, pyproject.toml or a C source changed since the last install. A venv
# set up for the tests stays a test venv (an --analyze run after it changes nothing).
lockset=$MODE
[ -f .venv/.mirrorscope-test ] && lockset=test
stamp=.venv/.mirrorscope-installed
want=$(cat ".ci/requirements-$lockset.txt" pyproject.toml collectors/*.c stream_app/*.c 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "setup: installing the locked dependencies (.ci/requirements-$lockset.txt) and mirrorscope into .venv"
  # The build's own chatter goes to a log, shown only when the install fails. Wheels only: an
  # sdist would be built with an unpinned backend (every locked package has wheels today).
  if ! { .venv/bin/pip install -q --require-hashes --only-binary :all: -r ".ci/requirements-$lockset.txt" \
         && .venv/bin/pip install -q --no-deps --no-build-isolation -e . ; } > .venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "setup: installing into .venv failed (log above, also in .venv/install.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
  if [ "$lockset" = test ]; then touch .venv/.mirrorscope-test; fi
fi
version=$(.venv/bin/mirrorscope --version)
echo "setup: $version"
if [ "$MODE" = analyze ]; then
  echo "setup: ready for analyze (.venv/bin/mirrorscope analyze CAPTURE --out DIR)"
  exit 0
fi
# The tests compare the C fast paths with the Python reference: they must be built.
case "$version" in
  *"C fast paths: active"*) ;;
  *) echo "setup: the C fast paths did not build (is gcc installed?); see .venv/install.log" >&2; exit 1 ;;
esac

# Apache Kafka's jars (Maven Central) for the collector's integration tests: a single-node
# KRaft broker that tests/services/kafka_service.py starts with `java`. Fetched into a
# .partial folder and renamed, so an interrupted download is never taken for a complete one.
KAFKA_VERSION=${MIRRORSCOPE_TEST_KAFKA_VERSION:-3.9.1}
KAFKA_JARS=.ci/cache/kafka-$KAFKA_VERSION
if [ ! -f "$KAFKA_JARS/kafka_2.13-$KAFKA_VERSION.jar" ] || [ ! -f "$KAFKA_JARS/slf4j-reload4j-1.7.36.jar" ]; then
  echo "setup: fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KAFKA_JARS.partial"
  mkdir -p .ci/cache
  mvn -q -B -f tests/services/kafka-pom.xml -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$PWD/$KAFKA_JARS.partial"
  rm -rf "$KAFKA_JARS"
  mv "$KAFKA_JARS.partial" "$KAFKA_JARS"
fi

if [ -x .ci/install-deploy-tools.sh ] && [ "${MIRRORSCOPE_SKIP_DEPLOY_TOOLS:-}" != 1 ]; then
  bash .ci/install-deploy-tools.sh
fi
echo "setup: ready (.venv/bin/mirrorscope)"
