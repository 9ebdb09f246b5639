#!/usr/bin/env python3
"""Compare MirrorScope's analyzer with two naive peers on one real mirrored capture.

usage: python bench/bench_analyze.py [--capture FILE] [--skip-go] [--skip-ours] [--skip-naive]
                                     [--repeat N] [--core N] [--no-half] [--min-packets N]
                                     [--skip-health-baseline]

Runs, one after the other in this one command, each as a subprocess pinned to one core
(taskset -c CORE, default 0):
  ours   <venv>/bin/mirrorscope analyze FILE --out TMPDIR --no-progress --no-http --no-detect (flows only)
  ours-nohealth  the same with --no-tcp-health: the baseline of what TCP health costs
         (ratio ours/ours-nohealth; --skip-health-baseline leaves it out)
         (the console script beside sys.executable, i.e. the same venv's)
  naive  sys.executable bench/naive_dpkt.py FILE     (dpkt, the webinar's loop in Python)
  go     bench/.data/go-webinar FILE                 (gopacket, the webinar's loop in Go; built
                                                      from bench/go-webinar if Go is available)
For each it reports the wall time, packets/s (the capture's packet count / wall time), CPU time
and peak RSS (ru_maxrss from os.wait4 on that child, so every run is measured on its own), prints a
table, the throughput ratios ours/naive and ours/go, and a memory-flatness check (ours on the
whole capture and on its first half), then one JSON line with every number.

If the capture is absent it is made first with bench/make_capture.sh (needs root).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DATA = BENCH / ".data"
DEFAULT_CAPTURE = DATA / "mirror-http-500k.pcap"
GO_SRC = BENCH / "go-webinar"
GO_BIN = DATA / "go-webinar"

sys.path.insert(0, str(BENCH))
import pcaputil  # stdlib-only helper beside this file


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# running one measured child


def run_measured(name: str, cmd: list[str], core: int | None, log_dir: Path) -> dict:
    """Run cmd pinned to one core; return wall/cpu seconds, peak RSS and its output."""
    full = list(cmd)
    preexec = None
    if core is not None:
        if shutil.which("taskset"):
            full = ["taskset", "-c", str(core)] + full  # taskset execs cmd: same pid, same rusage
        else:
            def preexec() -> None:
                os.sched_setaffinity(0, {core})
    out_path = log_dir / f"{name}.stdout"
    err_path = log_dir / f"{name}.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                preexec_fn=preexec, cwd=REPO)  # noqa: PLW1509 (no threads here)
        # wait4 returns this child's own rusage (its ru_maxrss is the max over it and the children
        # it waited for): unlike getrusage(RUSAGE_CHILDREN), it does not mix up successive runs.
        _pid, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise BenchError(
            f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stderr (last lines) ---\n{_tail(stderr)}\n--- stdout (last lines) ---\n{_tail(stdout)}")
    report = _last_json(stdout)
    return {
        "cmd": cmd,
        "wall_s": round(wall, 4),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
        "peak_rss_kb": ru.ru_maxrss,  # Linux: kilobytes
        "report": report,
        "stdout_tail": None if report else _tail(stdout, 5),
    }


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _ours_summary(out_dir: Path) -> dict | None:
    """The counts from ours' OUT/summary.json, if it wrote one (read after timing; informative)."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    rep = {"packets": summary.get("frames"), "flows": summary.get("flows"),
           "bytes": summary.get("flow_bytes")}
    return {k: v for k, v in rep.items() if v is not None} or None


def measure(name: str, make_cmd, repeat: int, core: int | None, log_dir: Path,
            packets: int) -> dict:
    """make_cmd() -> (argv, path to delete after the run or None); called once per run."""
    runs = []
    for i in range(repeat):
        cmd, scratch = make_cmd()
        log(f"{name}: run {i + 1}/{repeat}: {' '.join(cmd)}")
        try:
            r = run_measured(name, cmd, core, log_dir)
            if r["report"] is None and scratch is not None:
                r["report"] = _ours_summary(Path(scratch))
            runs.append(r)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    walls = [r["wall_s"] for r in runs]
    wall = statistics.median(walls)
    best = min(runs, key=lambda r: abs(r["wall_s"] - wall))
    res = {
        "wall_s": round(wall, 4),
        "wall_s_all": walls,
        "cpu_s": best["cpu_s"],
        "packets_per_s": round(packets / wall, 1) if wall > 0 else None,
        "peak_rss_mb": round(max(r["peak_rss_kb"] for r in runs) / 1024, 1),
        "cmd": cmd,
    }
    rep = best["report"]
    if rep:
        for k in ("packets", "flows", "bytes", "seconds"):
            if k in rep:
                res[f"reported_{k}"] = rep[k]
    elif best["stdout_tail"]:
        res["stdout_tail"] = best["stdout_tail"]
    return res


