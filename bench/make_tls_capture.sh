#!/usr/bin/env bash
# Make a capture of real mirrored TLS traffic for bench/bench_tls.py.
#
# usage: bench/make_tls_capture.sh [OUT.pcap] [CONNECTIONS]
#   OUT.pcap      default bench/.data/mirror-tls.pcap (bench/.data is gitignored)
#   CONNECTIONS   default 1500 TLS connections (half TLS 1.2, half TLS 1.3)
#
# What it does (root needed: network namespaces): brings the mirror lab up (prefix $LAB_PREFIX,
# default mst-), runs `openssl s_server -WWW` in mst-src on 198.18.0.1:4433 (a non-standard
# port: TLS is named by content) with a self-signed certificate made by `openssl req`, serving
# a 64 KB file, and fetches it with `curl -k` from mst-client, one TLS connection per fetch,
# 4 loops in parallel; tcpdump records the mirrored VXLAN in mst-collector. Every connection
# is a full handshake followed by 64 KB of encrypted bulk, so the capture measures both what
# the handshake parse costs and that the bulk after it costs nothing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
LAB_PREFIX=${LAB_PREFIX:-mst-}
# shellcheck source-path=SCRIPTDIR source=lab_common.sh
source "$HERE/lab_common.sh"

OUT=${1:-$HERE/.data/mirror-tls.pcap}
CONNS=${2:-1500}
[[ "$CONNS" =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer, got '$CONNS'"
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

require_root
require_tools ip tc ethtool tcpdump openssl curl timeout
setup_work_tmp
lab_up
SRV=$WORK_TMP/srv
mkdir -p "$SRV"
head -c 65536 /dev/urandom >"$SRV/bulk.bin"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$SRV/k.pem" -out "$SRV/c.pem" -days 30 \
  -subj "/CN=bench.mst.test" 2>/dev/null
(cd "$SRV" && exec ip netns exec "$NS_SRC" openssl s_server -accept "$SERVER_IP:4433" \
  -cert c.pem -key k.pem -WWW -quiet </dev/null >/dev/null 2>&1) &
EXTRA_PIDS+=($!)
for _ in $(seq 100); do
  in_client 3 curl -sk -o /dev/null "https://$SERVER_IP:4433/bulk.bin" && break
  sleep 0.1
done
PARTIAL_OUT=$OUT.partial
rm -f "$PARTIAL_OUT"
start_tcpdump "$PARTIAL_OUT"
per=$(( (CONNS + 3) / 4 ))
pids=()
for i in 1 2 3 4; do
  ver=--tlsv1.2; [ $((i % 2)) = 0 ] && ver=--tlsv1.3
  max=; [ "$ver" = --tlsv1.2 ] && max="--tls-max 1.2"
  # shellcheck disable=SC2086
  in_client 600 bash -c "for n in \$(seq $per); do curl -sk -o /dev/null $ver $max https://$SERVER_IP:4433/bulk.bin; done" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
stop_tcpdump
mv "$PARTIAL_OUT" "$OUT"
PARTIAL_OUT=
log "wrote $OUT"
echo "$OUT"
