# shellcheck shell=bash
# Shared helpers for bench/make_capture.sh and bench/make_sample.sh (sourced, not run).
#
# They drive the mirror lab recipe (shared/labs/mirror-lab.sh): three network namespaces where tc
# mirrors both directions of tm-src's workload NIC into a kernel VXLAN device (VNI 1234, UDP 4789)
# that sends to the collector namespace, where tcpdump records the encapsulated copies.
#
# Environment:
#   LAB_PREFIX   namespace prefix (default "msb-": namespaces msb-src, msb-client, msb-collector).
#                Deliberately NOT the lab's default "tm-", so that a capture can run while the e2e
#                tests (which use tm-) run, and so our cleanup never tears down someone else's lab.
#   LAB_VNI      VXLAN network identifier (default 1234)
#   MIRROR_LAB   path to mirror-lab.sh (default: <repo>/../shared/labs/mirror-lab.sh)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
LAB_PREFIX=${LAB_PREFIX:-msb-}
LAB_VNI=${LAB_VNI:-1234}
NS_SRC=${LAB_PREFIX}src
NS_CLIENT=${LAB_PREFIX}client
NS_COLL=${LAB_PREFIX}collector
SERVER_IP=198.18.0.1

LAB_IS_UP=0
NGINX_PID=
TCPDUMP_PID=
EXTRA_PIDS=()
WORK_TMP=
PARTIAL_OUT=

log() { printf '[%s %s] %s\n' "$(basename "$0")" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "needs root for network namespaces (ip netns, tc, tcpdump); run it as root"
}

require_tools() {
  local missing=() t
  for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (Debian: apt-get install -y iproute2 ethtool tcpdump nginx-light wrk apache2-utils curl)"
}

find_lab() {
  local cand
  for cand in "${MIRROR_LAB:-}" "$REPO_DIR/../shared/labs/mirror-lab.sh" "$BENCH_DIR/../../shared/labs/mirror-lab.sh"; do
    if [ -n "$cand" ] && [ -f "$cand" ]; then LAB=$(cd "$(dirname "$cand")" && pwd)/$(basename "$cand"); return 0; fi
  done
  die "mirror lab recipe not found: expected ../shared/labs/mirror-lab.sh beside the repository (or set MIRROR_LAB=/path/to/mirror-lab.sh)"
}

lab_ns_exist() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -qxE "${LAB_PREFIX}(src|client|collector)"
}

lab_up() {
  find_lab
  if lab_ns_exist; then
    log "stale lab namespaces with prefix '$LAB_PREFIX' found (an earlier run was killed?); removing them"
    PREFIX=$LAB_PREFIX VNI=$LAB_VNI bash "$LAB" down || true
  fi
  LAB_IS_UP=1   # set before `up`, so a half-made lab is torn down by the EXIT trap too
  PREFIX=$LAB_PREFIX VNI=$LAB_VNI bash "$LAB" up || die "mirror lab failed to come up ($LAB up)"
  log "mirror lab up: $NS_CLIENT -> $NS_SRC ($SERVER_IP, mirrored) -> VXLAN VNI $LAB_VNI -> $NS_COLL"
}