# ----------------------------------------------------------------------------------------------
# the three contenders


def find_ours() -> Path:
    # The console script of the interpreter running this file (do not resolve symlinks: a venv's
    # bin/python is often a link to the base interpreter, while mirrorscope lives in the venv).
    cand = Path(sys.executable).parent / "mirrorscope"
    if cand.exists():
        return cand
    raise BenchError(
        f"our analyzer was not found at {cand} (the console script beside {sys.executable}).\n"
        f"Install the project into this interpreter's venv (pip install -e '.[bench]') and run this "
        f"script with that venv's python, or pass --skip-ours.")


def check_dpkt() -> None:
    r = subprocess.run([sys.executable, "-c", "import dpkt"], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"the naive baseline needs dpkt in {sys.executable}: "
                         f"pip install 'dpkt>=1.9.8' (the project's [bench] extra), or pass --skip-naive")


def ensure_go_binary() -> Path | None:
    """Build bench/.data/go-webinar if Go is available and the binary is missing or stale."""
    srcs = [GO_SRC / n for n in ("main.go", "go.mod", "go.sum")]
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    fresh = GO_BIN.exists() and all(GO_BIN.stat().st_mtime >= s.stat().st_mtime for s in srcs if s.exists())
    if fresh:
        return GO_BIN
    if go is None:
        if GO_BIN.exists():
            log("Go is not installed; using the existing (possibly stale) bench/.data/go-webinar")
            return GO_BIN
        log("Go is not installed: skipping the Go peer (install Go >= 1.21 to include it)")
        return None
    DATA.mkdir(parents=True, exist_ok=True)
    log(f"building the Go peer: go -C {GO_SRC.relative_to(REPO)} build -o {GO_BIN}")
    env = dict(os.environ, CGO_ENABLED="0")
    r = subprocess.run([go, "-C", str(GO_SRC), "build", "-o", str(GO_BIN), "."],
                       check=False, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise BenchError(f"building the Go peer failed (pass --skip-go to leave it out):\n{r.stderr}")
    return GO_BIN


# ----------------------------------------------------------------------------------------------


def ensure_capture(path: Path, min_packets: int) -> None:
    if path.exists():
        return
    script = BENCH / "make_capture.sh"
    log(f"{path} is absent: making it with {script.relative_to(REPO)} (needs root, ~10-30 s)")
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(script), str(path), str(min_packets)],
                       check=False, stdout=subprocess.PIPE, text=True,
                       env=dict(os.environ, PYTHON=sys.executable))
    if r.returncode != 0 or not path.exists():
        raise BenchError(f"making the capture failed (exit {r.returncode}); see the messages above")
    log(f"capture made in {time.perf_counter() - t0:.1f} s")


