#!/usr/bin/env bash
# Make a capture of real mirrored DNS traffic for bench/bench_dns.py.
#
# usage: bench/make_dns_capture.sh [OUT.pcap] [ROUNDS]
#   OUT.pcap  default bench/.data/mirror-dns.pcap (bench/.data is gitignored)
#   ROUNDS    default 40; each round: 300 normal UDP lookups (A/AAAA/MX/TXT, some NXDOMAIN),
#             40 over one TCP connection, 100 iodine-style tunnel queries, 50 NXDOMAIN names
#
# What it does (root needed: network namespaces; prefix $LAB_PREFIX, default msd-b-):
#   1. brings the mirror lab up (shared/labs/mirror-lab.sh; VXLAN VNI 1234 to the collector);
#   2. runs bench/dns_lab.py's DNS server (UDP and TCP port 53) in the mirrored namespace;
#   3. drives it from the client namespace with bench/dns_lab.py clients (a fresh socket, so a
#      fresh source port, per UDP lookup, as resolver libraries do);
#   4. records the mirrored VXLAN in the collector with tcpdump; always brings the lab down.
# The same seeds each run: the traffic is the same (the capture's times are not).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
LAB_PREFIX=${LAB_PREFIX:-msd-b-}
# shellcheck source-path=SCRIPTDIR source=lab_common.sh
source "$HERE/lab_common.sh"
OUT=${1:-$HERE/.data/mirror-dns.pcap}
ROUNDS=${2:-40}
PY=${PYTHON:-python3}
require_root
require_tools ip tc ethtool tcpdump timeout "$PY"
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
setup_work_tmp
lab_up
ip netns exec "$NS_SRC" "$PY" "$HERE/dns_lab.py" server "$SERVER_IP" 30 >"$WORK_TMP/dns.out" &
EXTRA_PIDS+=($!)
for _ in $(seq 50); do grep -q ready "$WORK_TMP/dns.out" && break; sleep 0.1; done
grep -q ready "$WORK_TMP/dns.out" || die "the DNS server did not start"
PARTIAL_OUT=$OUT.partial
rm -f "$PARTIAL_OUT"
start_tcpdump "$PARTIAL_OUT"
for r in $(seq "$ROUNDS"); do
  in_client 120 "$PY" "$HERE/dns_lab.py" client "$SERVER_IP" normal 300 "$r"
  in_client 60 "$PY" "$HERE/dns_lab.py" client "$SERVER_IP" tcp 40 "$r"
  in_client 60 "$PY" "$HERE/dns_lab.py" client "$SERVER_IP" tunnel 100 "$r"
  in_client 60 "$PY" "$HERE/dns_lab.py" client "$SERVER_IP" nxstorm 50 "$r"
done
stop_tcpdump
mv -f "$PARTIAL_OUT" "$OUT"
PARTIAL_OUT=
log "wrote $OUT ($("$PY" "$HERE/pcaputil.py" count "$OUT") packets)"
echo "$OUT"
