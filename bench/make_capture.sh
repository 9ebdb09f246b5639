#!/usr/bin/env bash
# Make a large capture of real mirrored HTTP traffic for the benchmarks.
#
# usage: bench/make_capture.sh [--force] [OUT.pcap] [MIN_PACKETS]
#   OUT.pcap      default bench/.data/mirror-http-500k.pcap (bench/.data is gitignored)
#   MIN_PACKETS   default 500000; load runs step by step until the capture holds at least this many
#   --force       remake the capture even if OUT already holds MIN_PACKETS packets
#
# What it does (root needed: network namespaces):
#   1. brings the mirror lab up (shared/labs/mirror-lab.sh, namespace prefix $LAB_PREFIX, default
#      msb-): tc mirrors both directions of the workload NIC in msb-src into VXLAN VNI 1234 (UDP
#      4789) sent to msb-collector;
#   2. serves real HTTP with nginx in msb-src on 198.18.0.1:80 (config and files in a temp dir:
#      200 B page, 4 KB page, 64 KB binary, a POST endpoint, 404s);
#   3. drives it from msb-client with wrk (HTTP/1.1 keep-alive), ab (HTTP/1.0, with and without
#      keep-alive) and curl (GET, HEAD, POST, range, 404, reused connection);
#   4. records the mirrored VXLAN in msb-collector with
#      `tcpdump -i eth0 -s 9216 -B 65536 -w OUT udp port 4789`, checks the packet count after every
#      load step, and stops once it holds MIN_PACKETS;
#   5. always (EXIT trap) stops nginx and tcpdump and brings the lab down.
# Every load command runs under `timeout`; the whole run is capped by MAX_SECONDS (default 900).
# The capture is written to OUT.partial and renamed at the end, so an interrupted run never leaves
# a file that looks complete.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lab_common.sh
source "$HERE/lab_common.sh"

FORCE=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option: $a (usage: $0 [--force] [OUT.pcap] [MIN_PACKETS])" ;;
    *) ARGS+=("$a") ;;
  esac
done
[ ${#ARGS[@]} -le 2 ] || die "too many arguments (usage: $0 [--force] [OUT.pcap] [MIN_PACKETS])"
OUT=${ARGS[0]:-$HERE/.data/mirror-http-500k.pcap}
MIN_PACKETS=${ARGS[1]:-500000}
MAX_SECONDS=${MAX_SECONDS:-900}
PY=${PYTHON:-python3}
[[ "$MIN_PACKETS" =~ ^[1-9][0-9]*$ ]] || die "MIN_PACKETS must be a positive integer, got '$MIN_PACKETS'"

count() { "$PY" "$HERE/pcaputil.py" count "$1"; }

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

if [ "$FORCE" = 0 ] && [ -s "$OUT" ]; then
  have=$(count "$OUT" 2>/dev/null || echo 0)
  if [ "$have" -ge "$MIN_PACKETS" ]; then
    log "reusing $OUT: $have packets >= $MIN_PACKETS (pass --force to remake it)"
    echo "$OUT"
    exit 0
  fi
  log "$OUT holds $have packets < $MIN_PACKETS: remaking it"
fi

require_root
require_tools ip tc ethtool tcpdump nginx wrk ab curl timeout "$PY"

T_START=$(date +%s)
setup_work_tmp
lab_up
make_docroot "$WORK_TMP/srv"
start_nginx "$WORK_TMP/srv"

PARTIAL_OUT=$OUT.partial
rm -f "$PARTIAL_OUT"
start_tcpdump "$PARTIAL_OUT"

U=http://$SERVER_IP
STEP=0
have=0

# One load step: run it bounded, then check the count. Returns 1 when the capture is big enough.
step() {
  local name=$1; shift
  STEP=$((STEP + 1))
  if [ $(( $(date +%s) - T_START )) -ge "$MAX_SECONDS" ]; then
    die "gave up after MAX_SECONDS=$MAX_SECONDS s with $have packets (< $MIN_PACKETS)"
  fi
  local rc=0
  "$@" >"$WORK_TMP/step.out" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "warning: load step '$name' failed or timed out (rc $rc): $(tail -3 "$WORK_TMP/step.out" | tr '\n' ' ')"
  fi
  kill -0 "$TCPDUMP_PID" 2>/dev/null || { cat "$WORK_TMP/tcpdump.err" >&2; die "tcpdump died"; }
  sleep 0.2
  have=$("$PY" "$HERE/pcaputil.py" count "$PARTIAL_OUT" "$WORK_TMP/count.state" 2>/dev/null || echo 0)
  log "step $STEP $name: capture now $have packets"
  [ "$have" -lt "$MIN_PACKETS" ]
}

curl_mix() {
  local c=(in_client 10 curl -s -o /dev/null -m 5)
  "${c[@]}" "$U/index.html"
  "${c[@]}" "$U/4k.html?q=mirror&page=2"
  "${c[@]}" "$U/does-not-exist"
  "${c[@]}" -I "$U/64k.bin"
  "${c[@]}" -r 0-1023 "$U/64k.bin"
  "${c[@]}" -H 'Content-Type: application/json' -d '{"session":"tms-0123","vni":1234,"note":"bench"}' "$U/api/echo"
  "${c[@]}" -H 'Connection: close' -A 'mirrorscope-bench/1.0' "$U/4k.html"
  # two requests on one reused (keep-alive) connection
  "${c[@]}" "$U/index.html" -o /dev/null "$U/4k.html"
}

# The mix (per round): keep-alive small pages and 4 KB pages (wrk, HTTP/1.1), keep-alive 404s,
# 64 KB downloads with and without keep-alive, many short non-keep-alive connections (new TCP
# handshake and teardown per request: many flows), 404s without keep-alive, and a curl mix.
# Count-bounded ab bursts keep tcpdump's 64 MB buffer from overflowing on the big downloads.
ROUND=0
while :; do
  ROUND=$((ROUND + 1))
  step "curl mix"                 curl_mix || break
  step "ab keep-alive 404"        in_client 30 ab -q -k -n 5000 -c 4 "$U/missing-$ROUND.html" || break
  step "ab keep-alive 64KB"       in_client 30 ab -q -k -n 500 -c 2 "$U/64k.bin" || break
  step "ab new-conn 200B"         in_client 30 ab -q -n 3000 -c 8 "$U/index.html" || break
  step "wrk keep-alive 200B"      in_client 20 wrk -t1 -c2 -d1s "$U/index.html" || break
  step "ab new-conn 64KB"         in_client 30 ab -q -n 500 -c 2 "$U/64k.bin" || break
  step "ab new-conn 404"          in_client 30 ab -q -n 1000 -c 4 "$U/nope-$ROUND" || break
  step "ab keep-alive 4KB"        in_client 30 ab -q -k -n 3000 -c 4 "$U/4k.html" || break
  step "wrk keep-alive 4KB"       in_client 20 wrk -t1 -c2 -d1s "$U/4k.html" || break
done

stop_tcpdump
dropped=$(tcpdump_dropped)
have=$(count "$PARTIAL_OUT")
[ "$have" -ge "$MIN_PACKETS" ] || die "capture holds $have packets < $MIN_PACKETS"
mv -f "$PARTIAL_OUT" "$OUT"
PARTIAL_OUT=
chmod 644 "$OUT"
[ "$dropped" = 0 ] || log "warning: tcpdump dropped $dropped packets (kernel buffer overflow); the capture misses some mirrored packets"
log "wrote $OUT: $have packets, $(du -h "$OUT" | cut -f1), in $(( $(date +%s) - T_START )) s ($ROUND round(s), $STEP load steps)"
echo "$OUT"