def warm_cache(path: Path) -> None:
    """Read the file once so that no contender pays for the first read from disk."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt_rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, default=DEFAULT_CAPTURE,
                    help=f"pcap to analyze (default {DEFAULT_CAPTURE.relative_to(REPO)}; made if absent)")
    ap.add_argument("--min-packets", type=int, default=500_000,
                    help="packets to capture when the capture has to be made (default 500000)")
    ap.add_argument("--skip-ours", action="store_true", help="leave out MirrorScope's analyzer")
    ap.add_argument("--skip-naive", action="store_true", help="leave out the dpkt baseline")
    ap.add_argument("--skip-go", action="store_true", help="leave out the Go (gopacket) peer")
    ap.add_argument("--skip-health-baseline", action="store_true",
                    help="leave out ours without TCP health (--no-tcp-health), the baseline of "
                         "the ours/ours-nohealth ratio")
    ap.add_argument("--no-half", action="store_true", help="skip the memory-flatness run on half the capture")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the median wall time is kept")
    ap.add_argument("--core", type=int, default=0, help="CPU core to pin every contender to (default 0)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the contenders to one core")
    ap.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    core = None if args.no_pin else args.core
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    try:
        return run(args, core)
    except BenchError as e:
        print(f"bench_analyze: error: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, core: int | None) -> int:
    capture = args.capture.resolve()
    ensure_capture(capture, args.min_packets)
    try:
        packets = pcaputil.count_packets(str(capture))
    except pcaputil.PcapFormatError as e:
        raise BenchError(f"{capture}: {e}") from e
    if packets == 0:
        raise BenchError(f"{capture} holds no packets")
    size = capture.stat().st_size
    log(f"capture {capture}: {packets:,} packets, {size / 1e6:.1f} MB")

    contenders: list[tuple[str, str, object]] = []
    ours_bin: Path | None = None
    if not args.skip_ours:
        ours_bin = find_ours()
    if not args.skip_naive:
        check_dpkt()
    go_bin = None if args.skip_go else ensure_go_binary()

    tmp = Path(tempfile.mkdtemp(prefix="mirrorscope-bench."))
    try:
        def ours_cmd(path: Path, *extra: str):
            def make():
                out = Path(tempfile.mkdtemp(prefix="ours-out.", dir=tmp))
                return [str(ours_bin), "analyze", str(path), "--out", str(out), "--no-progress",
                        "--no-http", "--no-detect", *extra], out
            return make

        def ours_nohealth_cmd(path: Path):
            return ours_cmd(path, "--no-tcp-health")

        def naive_cmd(path: Path):
            return lambda: ([sys.executable, str(BENCH / "naive_dpkt.py"), str(path)], None)

        def go_cmd(path: Path):
            return lambda: ([str(go_bin), str(path)], None)

        if ours_bin:
            contenders.append(("ours", "MirrorScope (mirrorscope analyze)", ours_cmd))
            if not args.skip_health_baseline:
                contenders.append(("ours-nohealth", "MirrorScope without TCP health",
                                   ours_nohealth_cmd))
        if not args.skip_naive:
            contenders.append(("naive", "naive dpkt loop (bench/naive_dpkt.py)", naive_cmd))
        if go_bin:
            contenders.append(("go", "gopacket webinar loop (bench/go-webinar)", go_cmd))
        if not contenders:
            raise BenchError("nothing to run: every contender was skipped")

        warm_cache(capture)
        load_before = os.getloadavg()[0]
        if load_before > 0.5:
            log(f"warning: load average {load_before:.2f} before the runs: other work on this machine "
                f"will slow the contenders down unevenly; compare cpu s, or use --repeat 3")
        results: dict[str, dict] = {}
        labels: dict[str, str] = {}
        factories = {}
        for key, label, factory in contenders:
            labels[key] = label
            factories[key] = factory
            results[key] = measure(key, factory(capture), args.repeat, core, tmp, packets)

        # memory flatness: the same tool (ours, or the first one run) on the first half of the capture
        flat = None
        if not args.no_half:
            flat_key = "ours" if "ours" in results else next(iter(results))
            half_n = packets // 2
            half = tmp / "half.pcap"
            pcaputil.write_prefix(str(capture), str(half), half_n)
            h = measure(f"{flat_key}-half", factories[flat_key](half), args.repeat, core, tmp, half_n)
            full_mb, half_mb = results[flat_key]["peak_rss_mb"], h["peak_rss_mb"]
            flat = {
                "tool": flat_key,
                "full_packets": packets, "full_peak_rss_mb": full_mb,
                "half_packets": half_n, "half_peak_rss_mb": half_mb,
                "full_over_half": round(full_mb / half_mb, 3) if half_mb else None,
                "half_wall_s": h["wall_s"],
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = {}
    if "ours" in results:
        for peer in ("naive", "go"):
            if peer in results:
                ratios[f"ours_over_{peer}_packets_per_s"] = round(
                    results["ours"]["packets_per_s"] / results[peer]["packets_per_s"], 3)
                ratios[f"ours_over_{peer}_cpu"] = round(
                    results[peer]["cpu_s"] / results["ours"]["cpu_s"], 3) if results["ours"]["cpu_s"] else None
                ratios[f"{peer}_over_ours_peak_rss"] = round(
                    results[peer]["peak_rss_mb"] / results["ours"]["peak_rss_mb"], 3)

    if "ours" in results and "ours-nohealth" in results:
        # What TCP health costs flows-only mode (issue 19's target: <= 1.15x).
        ratios["ours_over_nohealth_wall"] = round(
            results["ours"]["wall_s"] / results["ours-nohealth"]["wall_s"], 3)
        ratios["ours_over_nohealth_cpu"] = round(
            results["ours"]["cpu_s"] / results["ours-nohealth"]["cpu_s"], 3) \
            if results["ours-nohealth"]["cpu_s"] else None

    # print the table
    pin = f"pinned to core {core}" if core is not None else "not pinned"
    print(f"\ncapture: {capture}  ({packets:,} packets, {size / 1e6:.1f} MB)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; each contender {pin}; "
          f"median of {args.repeat} run(s)\n")
    hdr = f"{'contender':<44} {'wall s':>8} {'cpu s':>8} {'packets/s':>12} {'peak RSS MB':>12} {'flows':>8}"
    print(hdr)
    print("-" * len(hdr))
    for key, res in results.items():
        flows = res.get("reported_flows", "-")
        print(f"{labels[key]:<44} {res['wall_s']:>8.2f} {res['cpu_s']:>8.2f} "
              f"{fmt_rate(res['packets_per_s']):>12} {res['peak_rss_mb']:>12.1f} {flows!s:>8}")
    print()
    for peer in ("naive", "go"):
        k = f"ours_over_{peer}_packets_per_s"
        if k in ratios:
            cpu = ratios.get(f"ours_over_{peer}_cpu")
            print(f"ours/{peer}: {ratios[k]:.2f}x the packets/s "
                  f"({'faster' if ratios[k] >= 1 else 'slower'}; by CPU time "
                  f"{'-' if cpu is None else f'{cpu:.2f}x'}); "
                  f"{peer} uses {ratios[f'{peer}_over_ours_peak_rss']:.2f}x our peak RSS")
    if "ours_over_nohealth_wall" in ratios:
        print(f"ours/ours-nohealth: TCP health costs {ratios['ours_over_nohealth_wall']:.3f}x "
              f"the wall time (CPU {ratios['ours_over_nohealth_cpu']}x) of flows-only mode "
              f"(target <= 1.15x)")
    if "ours" not in results:
        print("ours: skipped (no ratios)")
    if "naive" in results and "go" in results:
        print(f"go/naive: {results['go']['packets_per_s'] / results['naive']['packets_per_s']:.2f}x the packets/s")
    if "ours" in results and any(k in results for k in ("naive", "go")):
        print("flows: ours counts flow records (a 5-tuple reused after a close, or a flow cut by a "
              "timeout, is a new record); the peers count distinct 5-tuples")
    f_naive = results.get("naive", {}).get("reported_flows")
    f_go = results.get("go", {}).get("reported_flows")
    if f_naive is not None and f_go is not None and f_naive != f_go:
        print(f"WARNING: the peers disagree on the flow count: naive {f_naive}, go {f_go}")
    for key, res in results.items():
        rp = res.get("reported_packets")
        if rp is not None and rp != packets:
            print(f"WARNING: {key} reports {rp:,} packets, the capture holds {packets:,}")
    byts = {k: r["reported_bytes"] for k, r in results.items() if r.get("reported_bytes") is not None}
    if len(set(byts.values())) > 1:
        print(f"WARNING: the contenders disagree on the inner IP bytes: {byts}")
    if flat:
        print(f"\nmemory flatness ({flat['tool']}): peak RSS {flat['full_peak_rss_mb']:.1f} MB on "
              f"{flat['full_packets']:,} packets vs {flat['half_peak_rss_mb']:.1f} MB on the first "
              f"{flat['half_packets']:,}: full/half = {flat['full_over_half']:.2f} "
              f"(1.00 = flat; 2.00 = grows with the capture)")

    result = {
        "capture": str(capture), "packets": packets, "capture_bytes": size,
        "cpu": cpu_model(), "cores": os.cpu_count(), "pinned_core": core, "repeat": args.repeat,
        "python": sys.version.split()[0], "loadavg_before": round(load_before, 2),
        "loadavg_after": round(os.getloadavg()[0], 2), "results": results, "ratios": ratios,
        "memory_flatness": flat, "unix_time": int(time.time()),
    }
    line = json.dumps(result, separators=(",", ":"))
    print("\n" + line)
    if args.json_out:
        args.json_out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
