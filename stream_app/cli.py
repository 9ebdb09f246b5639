"""The ``mirrorscope`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from collectors.capture import CaptureError
from collectors.decode import Decoder
from stream_app.core.flowtable import FlowConfig

err = Console(stderr=True, soft_wrap=True)
_DEFAULTS = FlowConfig()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mirrorscope")
def main() -> None:
    """MirrorScope: flow records and HTTP transactions from AWS VPC Traffic Mirroring traffic.

    Start with `mirrorscope analyze CAPTURE --out DIR`: it needs no broker, Redis or AWS.
    `collect` runs the live collector; `sink` delivers results to S3 and CloudWatch."""


@main.command()
@click.argument("captures", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for flows.jsonl and summary.json (created if missing).")
@click.option("--idle-timeout", default=_DEFAULTS.idle_timeout, show_default=True, type=float,
              help="Seconds without a packet that end a flow.")
@click.option("--tcp-idle-timeout", default=_DEFAULTS.tcp_idle_timeout, show_default=True, type=float,
              help="Seconds without a packet that end a TCP connection both sides spoke on.")
@click.option("--active-timeout", default=_DEFAULTS.active_timeout, show_default=True, type=float,
              help="Seconds after which a long flow is reported and continued in a new record "
                   "(VPC Flow Logs' 1-minute aggregation interval).")
@click.option("--close-linger", default=_DEFAULTS.close_linger, show_default=True, type=float,
              help="Seconds a flow stays open after FIN/FIN or RST for its last packets.")
@click.option("--max-flows", default=_DEFAULTS.max_flows, show_default=True, type=click.IntRange(1),
              help="Flows held in memory at once; past it the oldest is ended early "
                   "(end_reason evicted, counted in the summary).")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar (default: when stderr is a terminal).")
@click.option("--http/--no-http", "http", default=True, show_default=True,
              help="Extract HTTP/1.x transactions to OUT/http.jsonl (on any port).")
@click.option("--keep-credentials", is_flag=True,
              help="Keep Authorization, Proxy-Authorization, Cookie and Set-Cookie values "
                   "(by default they are redacted).")
@click.option("--s3-bucket", metavar="BUCKET",
              help="Also write the records to S3 as Parquet, partitioned for Athena "
                   "(prefix, KMS key and endpoint from MIRRORSCOPE_S3_*; see docs/athena.md).")
@click.option("--cloudwatch", is_flag=True,
              help="Also send metrics and alert events to CloudWatch (MIRRORSCOPE_CLOUDWATCH_*).")
@click.option("--detect/--no-detect", "detect", default=True, show_default=True,
              help="Run the detectors (port scans, sweeps, SYN floods, unanswered connections, "
                   "volume spikes, beaconing, HTTP attacks) and write OUT/alerts.jsonl.")
@click.option("--detect-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON or YAML file with detector thresholds, e.g. "
                   "{\"port_scan\": {\"min_ports\": 30}, \"beaconing\": null} "
                   "(docs/detectors/).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--pure-python", is_flag=True, hidden=True,
              help="Decode without the C fast path (for comparisons).")
def analyze(captures: tuple[Path, ...], out_dir: Path, idle_timeout: float, tcp_idle_timeout: float,
            active_timeout: float,
            close_linger: float, max_flows: int, progress: bool | None, http: bool, keep_credentials: bool,
            s3_bucket: str | None, cloudwatch: bool, detect: bool, detect_config: Path | None,
            as_json: bool, pure_python: bool) -> None:
    """Read capture files (pcap or pcapng, optionally .gz; VXLAN/GENEVE-encapsulated mirror
    traffic or plain) and write one flow record per flow to OUT/flows.jsonl and one record per
    HTTP transaction to OUT/http.jsonl; alerts to OUT/alerts.jsonl."""
    from stream_app.core.http import HttpConfig
    from stream_app.core.l7 import L7Config
    from stream_app.embedded import analyze as run, payload_policy

    for t, name in ((idle_timeout, "--idle-timeout"), (tcp_idle_timeout, "--tcp-idle-timeout"),
                    (active_timeout, "--active-timeout"),
                    (close_linger, "--close-linger")):
        if t <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    cfg = FlowConfig(idle_timeout=idle_timeout, tcp_idle_timeout=tcp_idle_timeout,
                     active_timeout=active_timeout,
                     close_linger=close_linger, max_flows=max_flows)
    l7 = L7Config(http=HttpConfig(keep_credentials=keep_credentials)) if http else None
    dcfg = _detect_config(detect_config) if detect else None
    extra = None
    if s3_bucket or cloudwatch:
        from stream_app.sinks.tee import aws_outputs
        extra = aws_outputs(s3_bucket=s3_bucket, cloudwatch=cloudwatch)
    _check_out_dir(out_dir)
    show = err.is_terminal if progress is None else progress
    total = sum(p.stat().st_size for p in captures if p.is_file())
    try:
        if show:
            with Progress(TextColumn("[bold]analyzing"), BarColumn(), DownloadColumn(),
                          TimeRemainingColumn(), console=err, transient=True) as bar:
                task = bar.add_task("read", total=total)
                res = run(list(captures), out_dir, cfg, Decoder(payload=payload_policy(l7)),
                          fast=not pure_python, progress=lambda n: bar.advance(task, n), l7=l7,
                          extra_outputs=extra, detect=dcfg)
        else:
            res = run(list(captures), out_dir, cfg, Decoder(payload=payload_policy(l7)),
                      fast=not pure_python, l7=l7, extra_outputs=extra, detect=dcfg)
    except CaptureError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    except OSError as exc:
        err.print(f"[red]error:[/red] cannot write to {out_dir}: {exc.strerror or exc}", highlight=False)
        sys.exit(2)
    if as_json:
        import orjson
        sys.stdout.write(orjson.dumps(res.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_summary(res)


def _detect_config(path: Path | None):
    from stream_app.core.detectors import DetectConfig
    if path is None:
        return DetectConfig()
    import yaml
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return DetectConfig.from_dict(data)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--detect-config") from None


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an unusable output folder before reading anything."""
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        err.print(f"[red]error:[/red] --out {out_dir}: {probe} is not a folder", highlight=False)
        sys.exit(2)
    import os
    if not os.access(probe, os.W_OK | os.X_OK):
        err.print(f"[red]error:[/red] --out {out_dir}: {probe} is not writable", highlight=False)
        sys.exit(2)


