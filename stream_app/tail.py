"""`mirrorscope tail TOPIC`: watch a result topic of the distributed mode (mirrorscope.flows,
.http, .alerts, .dns, .tls, .ssh: one msgpack map per record, as the worker publishes them) as JSON lines or one
readable line per record.

It reads with kafka-python without a consumer group (every partition assigned, no offsets
committed), so watching never disturbs the sinks. A message that is not a record is counted
and reported on stderr, never fatal.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time

import click

log = logging.getLogger("mirrorscope.tail")

from schemas.kinds import KINDS  # noqa: E402

ALIASES = {k.name: k.topic for k in KINDS}
TIME_KEYS = {"start", "end", "ts", "start_time", "end_time", "window_start", "window_end"}


def _t(v) -> str:
    if v is None:
        return "-"
    return dt.datetime.fromtimestamp(v, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _bytes(n: int) -> str:
    return f"{n} B" if n < 1000 else f"{n / 1000:.1f} KB" if n < 1e6 else f"{n / 1e6:.1f} MB"


def line(rec: dict) -> str:
    """One human line for a flow, HTTP, DNS, TLS, SSH or alert record."""
    from stream_app.core.summary import proto_name
    if "flow_id" in rec:
        start = rec.get("start_time") or rec.get("start")
        return (f"{_t(start)} flow {proto_name(rec['protocol'])} {rec['srcaddr']}:{rec['srcport']}"
                f" -> {rec['dstaddr']}:{rec['dstport']} {rec['conn_state']} {rec['packets']} pkts"
                f" {_bytes(rec['bytes'])} {rec['duration']:.3f} s ({rec['end_reason']})"
                + (f" {rec['app_proto']}" if rec.get("app_proto") else ""))
    if "http_id" in rec:
        lat = rec.get("latency")
        return (f"{_t(rec['ts'])} http {rec['srcaddr']} -> {rec['dstaddr']}:{rec['dstport']} "
                f"{rec.get('method') or '-'} {rec.get('host') or ''}{rec.get('uri') or ''} "
                f"{rec.get('status_code') or '-'}"
                + (f" {lat * 1000:.1f} ms" if lat is not None else "")
                + (f" [{','.join(rec['tags'])}]" if rec.get("tags") else ""))
    if "dns_id" in rec:
        rtt = rec.get("rtt")
        answers = rec.get("answers") or []
        return (f"{_t(rec['ts'])} dns {rec['srcaddr']} -> {rec['dstaddr']}:{rec['dstport']} "
                f"{rec.get('transport', '')} {rec.get('qtype_name') or rec.get('qtype') or '-'} "
                f"{rec.get('query') or '-'} {rec.get('rcode_name') or '-'}"
                + (f" {len(answers)} answer(s): " + ", ".join(str(a.get("data")) for a in answers[:3])
                   if answers else "")
                + (f" {rtt * 1000:.1f} ms" if rtt is not None else "")
                + (f" [{','.join(rec['tags'])}]" if rec.get("tags") else ""))
    if "tls_id" in rec:
        chain = rec.get("cert_chain") or []
        return (f"{_t(rec['ts'])} tls {rec['srcaddr']} -> {rec['dstaddr']}:{rec['dstport']} "
                f"{rec.get('version') or '-'} {rec.get('server_name') or '-'} "
                f"{rec.get('cipher') or '-'}"
                + (f" alpn={rec['alpn']}" if rec.get("alpn") else "")
                + (f" cert={chain[0].get('subject')}" if chain else "")
                + (" resumed" if rec.get("resumed") else "")
                + ("" if rec.get("established") else " not-established")
                + (f" [{','.join(rec['tags'])}]" if rec.get("tags") else ""))
    if "ssh_id" in rec:
        return (f"{_t(rec['ts'])} ssh {rec['srcaddr']} -> {rec['dstaddr']}:{rec['dstport']} "
                f"{rec.get('client') or '-'} / {rec.get('server') or '-'}"
                + (f" hassh={rec['hassh']}" if rec.get("hassh") else "")
                + (f" [{','.join(rec['tags'])}]" if rec.get("tags") else ""))
    if "alert_id" in rec:
        return (f"{_t(rec['ts'])} ALERT {rec['severity']} {rec['type']} "
                f"{rec.get('source') or '-'}: {rec.get('summary', '')}")
    return str(rec)


def readable(rec: dict) -> dict:
    return {k: (_t(v) if k in TIME_KEYS and isinstance(v, (int, float)) else v)
            for k, v in rec.items()}


class Tail:
    def __init__(self, bootstrap: str, topics: list[str], from_beginning: bool = False,
                 consumer=None, **kafka_kw):
        if consumer is None:
            from kafka import KafkaConsumer
            consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                                     enable_auto_commit=False, **kafka_kw)
        self.consumer = consumer
        self.topics = topics
        self.from_beginning = from_beginning
        self.bad = 0
        self._assigned = False

    def _assign(self, timeout: float) -> None:
        from kafka import TopicPartition
        deadline = time.monotonic() + timeout
        while True:
            parts = []
            missing = []
            for t in self.topics:
                ps = self.consumer.partitions_for_topic(t)
                if ps:
                    parts += [TopicPartition(t, p) for p in sorted(ps)]
                else:
                    missing.append(t)
            if not missing:
                break
            if time.monotonic() > deadline:
                raise click.ClickException(f"no such topic: {', '.join(missing)}")
            time.sleep(0.2)
        self.consumer.assign(parts)
        if self.from_beginning:
            self.consumer.seek_to_beginning(*parts)
        else:
            self.consumer.seek_to_end(*parts)
            for p in parts:  # resolve "end" now: records sent from here on are shown
                self.consumer.position(p)
        self._assigned = True
        click.echo(f"watching {', '.join(self.topics)} ({len(parts)} partitions) from the "
                   + ("beginning" if self.from_beginning else "end"), err=True)

    def records(self, max_records: int | None = None, idle_exit: float | None = None,
                metadata_timeout: float = 10.0):
        """Yield (topic, partition, offset, record dict) as they arrive."""
        import msgspec
        if not self._assigned:
            self._assign(metadata_timeout)
        n = 0
        last = time.monotonic()
        while True:
            batch = self.consumer.poll(timeout_ms=200)
            if not batch:
                if idle_exit is not None and time.monotonic() - last >= idle_exit:
                    return
                continue
            last = time.monotonic()
            for tp, msgs in sorted(batch.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
                for m in msgs:
                    try:
                        rec = msgspec.msgpack.decode(m.value)
                        if not isinstance(rec, dict):
                            raise ValueError(f"a {type(rec).__name__}, not a record")
                    except (msgspec.DecodeError, ValueError, TypeError) as exc:
                        self.bad += 1
                        log.warning("skipped a message that is not a record",
                                    extra={"topic": tp.topic, "partition": tp.partition,
                                           "offset": m.offset, "error": str(exc)})
                        continue
                    yield tp.topic, tp.partition, m.offset, rec
                    n += 1
                    if max_records is not None and n >= max_records:
                        return

    def close(self) -> None:
        self.consumer.close()


@click.command("tail")
@click.argument("topics", nargs=-1, required=True)
@click.option("--bootstrap", envvar="MIRRORSCOPE_KAFKA_BOOTSTRAP", default="localhost:9092",
              show_default=True, help="Kafka bootstrap servers (MIRRORSCOPE_KAFKA_BOOTSTRAP).")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record (default: "
                                                      "only records that arrive from now on).")
@click.option("--format", "fmt", type=click.Choice(["line", "json"]), default="line",
              show_default=True, help="One readable line per record, or the record as JSON.")
@click.option("--readable-times", "-t", "times", is_flag=True,
              help="JSON: Unix-seconds fields as UTC date-times.")
@click.option("--max", "max_records", type=int, help="Stop after this many records.")
@click.option("--idle-exit", type=float, help="Stop after this many seconds without a record.")
def tail(topics, bootstrap, from_beginning, fmt, times, max_records, idle_exit) -> None:
    """Print the records of result TOPICS as they arrive (`flows`, `http`, `alerts`, `dns`,
    `tls`, `ssh` stand for mirrorscope.flows, .http ...). Reads every partition without a consumer group: it
    commits nothing and does not take partitions from the sinks."""
    import orjson
    names = [ALIASES.get(t, t) for t in topics]
    try:
        t = Tail(bootstrap, names, from_beginning)
    except Exception as exc:  # kafka.errors.NoBrokersAvailable ...
        raise click.ClickException(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    out = sys.stdout
    try:
        for _topic, _part, _off, rec in t.records(max_records, idle_exit):
            if fmt == "json":
                out.write(orjson.dumps(readable(rec) if times else rec).decode() + "\n")
            else:
                out.write(line(rec) + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        t.close()
        if t.bad:
            click.echo(f"skipped {t.bad} message(s) that were not records", err=True)
