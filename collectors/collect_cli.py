"""`mirrorscope collect`: the live collector (registered on the `mirrorscope` group by
stream_app/cli/__init__.py)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click


def _overrides(**kw) -> dict:
    """Command-line flags -> the nested settings they override (None: not given)."""
    out: dict = {}

    def put(path: str, value) -> None:
        if value is None or value == ():
            return
        d = out
        parts = path.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = list(value) if isinstance(value, tuple) else value

    for path, value in kw.items():
        put(path, value)
    return out


@click.command("collect")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML settings file (docs/collectors.md). MIRRORSCOPE_* environment "
                   "variables override it; these flags override both.")
@click.option("--transport", type=click.Choice(["kafka", "kinesis", "null", "embedded"]),
              help="Where records go [default: kafka].")
@click.option("--embedded", is_flag=True, default=None,
              help="Feed the stream core in this process (same as --transport embedded); "
                   "needs --out.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder of embedded mode (flows.jsonl, collect-summary.json).")
@click.option("--pcap", "pcaps", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Replay capture file(s) into the transport instead of listening (repeatable).")
@click.option("--end-marker/--no-end-marker", default=True, show_default=True,
              help="After a --pcap replay, tell the workers the capture ended, so they report "
                   "its open flows as `mirrorscope analyze` does (turn off when live "
                   "collectors share the topic).")
@click.option("--listen", "address", help="Address to bind [default: 0.0.0.0].")
@click.option("--port", type=int, help="UDP port [default: 4789].")
@click.option("--processes", type=int, help="Worker processes sharing the port (0: one per CPU).")
@click.option("--source-cidr", "source_cidrs", multiple=True,
              help="Accept VXLAN only from this CIDR (repeatable). Without one, only from the "
                   "mirror sources --discover-vnis finds; anything else is refused and counted.")
@click.option("--accept-any-source", is_flag=True, default=None,
              help="Accept VXLAN from any source: spoofed UDP then injects flows (trials only).")
@click.option("--vni", "vnis", multiple=True, type=int,
              help="Accept only this VNI (repeatable; default: all).")
@click.option("--filter-rules", "filter_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML/JSON list of mirror filter rules (the Terraform module's format).")
@click.option("--payload-ports", help="Comma-separated ports whose payload is kept.")
@click.option("--snap-len", type=int, help="Most payload bytes a record keeps.")
@click.option("--kafka-bootstrap", help="Kafka bootstrap servers (host:port,...).")
@click.option("--kafka-topic", help="Kafka topic [default: mirrorscope.packets].")
@click.option("--kinesis-stream", help="Kinesis stream name.")
@click.option("--kinesis-region", help="Kinesis region.")
@click.option("--kinesis-endpoint-url", help="Kinesis endpoint (tests: moto).")
@click.option("--vni-map", type=click.Path(dir_okay=False, path_type=Path),
              help="VNI enrichment mapping file (YAML/JSON).")
@click.option("--discover-vnis", is_flag=True, default=None,
              help="Discover VNIs through the EC2 API (DescribeTrafficMirrorSessions).")
@click.option("--buffer-bytes", type=int, help="Bound on data waiting for the destination.")
@click.option("--batch-records", type=int, help="Records per batch at most.")
@click.option("--linger-ms", type=float, help="Longest a record waits in its batch.")
@click.option("--health-port", type=int, help="Health check port [default: 8081] (0: any free).")
@click.option("--metrics-port", type=int, help="Prometheus port [default: 9108] (0: any free).")
@click.option("--idle-timeout", type=float, help="Embedded: as `mirrorscope analyze`.")
@click.option("--tcp-idle-timeout", type=float, help="Embedded: as `mirrorscope analyze`.")
@click.option("--active-timeout", type=float, help="Embedded: as `mirrorscope analyze`.")
@click.option("--close-linger", type=float, help="Embedded: as `mirrorscope analyze`.")
@click.option("--http/--no-http", "http", default=None,
              help="Embedded: HTTP/1.x transactions on any port [default: on].")
@click.option("--keep-credentials", is_flag=True, default=None,
              help="Embedded: keep Authorization and Cookie values (redacted by default).")
@click.option("--detect/--no-detect", "detect", default=None,
              help="Embedded: run the detectors, OUT/alerts.jsonl [default: on].")
@click.option("--detect-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Embedded: detector thresholds (JSON/YAML; docs/detectors/).")
@click.option("--status-interval", type=float,
              help="Embedded: seconds between one-line status logs [default: 10; 0: off].")
@click.option("--rotate-mb", type=float, help="Embedded: rotate output files at this size [64].")
@click.option("--rotate-seconds", type=float,
              help="Embedded: rotate output files at this age [3600].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--print-config", is_flag=True, help="Print the effective settings and exit.")
def collect(config_path, transport, embedded, out_dir, pcaps, end_marker, address, port, processes,
            source_cidrs, accept_any_source, vnis, filter_file, payload_ports, snap_len, kafka_bootstrap,
            kafka_topic, kinesis_stream, kinesis_region, kinesis_endpoint_url, vni_map,
            discover_vnis, buffer_bytes, batch_records, linger_ms, health_port, metrics_port,
            idle_timeout, tcp_idle_timeout, active_timeout, close_linger, http, keep_credentials,
            detect, detect_config, status_interval, rotate_mb, rotate_seconds,
            log_level, print_config) -> None:
    """Receive VXLAN mirror traffic on UDP 4789, key each packet by its inner flow and publish
    batches to Kafka or Kinesis (or, with --embedded, analyze them in process).

    Prints a JSON summary of the counters on stdout when it stops (SIGTERM/SIGINT: it drains
    its sockets and flushes first)."""
    from collectors import logs
    from collectors.config import ConfigError, load_config, to_dict

    if embedded:
        transport = "embedded"
    rules = None
    if filter_file is not None:
        import yaml
        try:
            rules = yaml.safe_load(filter_file.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise click.BadParameter(str(exc), param_hint="--filter-rules") from exc
        if isinstance(rules, dict) and "rules" in rules:
            rules = rules["rules"]
    ports = None
    if payload_ports is not None:
        try:
            ports = [int(p) for p in payload_ports.split(",") if p.strip()]
        except ValueError as exc:
            raise click.BadParameter("comma-separated port numbers",
                                     param_hint="--payload-ports") from exc
    over = _overrides(**{
        "transport": transport, "embedded.out_dir": str(out_dir) if out_dir else None,
        "listen.address": address, "listen.port": port, "processes": processes,
        "source_cidrs": source_cidrs, "accept_any_source": accept_any_source, "vnis": vnis, "filter.rules": rules,
        "payload.ports": ports, "payload.max_bytes": snap_len,
        "kafka.bootstrap": kafka_bootstrap, "kafka.topic": kafka_topic,
        "kinesis.stream": kinesis_stream, "kinesis.region": kinesis_region,
        "kinesis.endpoint_url": kinesis_endpoint_url,
        "enrichment.mapping_file": str(vni_map) if vni_map else None,
        "enrichment.discover": discover_vnis, "buffer.max_bytes": buffer_bytes,
        "batch.max_records": batch_records, "batch.linger_ms": linger_ms,
        "health.port": health_port, "metrics.port": metrics_port, "log_level": log_level,
        "embedded.idle_timeout": idle_timeout, "embedded.tcp_idle_timeout": tcp_idle_timeout,
        "embedded.active_timeout": active_timeout, "embedded.close_linger": close_linger,
        "embedded.http": http, "embedded.keep_credentials": keep_credentials,
        "embedded.detect": detect,
        "embedded.detect_config": str(detect_config) if detect_config else None,
        "embedded.status_s": status_interval, "embedded.rotate_mb": rotate_mb,
        "embedded.rotate_s": rotate_seconds,
    })
    try:
        cfg = load_config(config_path, overrides=over)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if cfg.transport == "embedded":
        if cfg.embedded.http and payload_ports is None:
            # HTTP is recognised on any port, as `analyze` does: keep every TCP payload.
            cfg.payload.all_ports = True
        load_detect = _embedded("embedded_detect_config")
        if cfg.embedded.detect and cfg.embedded.detect_config and load_detect is not None:
            try:
                load_detect(cfg.embedded.detect_config)
            except ValueError as exc:
                click.echo(f"error: embedded.detect_config: {exc}", err=True)
                sys.exit(2)
    if print_config:
        click.echo(json.dumps(to_dict(cfg), indent=2))
        return
    if cfg.transport == "embedded" and cfg.processes != 1 and not pcaps:
        click.echo("error: embedded mode runs one process (both directions of a flow must "
                   "meet in one flow table): use --processes 1", err=True)
        sys.exit(2)
    if cfg.enrichment.mapping_file:  # fail here, not in every worker
        from collectors.enrich import load_mapping_file
        try:
            load_mapping_file(cfg.enrichment.mapping_file)
        except (OSError, ValueError, TypeError) as exc:
            click.echo(f"error: enrichment.mapping_file: {exc}", err=True)
            sys.exit(2)
    logs.setup(cfg.log_level, pid=os.getpid(), role="collector")
    log = logging.getLogger("mirrorscope.collect")
    log.info("configuration", extra={"config": to_dict(cfg)})
    if cfg.accept_any_source and not pcaps:
        log.warning("accept_any_source: accepting VXLAN from any source (spoofable)")
    elif not cfg.source_cidrs and not cfg.enrichment.discover and not pcaps:
        # default-deny with nothing allowed would refuse every datagram: say so now
        click.echo("error: no mirror sources allowed: give source_cidrs (--source-cidr), turn "
                   "on EC2 discovery of the mirror sessions (--discover-vnis), list their "
                   "source_ip in the VNI map, or accept any source (--accept-any-source)",
                   err=True)
        sys.exit(2)

    if pcaps:
        from collectors.capture import CaptureError
        from collectors.publishers import PublisherNotReady
        from collectors.stats import reconcile
        from collectors.worker import replay
        try:
            snap = replay(cfg, [str(p) for p in pcaps], end_marker=end_marker,
                          embedded=_embedded("embedded_publisher"))
        except CaptureError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except PublisherNotReady as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3)
        problems = reconcile(snap)
        summary = {"totals": snap, "reconciled": not problems, "problems": problems}
        _write_summary(cfg, summary)
        click.echo(json.dumps(summary))
        return

    from collectors.supervisor import Supervisor
    sup = Supervisor(cfg, embedded=_embedded("embedded_publisher"))
    summary = sup.run()
    _write_summary(cfg, summary)
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    if sup.fatal:
        sys.exit(2)


def _embedded(name: str):
    """What the program that runs this command provides for embedded mode (the ``mirrorscope``
    group puts stream_app's publisher, detector-config check and final summary in ``ctx.obj``:
    collectors never import the stream app); None without one."""
    obj = click.get_current_context().find_root().obj
    return obj.get(name) if isinstance(obj, dict) else None


def _write_summary(cfg, summary: dict) -> None:
    if cfg.transport == "embedded" and cfg.embedded.out_dir:
        p = Path(cfg.embedded.out_dir) / "collect-summary.json"
        p.write_text(json.dumps(summary, indent=2) + "\n")
        # The flows/HTTP/alerts summary `analyze` prints, with the final counters (stderr:
        # stdout carries the JSON above).
        finish_summary = _embedded("embedded_finish")
        if finish_summary is not None:
            finish_summary(cfg.embedded.out_dir, summary.get("totals") or {})