def _print_summary(res) -> None:
    out = Console()
    t = Table(title="Packets", show_header=False, title_justify="left")
    t.add_row("frames read", f"{res.frames:,}")
    t.add_row("decoded", f"{res.decoded:,}")
    t.add_row("dropped", f"{res.dropped:,}")
    for reason, n in sorted(res.drops.items(), key=lambda kv: -kv[1]):
        if n:
            t.add_row(f"  {reason}", f"{n:,}")
    out.print(t)

    fs = res.flows
    out.print(f"[bold]Flows[/bold]: {fs.flows:,} ({fs.packets:,} packets, {fs.bytes:,} IP bytes)")
    t = Table()
    t.add_column("protocol")
    t.add_column("flows", justify="right")
    for proto, n in fs.by_proto.most_common():
        t.add_row(proto, f"{n:,}")
    out.print(t)
    if fs.vnis:
        out.print("VNIs: " + ", ".join(f"{v} ({n:,} flows)" for v, n in fs.vnis.most_common(10)))

    talkers = fs.top_talkers()
    if talkers:
        t = Table(title="Top talkers (bytes, both directions)", title_justify="left")
        t.add_column("source")
        t.add_column("destination")
        t.add_column("bytes", justify="right")
        for a, b, v in talkers:
            t.add_row(a, b, f"{v:,}")
        out.print(t)
    hs = res.http
    if hs.transactions:
        out.print(f"[bold]HTTP[/bold]: {hs.transactions:,} transactions")
        t = Table()
        t.add_column("status")
        t.add_column("count", justify="right")
        for cls, n in sorted(hs.by_class.items()):
            t.add_row(cls, f"{n:,}")
        out.print(t)
        if hs.hosts:
            out.print("Top hosts: " + ", ".join(f"{h} ({n:,})" for h, n in hs.hosts.most_common(5)))
    al = res.alerts
    if al.alerts:
        out.print(f"[bold red]Alerts[/bold red]: {al.alerts:,} ("
                  + ", ".join(f"{t} {n:,}" for t, n in al.by_type.most_common()) + ")")
        t = Table()
        for col in ("type", "severity", "source", "summary"):
            t.add_column(col)
        for a in al.first:
            t.add_row(a.type, a.severity, a.source or "-", a.summary)
        out.print(t)
        if al.alerts > len(al.first):
            out.print(f"... and {al.alerts - len(al.first):,} more in alerts.jsonl")
    else:
        out.print("[bold]Alerts[/bold]: " + ("none" if res.detect else "detectors off (--no-detect)"))
    for p in res.problems:
        err.print(f"[yellow]warning:[/yellow] {p}", highlight=False)
    out.print("wrote " + ", ".join(res.outputs.values()))


# The other commands live beside what they run; importing them here registers them (their
# modules import click only, so `mirrorscope --help` stays quick).
from collectors.collect_cli import collect  # noqa: E402
from stream_app.services.cli import services  # noqa: E402
from stream_app.sink_cli import sink  # noqa: E402
from stream_app.worker_cli import worker  # noqa: E402
from stream_app.kinesis_cli import kinesis_worker  # noqa: E402

main.add_command(collect)
main.add_command(services)
main.add_command(sink)
main.add_command(worker)
main.add_command(kinesis_worker)

if __name__ == "__main__":
    main()
