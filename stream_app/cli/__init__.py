"""The ``mirrorscope`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stream_app.core.flowtable import FlowConfig
from stream_app.lazycli import LazyConsole, LazyGroup
from stream_app.cli.options import protocols_option
from stream_app.redact_options import redact_options

# rich, the decoder and the other commands are imported when used, so `mirrorscope --help` and
# `analyze` start without paying for what they do not run (issue #12; tests/test_cli_startup.py).
err = LazyConsole(stderr=True, soft_wrap=True)
_DEFAULTS = FlowConfig()


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from stream_app.about import report
    click.echo(report())
    ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, whether the C fast paths are active, and the installed extras.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="MIRRORSCOPE_LOG_FORMAT",
              help="Logs on stderr as readable lines or JSON objects, for every command "
                   "[default: text on a terminal, else json].")
@click.pass_context
def main(ctx: click.Context, log_format: str | None) -> None:
    """MirrorScope: flow records and HTTP transactions from AWS VPC Traffic Mirroring traffic.

    Start with `mirrorscope analyze CAPTURE --out DIR`: it needs no broker, Redis or AWS.
    `collect` runs the live collector; `sink` delivers results to S3 and CloudWatch;
    `query`, `report` and `tail` look at the results."""
    import os

    # What any command writes (records, spools, state, logs, key files) is no one else's to
    # read: group at most, never other users of the host (issue 13).
    os.umask(os.umask(0o027) | 0o027)
    from stream_app.logredact import install
    install()  # log lines are redacted like records (URLs with tokens, password=...)
    from collectors import logs
    if log_format:  # for this process and the ones it starts (collector workers ...)
        os.environ[logs.FORMAT_ENV] = log_format
    logs.setup("info")  # commands with --log-level set it again
    # `collect --embedded` runs the stream core in the collector: handed over, not imported
    # by collectors/ (see stream_app/adapters/embedded_collect.py).
    ctx.ensure_object(dict).update(embedded_publisher=embedded_publisher,
                                   embedded_detect_config=embedded_detect_config,
                                   embedded_finish=embedded_finish)


# What `collect --embedded` is handed (loaded when used: `mirrorscope --help` and the other
# commands do not import the core). Module-level, so spawn can pickle them.
def embedded_publisher(*args, **kw):
    from stream_app.adapters.embedded_collect import EmbeddedPublisher
    return EmbeddedPublisher(*args, **kw)


def embedded_detect_config(path):
    from stream_app.livemode import detect_config
    return detect_config(path)


def embedded_finish(out_dir, totals: dict) -> None:
    from stream_app.livemode import finish_summary
    finish_summary(out_dir, totals)


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
              help="Application-layer analysis (HTTP/1.x, TLS, DNS, SSH on any port, by "
                   "content); --no-http: flow records only, payloads not kept.")
@protocols_option
@click.option("--keep-credentials", is_flag=True,
              help="Keep Authorization, Proxy-Authorization, Cookie and Set-Cookie values, "
                   "and credentials in URIs and Referer (by default they are redacted).")
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
@redact_options
@click.option("--pure-python", is_flag=True, hidden=True,
              help="Decode without the C fast path (for comparisons).")
def analyze(captures: tuple[Path, ...], out_dir: Path, idle_timeout: float, tcp_idle_timeout: float,
            active_timeout: float,
            close_linger: float, max_flows: int, progress: bool | None, http: bool, keep_credentials: bool,
            s3_bucket: str | None, cloudwatch: bool, detect: bool, detect_config: Path | None,
            as_json: bool, pure_python: bool, protocols: frozenset[str]) -> None:
    """Read capture files (pcap or pcapng, optionally .gz; VXLAN/GENEVE-encapsulated mirror
    traffic or plain) and write one flow record per flow to OUT/flows.jsonl and one record per
    HTTP transaction to OUT/http.jsonl; alerts to OUT/alerts.jsonl."""
    from collectors.capture import CaptureError
    from collectors.decode import Decoder
    from stream_app.core.http import HttpConfig
    from stream_app.core.l7 import L7Config
    from stream_app.adapters.embedded import analyze as run, payload_policy
    from stream_app.cli.options import detect_config_from

    for t, name in ((idle_timeout, "--idle-timeout"), (tcp_idle_timeout, "--tcp-idle-timeout"),
                    (active_timeout, "--active-timeout"),
                    (close_linger, "--close-linger")):
        if t <= 0:
            raise click.BadParameter("must be positive", param_hint=name)
    cfg = FlowConfig(idle_timeout=idle_timeout, tcp_idle_timeout=tcp_idle_timeout,
                     active_timeout=active_timeout,
                     close_linger=close_linger, max_flows=max_flows)
    from stream_app.redact_options import redact_config
    l7 = L7Config(http=HttpConfig(keep_credentials=keep_credentials,
                                  redact=redact_config()),
                  protocols=protocols) if http else None
    dcfg = detect_config_from(detect_config) if detect else None
    extra = None
    if s3_bucket or cloudwatch:
        from stream_app.sinks.tee import aws_outputs
        extra = aws_outputs(s3_bucket=s3_bucket, cloudwatch=cloudwatch)
    _check_out_dir(out_dir)
    show = err.is_terminal if progress is None else progress
    total = sum(p.stat().st_size for p in captures if p.is_file())
    try:
        if show:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
            with Progress(TextColumn("[bold]analyzing"), BarColumn(), DownloadColumn(),
                          TimeRemainingColumn(), console=err.get(), transient=True) as bar:
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
        from stream_app.summary_view import print_summary
        print_summary(res)


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


# The other commands live beside what they run and are imported only when one of them is invoked:
# name -> ("module:attribute", the one-line help `mirrorscope --help` lists).
COMMANDS = {
    "collect": ("collectors.collect_cli:collect",
                "Receive VXLAN mirror traffic on UDP 4789, key each packet by its inner flow and "
                "publish batches to Kafka or Kinesis..."),
    "services": ("stream_app.cli.devservices:services",
                 "Local Kafka, Redis and moto for trying the distributed mode (a development "
                 "command: needs a source checkout; see docs/distributed.md)."),
    "sink": ("stream_app.cli.sink:sink",
             "Deliver the stream app's results (the result topics) to AWS."),
    "worker": ("stream_app.cli.worker:worker",
               "Consume the packet topic with the stream core (a Faust app; one consumer group, as "
               "many workers as the topic has partitions)..."),
    "kinesis-worker": ("stream_app.cli.kinesis:kinesis_worker",
                       "Consume the collectors' Kinesis stream with the stream core: shards are "
                       "leased among the workers through Redis..."),
    "query": ("stream_app.query:query",
              "SQL over the results with DuckDB, tables as in Athena..."),
    "report": ("stream_app.report:report",
               "Write OUT (an .html file, or OUT/report.html for a folder): one self-contained "
               "page..."),
    "tail": ("stream_app.tail:tail", "Print the records of result TOPICS as they arrive..."),
}
main.lazy_commands.update(COMMANDS)

if __name__ == "__main__":
    main()
