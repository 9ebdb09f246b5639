#!/usr/bin/env python3
"""Collector throughput: datagrams sent by a separate process -> received -> decoded ->
batched -> published, in packets per second per collector process, with the loss accounted.

    .venv/bin/python bench/bench_collect.py                      # null publisher, 1 then 2 processes
    .venv/bin/python bench/bench_collect.py --kafka              # also into a real Kafka broker
    .venv/bin/python bench/bench_collect.py --count 2000000 --rate 300000 --processes 1
    .venv/bin/python bench/bench_collect.py --json-out result.json

The sender is a small C program (compiled here with gcc into bench/.data/vxsend: Python cannot
send fast enough, see docs/collectors.md) that blasts pre-built VXLAN datagrams at
127.0.0.1:PORT with sendmmsg from several source ports (so SO_REUSEPORT spreads them over the
processes), at full speed or at --rate. The datagrams are the VXLAN payloads of the lab
capture bench/.data/mirror-http-500k.pcap when it exists (bench/make_capture.sh makes it),
else synthetic HTTP flows (tests/services/traffic.py).

Two measurements per configuration:
- stream: the sender and the collector run at the same time, with the collector's default
  64 MiB socket buffer (on this 2-core box they also compete for the CPU; the kernel's
  loopback delivery runs on the sender's core). Use --rate for a sustained rate. Reported:
  sent, received, kernel drops (the sockets' own drop counters, /proc/net/udp) and loopback
  backlog drops (/proc/net/softnet_stat), and the unaccounted rest, which must be 0.
- drain: the collector's worker processes are stopped (SIGSTOP), the datagrams are queued in
  their socket buffers (sized to hold them all: SO_RCVBUFFORCE, root), then the workers
  continue (SIGCONT) and the time to drain them is the collector's own capacity, without a
  sender competing for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / ".data"
CAPTURE = DATA / "mirror-http-500k.pcap"
sys.path.insert(0, str(ROOT))

SENDER_C = r"""
/* vxsend: blast pre-built UDP datagrams with sendmmsg.
   usage: vxsend HOST PORT COUNT RATE(0 = full speed) SOCKETS FILE
   FILE holds [u32 little-endian length][bytes] records. Prints one JSON line. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#define VLEN 32
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  if (argc < 7) { fprintf(stderr, "usage: vxsend HOST PORT COUNT RATE SOCKETS FILE\n"); return 2; }
  long long count = atoll(argv[3]); double rate = atof(argv[4]); int nsock = atoi(argv[5]);
  FILE *f = fopen(argv[6], "rb"); if (!f) { perror("open"); return 2; }
  fseek(f, 0, SEEK_END); long sz = ftell(f); fseek(f, 0, SEEK_SET);
  unsigned char *blob = malloc(sz);
  if (fread(blob, 1, sz, f) != (size_t)sz) { perror("read"); return 2; }
  fclose(f);
  long n = 0, cap = 1024; struct iovec *pk = malloc(cap * sizeof *pk);
  for (long off = 0; off + 4 <= sz;) {
    uint32_t len; memcpy(&len, blob + off, 4); off += 4;
    if (off + len > sz) break;
    if (n == cap) { cap *= 2; pk = realloc(pk, cap * sizeof *pk); }
    pk[n].iov_base = blob + off; pk[n].iov_len = len; n++; off += len;
  }
  if (!n) { fprintf(stderr, "no datagrams\n"); return 2; }
  if (nsock < 1) nsock = 1;
  int *socks = malloc(nsock * sizeof(int));
  struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  for (int i = 0; i < nsock; i++) {
    socks[i] = socket(AF_INET, SOCK_DGRAM, 0); int sb = 4 << 20;
    setsockopt(socks[i], SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
    if (connect(socks[i], (void *)&a, sizeof a) < 0) { perror("connect"); return 2; }
  }
  struct mmsghdr m[VLEN]; memset(m, 0, sizeof m);
  long long sent = 0, refused = 0; long idx = 0; int si = 0; double t0 = now();
  while (sent < count) {
    int k = VLEN; if (count - sent < k) k = (int)(count - sent);
    for (int i = 0; i < k; i++) { m[i].msg_hdr.msg_iov = &pk[idx]; m[i].msg_hdr.msg_iovlen = 1; if (++idx == n) idx = 0; }
    int done = 0;
    while (done < k) {
      int r = sendmmsg(socks[si], m + done, k - done, 0);
      if (r < 0) { if (errno == EINTR) continue; if (errno == ECONNREFUSED) { refused++; continue; } perror("sendmmsg"); return 1; }
      done += r;
    }
    sent += k; if (++si == nsock) si = 0;
    if (rate > 0) {
      double due = t0 + sent / rate, d;
      while ((d = due - now()) > 0) { if (d > 0.0002) { struct timespec ts = {0, (long)(d * 1e9)}; nanosleep(&ts, NULL); } }
    }
  }
  double dt = now() - t0;
  printf("{\"sent\": %lld, \"seconds\": %.6f, \"pps\": %.1f, \"refused\": %lld}\n", sent, dt, sent / dt, refused);
  return 0;
}
"""


def build_sender() -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    exe = DATA / "vxsend"
    src = DATA / "vxsend.c"
    if not exe.exists() or not src.exists() or src.read_text() != SENDER_C:
        src.write_text(SENDER_C)
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            sys.exit("bench_collect: a C compiler (cc/gcc) is needed for the sender")
        subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def datagrams_file(limit: int) -> tuple[Path, int, float, str]:
    """[len][payload] records of VXLAN payloads; returns (path, count, mean size, source)."""
    out = DATA / "datagrams.bin"
    payloads: list[bytes] = []
    if CAPTURE.exists():
        source = str(CAPTURE.relative_to(ROOT))
        with open(CAPTURE, "rb") as f:
            f.read(24)
            while len(payloads) < limit:
                h = f.read(16)
                if len(h) < 16:
                    break
                _, _, caplen, _ = struct.unpack("<IIII", h)
                fr = f.read(caplen)
                if len(fr) < 42 or fr[12:14] != b"\x08\x00":
                    continue
                ihl = (fr[14] & 15) * 4
                if fr[14 + 9] != 17:
                    continue
                payloads.append(fr[14 + ihl + 8:])
    else:
        from tests.services.traffic import tcp_flows
        source = "synthetic HTTP flows (tests/services/traffic.py)"
        payloads = [d.payload for d in tcp_flows(max(1, limit // 10), response_len=600)]
    with open(out, "wb") as f:
        for p in payloads:
            f.write(struct.pack("<I", len(p)) + p)
    return out, len(payloads), sum(map(len, payloads)) / len(payloads), source


def softnet_drops() -> int:
    """Packets the kernel dropped at the per-CPU input backlog (loopback goes through it)."""
    total = 0
    with open("/proc/net/softnet_stat") as f:
        for line in f:
            total += int(line.split()[1], 16)
    return total


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict] = {}
    for line in text.splitlines():
        m = re.match(r'^(mirrorscope_collector_\w+?)(?:\{(.*)\})? ([0-9.eE+-]+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out.setdefault(m.group(1), {})[tuple(sorted(labels.items()))] = float(m.group(3))
    return out


def metric(snap: dict, name: str, **labels) -> float:
    return sum(v for k, v in snap.get(name, {}).items()
               if all((kk, str(vv)) in k for kk, vv in labels.items()))


class Run:
    """One collector (its parent and workers) for one measurement."""

    def __init__(self, processes: int, transport: str, extra: list[str], env: dict):
        self.port = free_udp_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-collect-"))
        exe = str(Path(sys.executable).parent / "mirrorscope")
        self.proc = subprocess.Popen(
            [exe, "collect", "--transport", transport, "--listen", "127.0.0.1", "--port",
             str(self.port), "--processes", str(processes), "--health-port", "0",
             "--metrics-port", "0", "--source-cidr", "127.0.0.1/32", *extra],
            stdout=open(self.workdir / "out", "wb"), stderr=open(self.workdir / "err", "wb"),
            env={**os.environ, "MIRRORSCOPE_STATS_INTERVAL_S": "0.1", **env})
        self.processes = processes
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = self.logs()
            rx = [e for e in logs if e.get("msg") == "receiving"]
            mp = [e for e in logs if e.get("msg") == "metrics endpoint"]
            hp = [e for e in logs if e.get("msg") == "health endpoint"]
            if len(rx) >= processes and mp and hp:
                self.metrics_port = mp[0]["port"]
                self.health_port = hp[0]["port"]
                self.worker_pids = [e["pid"] for e in rx]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit("collector did not start:\n" + (self.workdir / "err").read_text()[-3000:])

    def logs(self) -> list[dict]:
        out = []
        for line in (self.workdir / "err").read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        return json.loads((self.workdir / "out").read_text().strip().splitlines()[-1])


def measure(args, sender: Path, dfile: Path, processes: int, transport: str, mode: str,
            extra: list[str], env: dict) -> dict:
    env = dict(env)
    if mode == "drain":  # the whole count must fit in the sockets' buffers
        env["MIRRORSCOPE_LISTEN_RCVBUF_BYTES"] = str(min(2**31 - 1, args.count * 2600))
    elif args.rcvbuf:
        env["MIRRORSCOPE_LISTEN_RCVBUF_BYTES"] = str(args.rcvbuf)
    run = Run(processes, transport, extra, env)
    if args.pin:  # one worker per CPU: less migration noise on a small box
        cpus = sorted(os.sched_getaffinity(0))
        for i, pid in enumerate(run.worker_pids):
            os.sched_setaffinity(pid, {cpus[i % len(cpus)]})
    try:
        snet0 = softnet_drops()
        if mode == "drain":
            for pid in run.worker_pids:
                os.kill(pid, signal.SIGSTOP)
        cmd = [str(sender), "127.0.0.1", str(run.port), str(args.count),
               str(args.rate if mode == "stream" else 0), str(args.sockets), str(dfile)]
        t_send = time.monotonic()
        sp = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        samples = []  # (t, received total, per worker)
        if mode == "drain":
            sent_info = json.loads(sp.communicate(timeout=600)[0])
            time.sleep(0.2)
            queued = args.count - (softnet_drops() - snet0)
            t0 = time.monotonic()
            for pid in run.worker_pids:
                os.kill(pid, signal.SIGCONT)
        else:
            t0 = t_send
        last_change = time.monotonic()
        prev = -1.0
        while True:
            snap = scrape(run.metrics_port)
            now = time.monotonic()
            rec = metric(snap, "mirrorscope_collector_datagrams_received_total")
            kd = metric(snap, "mirrorscope_collector_kernel_socket_drops_total")
            samples.append((now, rec, [metric(snap, "mirrorscope_collector_datagrams_received_total",
                                              worker=str(w)) for w in range(processes)]))
            if rec != prev:
                prev, last_change = rec, now
            sender_done = sp.poll() is not None
            if sender_done and rec + kd >= args.count - (softnet_drops() - snet0):
                break
            if sender_done and now - last_change > 3.0:
                break
            time.sleep(0.05)
        if mode == "stream":
            sent_info = json.loads(sp.stdout.read())
        # The interval over which datagrams were being processed: from the start (SIGCONT,
        # or the sender's start) to the first sample that saw the count final; per process
        # too, as the kernel's hash rarely splits the sender's ports exactly evenly.
        final = samples[-1][1]
        start = t0
        t_last = next(t for t, r, _ in samples if r >= final)
        seconds = max(1e-6, t_last - start)
        rates = []
        for w in range(processes):
            fw = samples[-1][2][w]
            tw = next(t for t, _, per in samples if per[w] >= fw)
            rates.append(fw / max(1e-6, tw - start))
        time.sleep(0.3)
        summary = run.stop()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    t = summary["totals"]
    backlog = softnet_drops() - snet0
    sent = sent_info["sent"]
    received = t["received"]
    kernel = t["kernel_drops"]
    per_worker = [w["received"] for w in summary["workers"]]
    pps = sum(rates)
    res = {
        "mode": mode, "transport": transport, "processes": processes, "sent": sent,
        "sender_pps": round(sent_info["pps"]), "received": received,
        "kernel_socket_drops": kernel, "loopback_backlog_drops": backlog,
        "unaccounted": sent - received - kernel - backlog,
        "decoded": t["decoded"], "published": t["published"],
        "publish_dropped": sum(t["publish_dropped"].values()),
        "dropped_by_reason": {k: v for k, v in t["drops"].items() if v},
        "reconciled": summary["reconciled"], "seconds": round(seconds, 3),
        "pps_total": round(pps), "pps_per_process": round(pps / processes),
        "pps_by_process": [round(r) for r in rates], "wall_pps": round(received / seconds),
        "received_per_process": per_worker,
    }
    if mode == "drain":
        res["queued_before_drain"] = queued
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1_000_000, help="datagrams per measurement")
    ap.add_argument("--rate", type=float, default=0, help="sender rate, packets/s (0: full speed)")
    ap.add_argument("--processes", type=int, nargs="*", default=None,
                    help="collector process counts to measure (default: 1 and the core count)")
    ap.add_argument("--sockets", type=int, default=64, help="sender source ports")
    ap.add_argument("--modes", nargs="*", default=["stream", "drain"])
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per configuration; the median (by pps) is reported, all are kept "
                         "in --json-out (use 3+ on a busy machine)")
    ap.add_argument("--kafka", action="store_true", help="also publish to a real Kafka broker")
    ap.add_argument("--no-null", action="store_true", help="skip the null publisher")
    ap.add_argument("--kafka-args", default="",
                    help="extra `mirrorscope collect` flags for the Kafka runs, one string")
    ap.add_argument("--pin", action="store_true", help="pin worker i to CPU i")
    ap.add_argument("--rcvbuf", type=int, default=0,
                    help="socket buffer per process in stream mode (default: the collector's, "
                         "64 MiB); drain mode sizes it to hold --count")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    procs = args.processes or sorted({1, max(1, len(os.sched_getaffinity(0)))})
    sender = build_sender()
    dfile, n, mean, source = datagrams_file(min(args.count, 500_000))
    print(f"datagrams: {n:,} distinct, mean {mean:.0f} bytes, from {source}; "
          f"{args.count:,} sent per measurement; {os.cpu_count()} CPUs", flush=True)
    env: dict[str, str] = {}
    results = []
    targets = [] if args.no_null else [("null", [])]
    broker = None
    if args.kafka:
        from tests.services.kafka_service import LocalKafka, create_topic
        broker = LocalKafka(Path(tempfile.mkdtemp(prefix="bench-kafka-")))
        broker.start()
        create_topic(broker.bootstrap, "bench.packets", 12)
        targets.append(("kafka", ["--kafka-bootstrap", broker.bootstrap, "--kafka-topic",
                                  "bench.packets", *shlex.split(args.kafka_args)]))
    try:
        for transport, extra in targets:
            for p in procs:
                for mode in args.modes:
                    runs = [measure(args, sender, dfile, p, transport, mode, extra, env)
                            for _ in range(args.repeat)]
                    runs.sort(key=lambda x: x["pps_total"])
                    r = dict(runs[len(runs) // 2])
                    if args.repeat > 1:
                        r["runs_pps_total"] = [x["pps_total"] for x in runs]
                        r["all_accounted"] = all(x["unaccounted"] == 0 and x["reconciled"]
                                                 for x in runs)
                    results.append(r)
                    print(f"{transport:6} {mode:6} processes={p}: {r['pps_per_process']:>9,} pkt/s "
                          f"per process ({r['pps_by_process']}, sum {r['pps_total']:,}; wall "
                          f"{r['wall_pps']:,}/s over {r['seconds']} s); sent "
                          f"{r['sent']:,} at {r['sender_pps']:,}/s, received {r['received']:,}, "
                          f"kernel drops {r['kernel_socket_drops']:,}, backlog drops "
                          f"{r['loopback_backlog_drops']:,}, unaccounted {r['unaccounted']:,}; "
                          f"published {r['published']:,}, publish drops {r['publish_dropped']:,}; "
                          f"reconciled {r['reconciled']}"
                          + (f"; runs {r['runs_pps_total']}" if "runs_pps_total" in r else ""),
                          flush=True)
    finally:
        if broker is not None:
            broker.stop()
    for transport, _ in targets:
        for mode in args.modes:
            one = [r for r in results if r["transport"] == transport and r["mode"] == mode
                   and r["processes"] == 1]
            many = [r for r in results if r["transport"] == transport and r["mode"] == mode
                    and r["processes"] > 1]
            if one and many:
                m = many[-1]
                ratio = m["pps_total"] / max(1, one[0]["pps_total"])
                print(f"scaling {transport} {mode}: {m['processes']} processes = {ratio:.2f}x one "
                      f"process ({ratio / m['processes']:.0%} of linear)")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
