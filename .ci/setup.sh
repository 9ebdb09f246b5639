#!/usr/bin/env bash
# Set up everything MirrorScope needs on a fresh Debian machine (root, or sudo available):
# the Debian packages its tests and lab use, and a virtualenv in .venv with the project
# installed (editable, with its C fast path built) plus test tools. Safe to run again: it
# installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(tshark tcpdump iproute2 ethtool nginx-light wrk apache2-utils curl
  # the collector's tests: a real Kafka broker (Java 17, jars via Maven), ping in the lab,
  # and a C compiler (the fast path; bench/bench_collect.py's sender)
  openjdk-17-jdk-headless maven iputils-ping gcc
  # the detectors' e2e tests: real attack tools in the lab (tests/e2e/test_detectors_lab.py)
  nmap hping3
  # Redis for the distributed mode's tests and `mirrorscope services up` (Debian does not
  # start it: stream_app/services/redis.py runs its own); redis-tools has redis-cli for the
  # Redis Cluster test, openssl makes the TLS test's certificates
  redis-server redis-tools openssl)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# tests/deploy's tfcheck.sh fetches the AWS provider schema with npm once (nodejs may bring it)
command -v npm >/dev/null || APT_PACKAGES+=(npm)
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
# Reinstall when pyproject.toml or a C source changed since the last install.
stamp=.venv/.mirrorscope-installed
want=$(cat pyproject.toml collectors/*.c stream_app/*.c 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing mirrorscope and its test tools into .venv"
  # The build's own chatter goes to a log, shown only when the install fails.
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[test,bench]'; } \
      > .venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "setup: installing into .venv failed (log above, also in .venv/install.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi

# Apache Kafka's jars (Maven Central) for the collector's integration tests: a single-node
# KRaft broker that stream_app/services/kafka.py starts with `java`. Fetched into a
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
