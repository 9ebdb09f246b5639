#!/usr/bin/env bash
# Make the small sample capture for new users: docs/samples/mirror-lab-http.pcap.
#
# usage: bench/make_sample.sh [OUT.pcap]     (root needed: network namespaces)
#
# The same lab as bench/make_capture.sh (shared/labs/mirror-lab.sh; namespaces msb-src,
# msb-client, msb-collector; VXLAN VNI 1234 on UDP 4789), but only a handful of exchanges, in this
# order, each a fraction of a second apart:
#   1. ping -c 2 198.18.0.1                           (ICMP echo request/reply x2)
#   2. a DNS A query for lab.mirrorscope.test to 198.18.0.1:53 and its answer (bench/sample_dns.py)
#   3. curl GET  /index.html                          (200, 200-byte page; own connection)
#   4. curl GET  /missing.html                        (404; own connection)
#   5. curl POST /api/echo with a 58-byte JSON body   (201; own connection)
#   6. curl GET  /index.html then /4k.html on ONE reused keep-alive connection (200, 200)
# tcpdump in msb-collector records the mirrored VXLAN: tcpdump -i eth0 -s 9216 -B 65536 -w OUT udp port 4789
# Always cleans up (EXIT trap): nginx, the DNS responder and tcpdump stopped, lab down.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lab_common.sh
source "$HERE/lab_common.sh"

case "${1:-}" in -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
OUT=${1:-$REPO_DIR/docs/samples/mirror-lab-http.pcap}
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

require_root
require_tools ip tc ethtool tcpdump nginx curl python3 timeout
PING=(ping -c 2 -i 0.2 -W 2 "$SERVER_IP")
if ! command -v ping >/dev/null 2>&1; then
  command -v hping3 >/dev/null 2>&1 || die "needs ping (apt-get install -y iputils-ping) or hping3"
  PING=(hping3 -1 -c 2 -i u200000 "$SERVER_IP")
fi

setup_work_tmp
lab_up
make_docroot "$WORK_TMP/srv"
start_nginx "$WORK_TMP/srv"   # its readiness probe runs before tcpdump starts: not in the sample
ip netns exec "$NS_SRC" python3 "$HERE/sample_dns.py" server "$SERVER_IP" 30 &
EXTRA_PIDS+=($!)

PARTIAL_OUT=$OUT.partial
rm -f "$PARTIAL_OUT"
start_tcpdump "$PARTIAL_OUT"
sleep 0.3

U=http://$SERVER_IP
CURL=(curl -sS -m 5 -o /dev/null -w '%{http_code} %{method} %{url_effective} (connections opened: %{num_connects})\n')
in_client 10 "${PING[@]}" >/dev/null;                                           log "ping x2 done"; sleep 0.3
in_client 10 python3 "$HERE/sample_dns.py" query "$SERVER_IP" lab.mirrorscope.test | sed 's/^/  dns: /' >&2; sleep 0.3
in_client 10 "${CURL[@]}" "$U/index.html" | sed 's/^/  curl: /' >&2;   sleep 0.3
in_client 10 "${CURL[@]}" "$U/missing.html" | sed 's/^/  curl: /' >&2; sleep 0.3
in_client 10 "${CURL[@]}" -H 'Content-Type: application/json' \
  --data '{"mirror_session":"tms-0123456789abcdef0","vni":1234}' "$U/api/echo" | sed 's/^/  curl: /' >&2
sleep 0.3
# keep-alive pair: curl reuses the connection for the second URL on the same host
in_client 10 "${CURL[@]}" "$U/index.html" -o /dev/null "$U/4k.html" | sed 's/^/  curl: /' >&2
sleep 0.5

stop_tcpdump
n=$(python3 "$HERE/pcaputil.py" count "$PARTIAL_OUT")
size=$(stat -c %s "$PARTIAL_OUT")
[ "$n" -ge 30 ] || die "the sample holds only $n packets; expected about 50"
[ "$size" -le 307200 ] || die "the sample is $size bytes, over the 300 KB budget"
mv -f "$PARTIAL_OUT" "$OUT"
PARTIAL_OUT=
chmod 644 "$OUT"
log "wrote $OUT: $n packets, $size bytes"
if command -v tshark >/dev/null 2>&1; then
  tshark -n -r "$OUT" -T fields -e frame.number -e vxlan.vni -e _ws.col.Protocol -e _ws.col.Info 2>/dev/null \
    | sed 's/^/  /' >&2 || true
fi
echo "$OUT"