# make_docroot DIR: an nginx config and a few static files of varied sizes.
make_docroot() {
  local d=$1
  mkdir -p "$d/www/api" "$d/tmp" "$d/logs"
  python3 - "$d/www" <<'PY'
import random, sys
root = sys.argv[1]
rng = random.Random(1234)  # deterministic contents
words = "mirror vxlan flow packet collector session filter target subnet route header payload".split()
def text(n):
    out = []
    size = 0
    while size < n:
        w = rng.choice(words)
        out.append(w)
        size += len(w) + 1
    return (" ".join(out))[:n]
def page(total, title):
    head = f"<!doctype html><html><head><title>{title}</title></head><body><p>"
    tail = "</p></body></html>\n"
    return head + text(total - len(head) - len(tail)) + tail
open(f"{root}/index.html", "w").write(page(200, "MirrorScope lab"))
open(f"{root}/4k.html", "w").write(page(4096, "4 KB page"))
open(f"{root}/64k.bin", "wb").write(rng.randbytes(65536))
PY
  cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_timeout 30;
    keepalive_requests 1000;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    types { text/html html; application/octet-stream bin; }
    default_type application/octet-stream;
    server {
        listen $SERVER_IP:80 backlog=4096;
        server_name lab.mirrorscope.test;
        root $d/www;
        location = /api/echo {
            default_type application/json;
            return 201 '{"status":"created"}\n';
        }
    }
}
EOF
  # nginx workers drop to "nobody": let them read the docroot and write the temp dirs
  chmod 711 "$(dirname "$d")"
  chmod 755 "$d" "$d/www" "$d/www/api" "$d/logs"; chmod 1777 "$d/tmp"; chmod 644 "$d/www"/*.*
}

start_nginx() {
  local d=$1 _
  ip netns exec "$NS_SRC" nginx -e "$d/logs/error.log" -c "$d/nginx.conf" -p "$d" &
  NGINX_PID=$!
  for _ in $(seq 50); do
    if ip netns exec "$NS_CLIENT" curl -sf -o /dev/null -m 1 "http://$SERVER_IP/index.html"; then
      log "nginx up in $NS_SRC on $SERVER_IP:80 (pid $NGINX_PID)"; return 0
    fi
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$d/logs/error.log" >&2 || true; die "nginx exited at start"; }
    sleep 0.1
  done
  cat "$d/logs/error.log" >&2 || true
  die "nginx did not answer on $SERVER_IP:80 within 5 s"
}

# start_tcpdump FILE: record the mirrored VXLAN in the collector namespace.
start_tcpdump() {
  local out=$1 _
  : >"$WORK_TMP/tcpdump.err"
  # -Z root: Debian's tcpdump otherwise drops to user "tcpdump", which may not write FILE's dir.
  ip netns exec "$NS_COLL" tcpdump -i eth0 -n -s 9216 -B 65536 -Z root -w "$out" udp port 4789 \
    2>"$WORK_TMP/tcpdump.err" &
  TCPDUMP_PID=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$WORK_TMP/tcpdump.err" && { log "tcpdump recording in $NS_COLL (pid $TCPDUMP_PID)"; return 0; }
    kill -0 "$TCPDUMP_PID" 2>/dev/null || { cat "$WORK_TMP/tcpdump.err" >&2; die "tcpdump exited at start"; }
    sleep 0.05
  done
  cat "$WORK_TMP/tcpdump.err" >&2
  die "tcpdump did not start within 5 s"
}

# stop_tcpdump: flush and stop; prints tcpdump's own statistics to stderr.
stop_tcpdump() {
  [ -n "$TCPDUMP_PID" ] || return 0
  sleep 0.5   # let the last mirrored copies arrive
  kill -INT "$TCPDUMP_PID" 2>/dev/null || true
  local _
  for _ in $(seq 100); do kill -0 "$TCPDUMP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$TCPDUMP_PID" 2>/dev/null || true
  wait "$TCPDUMP_PID" 2>/dev/null || true
  TCPDUMP_PID=
  grep -E "captured|received|dropped" "$WORK_TMP/tcpdump.err" | sed 's/^/  tcpdump: /' >&2 || true
}

tcpdump_dropped() {
  # "N packets dropped by kernel" from tcpdump's exit statistics (0 if absent)
  sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$WORK_TMP/tcpdump.err" | head -1 | grep . || echo 0
}

# run in the client namespace, bounded: in_client SECONDS cmd...
in_client() {
  local t=$1; shift
  timeout -k 5 "$t" ip netns exec "$NS_CLIENT" "$@"
}

cleanup() {
  local rc=$?
  set +e
  for p in "${EXTRA_PIDS[@]}" $TCPDUMP_PID $NGINX_PID; do
    [ -n "$p" ] && kill "$p" 2>/dev/null
  done
  for p in "${EXTRA_PIDS[@]}" $TCPDUMP_PID $NGINX_PID; do
    [ -n "$p" ] && wait "$p" 2>/dev/null
  done
  if [ "$LAB_IS_UP" = 1 ]; then
    PREFIX=$LAB_PREFIX VNI=$LAB_VNI bash "$LAB" down 2>/dev/null
    lab_ns_exist && log "warning: some $LAB_PREFIX* namespaces are still there (ip netns list)"
    log "mirror lab down"
  fi
  [ -n "$PARTIAL_OUT" ] && rm -f "$PARTIAL_OUT"
  [ -n "$WORK_TMP" ] && rm -rf "$WORK_TMP"
  exit $rc
}

setup_work_tmp() {
  WORK_TMP=$(mktemp -d /tmp/mirrorscope-lab.XXXXXX)
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}
