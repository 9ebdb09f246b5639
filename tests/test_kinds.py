"""The result kinds (schemas/kinds.py) travel every path flows, HTTP and alerts travel: DNS
transactions, TLS handshakes and SSH sessions built by hand (tests.sink_helpers, real-looking
values, nested answers and certificate chains) go through the embedded files, the live and
folder outputs, the worker's result topics on a real Kafka broker (both producers), the
`mirrorscope sink s3` command into moto's S3 as Parquet, CloudWatch counts, `mirrorscope tail`
and `mirrorscope query`, and come back equal to what went in."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import uuid

import msgspec
import pyarrow.parquet as pq
import pytest

from schemas.kinds import BY_NAME, KINDS, NAMES
from stream_app.core.processor import Results
from tests.services.fixtures import kafka_broker  # noqa: F401
from tests.services.kafka_service import consume_all, create_topic
from tests.sink_helpers import (client, make_alert, make_dns, make_flow, make_http, make_ssh,
                                make_tls)

NEW = ("dns", "tls", "ssh")
JSONSCHEMA = os.path.join(os.path.dirname(__file__), "..", "schemas", "jsonschema")


def results(n: int = 12, base: int = 0) -> Results:
    """Every kind, each with records that exercise its nested and optional fields."""
    return Results(
        flows=[make_flow(base + i) for i in range(n)], http=[make_http(base + i) for i in range(n)],
        alerts=[make_alert(base + i) for i in range(2)],
        dns=[make_dns(base + i, answered=i % 5 != 4) for i in range(n)],
        tls=[make_tls(base + i, established=i % 6 != 5) for i in range(n)],
        ssh=[make_ssh(base + i) for i in range(n // 2)])


def by_id(kind: str, recs) -> dict:
    k = BY_NAME[kind]
    return {k.id_of(r): r for r in recs}


def read_jsonl(path, kind: str) -> list:
    dec = msgspec.json.Decoder(BY_NAME[kind].struct_type)  # strict: every field as typed
    return [dec.decode(x) for x in path.read_bytes().splitlines()]


# -- the registry ------------------------------------------------------------------------------

def test_every_record_list_of_results_is_a_kind_with_its_contract():
    assert [f.name for f in dataclasses.fields(Results)] == list(NAMES)
    for k in KINDS:
        fields = {f.name: f for f in msgspec.structs.fields(k.struct_type)}
        assert k.id_field in fields and k.time_field in fields, k.name
        assert os.path.exists(os.path.join(JSONSCHEMA, f"{k.schema}.json")), k.schema
        assert k.topic == f"mirrorscope.{k.name}" and k.env == f"MIRRORSCOPE_TOPIC_{k.name.upper()}"
    assert len(set(NAMES)) == len(NAMES)


# -- embedded ----------------------------------------------------------------------------------

def test_local_outputs_write_every_kind_and_the_summary_counts_them(tmp_path):
    from stream_app.adapters.embedded import AnalyzeResult, LocalOutputs
    out = LocalOutputs(tmp_path / "out")
    a, b = results(10), results(7, base=100)
    out.write(a)
    out.write(b)
    paths = out.close()
    assert set(paths) == set(NAMES)
    for kind in NAMES:
        want = getattr(a, kind) + getattr(b, kind)
        assert read_jsonl(tmp_path / "out" / f"{kind}.jsonl", kind) == want, kind
    res = AnalyzeResult(flows=out.summary, http=out.http_summary, alerts=out.alert_summary,
                        records=out.counts)
    j = res.to_json()
    assert (j["dns_transactions"], j["tls_handshakes"], j["ssh_sessions"]) == (17, 17, 8)
    assert j["records"] == {"flows": 17, "http": 17, "alerts": 4, "dns": 17, "tls": 17, "ssh": 8}


def test_summary_view_prints_the_new_counts(tmp_path):
    from rich.console import Console

    from stream_app.adapters.embedded import AnalyzeResult, LocalOutputs
    from stream_app.summary_view import print_summary
    out = LocalOutputs(tmp_path)
    out.write(results(9))
    res = AnalyzeResult(flows=out.summary, http=out.http_summary, alerts=out.alert_summary,
                        records=out.counts, outputs=out.close())
    con = Console(file=io.StringIO(), width=200)
    print_summary(res, out=con)
    text = con.file.getvalue()
    assert "DNS transactions: 9, TLS handshakes: 9, SSH sessions: 4" in text
    assert str(tmp_path / "dns.jsonl") in text


def test_live_outputs_write_every_kind(tmp_path):
    from stream_app.sinks.live import LiveOutputs
    out = LiveOutputs(tmp_path, flush_s=0)
    r = results(8)
    out.write(r)
    out.flush()
    paths = out.close()
    assert set(paths) == set(NAMES)
    for kind in NEW:
        assert read_jsonl(tmp_path / f"{kind}.jsonl", kind) == getattr(r, kind)
    assert out.counts.as_dict()["tls"] == 8


def test_folder_results_write_every_kind(tmp_path):
    from stream_app.runtime.outputs import FolderResults
    out = FolderResults(tmp_path)
    r = results(6)

    async def go():
        await out.publish("p0", r)
        await out.flush("p0")
    asyncio.run(go())
    out.close()
    assert out.written == {k: len(getattr(r, k)) for k in NAMES}
    for kind in NEW:
        assert read_jsonl(tmp_path / f"{kind}.jsonl", kind) == getattr(r, kind)


# -- distributed: encoding and both Kafka producers ---------------------------------------------

def test_encoded_results_are_keyed_by_id_and_decode_back():
    from stream_app.runtime.cores import encode_results, grouped
    r = results(5)
    enc = encode_results(r)
    assert {kind for kind, _, _ in enc} == set(NAMES)
    for kind, key, value in enc:
        rec = msgspec.msgpack.decode(value, type=BY_NAME[kind].struct_type)
        assert BY_NAME[kind].id_of(rec).encode() == key
        assert rec in getattr(r, kind)
    g = grouped(r, {k: 3 for k in NAMES})
    assert sum(len(v) for (kind, _), v in g.items() if kind == "dns") == len(r.dns)


def _consume(bootstrap: str, topics: dict[str, str], kinds=NAMES) -> dict[str, dict]:
    got = {}
    for kind in kinds:
        dec = msgspec.msgpack.Decoder(BY_NAME[kind].struct_type)
        msgs = consume_all(bootstrap, topics[kind], timeout=20, idle=0.5)
        recs = {}
        for m in msgs:
            rec = dec.decode(m.value)
            assert m.key.decode() == BY_NAME[kind].id_of(rec)
            recs[m.key.decode()] = rec
        got[kind] = recs
    return got


def _topics(bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    topics = {k: f"mirrorscope.{k}.{tag}" for k in NAMES}
    for t in topics.values():
        create_topic(bootstrap, t, 2)
    return topics


def test_kinesis_consumers_kafka_results_publish_every_kind(kafka_broker):  # noqa: F811
    """KafkaResults: what `mirrorscope kinesis-worker --kafka-bootstrap` publishes with."""
    from stream_app.runtime.outputs import KafkaResults
    topics = _topics(kafka_broker.bootstrap)
    out = KafkaResults(kafka_broker.bootstrap, topics)
    r = results(20)

    async def go():
        await out.publish("shard-0", r)
        await out.flush("shard-0")
    try:
        asyncio.run(go())
    finally:
        out.close()
    got = _consume(kafka_broker.bootstrap, topics)
    for kind in NAMES:
        assert got[kind] == by_id(kind, getattr(r, kind)), kind


def test_workers_result_producer_publishes_every_kind(kafka_broker):  # noqa: F811
    """ResultProducer: the Kafka worker's (aiokafka, batches per partition)."""
    from stream_app.adapters.faust_app import WorkerSettings
    from stream_app.adapters.kafka_results import ResultProducer
    topics = _topics(kafka_broker.bootstrap)
    assert set(WorkerSettings().topics) == set(NAMES)  # the worker's defaults cover every kind
    s = WorkerSettings(bootstrap=kafka_broker.bootstrap, topics=topics)
    r = results(30)

    async def go():
        p = ResultProducer(s, topics)
        await p.start()
        try:
            assert p.partitions_by_kind() == {k: 2 for k in NAMES}
            p.add_results(r)
            await p.flush()
        finally:
            await p.stop()
    asyncio.run(go())
    got = _consume(kafka_broker.bootstrap, topics)
    for kind in NAMES:
        assert got[kind] == by_id(kind, getattr(r, kind)), kind


def test_sink_s3_command_stores_dns_tls_ssh_as_parquet(kafka_broker, moto, tmp_path):  # noqa: F811
    """The new topics, named by environment as the Helm chart does, read by `mirrorscope sink
    s3` into moto: Parquet with nested struct columns, read back equal, partitioned by ts."""
    from stream_app.runtime.cores import encode_results
    from stream_app.sinks.batching import partition_of
    from stream_app.sinks.parquet import table_to_records
    from kafka import KafkaProducer
    b = kafka_broker.bootstrap
    topics = _topics(b)
    r = results(40)
    p = KafkaProducer(bootstrap_servers=b, acks="all")
    for kind, key, value in encode_results(r):
        p.send(topics[kind], key=key, value=value)
    p.flush()
    p.close()
    bucket = f"records-{uuid.uuid4().hex[:8]}"
    s3 = client("s3", moto)
    s3.create_bucket(Bucket=bucket)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "MIRRORSCOPE_S3_BUCKET": bucket,
           "MIRRORSCOPE_S3_ENDPOINT_URL": moto.url, "MIRRORSCOPE_DATA_DIR": str(tmp_path),
           "MIRRORSCOPE_KAFKA_BOOTSTRAP": b, "MIRRORSCOPE_KAFKA_GROUP": f"s3-{uuid.uuid4().hex[:6]}",
           **{BY_NAME[k].env: t for k, t in topics.items()}}
    cmd = [sys.executable, "-m", "stream_app.cli", "sink", "s3", "--idle-exit", "4",
           "--log-level", "warning"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    stored = {}
    for kind in NAMES:
        k = BY_NAME[kind]
        mine = [x for x in keys if x.startswith(f"{kind}/")]
        assert mine, kind
        rows = []
        for key in mine:
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            recs = table_to_records(table, k.struct_type)
            dt, hour = partition_of(k.ts_of(recs[0]))
            assert key.startswith(f"{kind}/dt={dt}/hour={hour}/"), key
            rows += recs
            if kind == "dns":  # a real nested column, not JSON text
                assert "struct<name: string, type: string, ttl: int64, data: string>" in str(
                    table.schema.field("answers").type)
        assert sorted(rows, key=k.id_of) == sorted(getattr(r, kind), key=k.id_of), kind
        stored[kind] = rows
    # names are kept as they are (DNS is not redacted): exfiltration-style labels survive
    assert sum("tunnel.example." in (d.query or "") for d in stored["dns"]) == 10


# -- CloudWatch --------------------------------------------------------------------------------

def test_cloudwatch_counts_the_new_kinds_with_bounded_dimensions():
    from stream_app.sinks import cloudwatch as cw
    agg = cw.MetricAggregator()
    r = results(30)
    hostile = msgspec.structs.replace(make_dns(99), rcode=11, rcode_name="X" * 300)
    for k in NAMES:
        agg.add(k, getattr(r, k))
    agg.add("dns", [hostile])
    datums = agg.take(0.0)
    total = {d["MetricName"]: d["Value"] for d in datums if "Dimensions" not in d}
    assert total["DnsTransactions"] == 31 and total["TlsHandshakes"] == 30
    assert total["SshSessions"] == 15
    rcodes = {d["Dimensions"][0]["Value"]: d["Value"] for d in datums
              if d["MetricName"] == "DnsTransactions" and "Dimensions" in d}
    want = {"NXDOMAIN": sum(1 for d in r.dns if d.rcode == 3),
            "NOERROR": sum(1 for d in r.dns if d.rcode == 0),
            "NoResponse": sum(1 for d in r.dns if d.rcode is None), "Other": 1}
    assert rcodes == want
    outcome = {d["Dimensions"][0]["Value"]: d["Value"] for d in datums
               if d["MetricName"] == "TlsHandshakes" and "Dimensions" in d}
    assert outcome == {"established": 25, "failed": 5}
    with pytest.raises(ValueError):
        agg.add("nonsense", [])


# -- command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["worker"], ["kinesis-worker"], ["sink", "s3"],
                                     ["sink", "cloudwatch"]])
def test_every_command_with_result_topics_has_one_option_per_kind(command):
    res = subprocess.run([sys.executable, "-m", "stream_app.cli", *command, "--help"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    for k in KINDS:
        assert f"--topic-{k.name}" in res.stdout, (command, k.name)
        assert k.topic in res.stdout


def test_topic_options_come_from_flags_and_environment(monkeypatch):
    import click
    from click.testing import CliRunner

    from stream_app.cli.options import result_topic_options
    seen = {}

    @click.command()
    @result_topic_options
    def cmd(topics):
        seen.update(topics)

    monkeypatch.setenv("MIRRORSCOPE_TOPIC_TLS", "tls-from-env")
    res = CliRunner().invoke(cmd, ["--topic-dns", "dns-flag"])
    assert res.exit_code == 0, res.output
    assert seen == {**{k.name: k.topic for k in KINDS}, "dns": "dns-flag", "tls": "tls-from-env"}


def test_tail_lines_for_the_new_kinds():
    from stream_app.tail import ALIASES, line
    assert {ALIASES[k] for k in NEW} == {"mirrorscope.dns", "mirrorscope.tls", "mirrorscope.ssh"}
    d = msgspec.to_builtins(make_dns(1))
    assert line(d).endswith("A svc1.internal.example. NOERROR 2 answer(s): lb1.example., "
                            "192.0.2.2 4.2 ms")
    assert " dns 10.0.1.2 -> 10.0.0.2:53 udp " in line(d)
    unanswered = msgspec.to_builtins(make_dns(4, answered=False))
    assert line(unanswered).endswith(" - [unanswered]")
    t = line(msgspec.to_builtins(make_tls(2)))
    assert " tls 10.0.2.3 -> 10.0.0.3:443 TLSv1.2 api2.example.com " in t
    assert "cert=CN=api2.example.com" in t
    failed = line(msgspec.to_builtins(make_tls(3, established=False)))
    assert failed.endswith("not-established [failed]")
    s = line(msgspec.to_builtins(make_ssh(1)))
    assert "ssh 10.0.3.2 -> 10.0.0.4:22 SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13 / " \
           "SSH-2.0-OpenSSH_8.9p1 hassh=ec7378c1a92f5a8dde7e8b7a1ddf33d1" in s


def test_tail_command_reads_a_dns_topic(kafka_broker):  # noqa: F811
    from stream_app.runtime.cores import encode_results
    from kafka import KafkaProducer
    b = kafka_broker.bootstrap
    topics = _topics(b)
    r = results(6)
    p = KafkaProducer(bootstrap_servers=b, acks="all")
    for kind, key, value in encode_results(r):
        p.send(topics[kind], key=key, value=value)
    p.flush()
    p.close()
    res = subprocess.run([sys.executable, "-m", "stream_app.cli", "tail", "--bootstrap", b,
                          topics["dns"], topics["tls"], topics["ssh"], "--from-beginning",
                          "--format", "json", "--max", "15"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(x["dns_id"] for x in recs if "dns_id" in x) == sorted(d.dns_id for d in r.dns)
    [chain] = [x["cert_chain"] for x in recs if x.get("tls_id") == r.tls[0].tls_id]
    assert chain == msgspec.to_builtins(r.tls[0].cert_chain)
    assert len([x for x in recs if "ssh_id" in x]) == 3


# -- query -------------------------------------------------------------------------------------

def _query(src, sql: str):
    from stream_app.query import run
    [res] = run(src, [sql])
    return res.rows


def test_query_reads_the_new_tables_from_jsonl_and_parquet(tmp_path):
    from stream_app.adapters.embedded import LocalOutputs
    from stream_app.sinks.batching import object_key, partition_of
    from stream_app.sinks.parquet import encode
    r = results(20)
    out = LocalOutputs(tmp_path / "jsonl")
    out.write(r)
    out.close()
    lake = tmp_path / "lake"  # the S3 sink's layout, as after `aws s3 sync`
    for kind in NAMES:
        k = BY_NAME[kind]
        recs = getattr(r, kind)
        dt, hour = partition_of(k.ts_of(recs[0]))
        key = lake / object_key("", kind, dt, hour, "t", 0, 0, k.id_of(recs[0]), "parquet")
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(encode(recs, k.struct_type, "parquet"))
    nx = sum(1 for d in r.dns if d.rcode_name == "NXDOMAIN")
    a_answers = sorted(a.data for d in r.dns for a in d.answers if a.type == "A")
    subjects = sorted(c.subject for t in r.tls for c in t.cert_chain[:1])
    for src in (tmp_path / "jsonl", lake):
        assert _query(src, "SELECT count(*) FROM mirrorscope.dns WHERE rcode_name = 'NXDOMAIN'") \
            == [(nx,)]
        got = _query(src, "SELECT a.data FROM mirrorscope.dns CROSS JOIN UNNEST(answers) AS t(a) "
                          "WHERE a.type = 'A' ORDER BY 1")
        assert [x for (x,) in got] == a_answers, src
        got = _query(src, "SELECT cert_chain[1].subject FROM mirrorscope.tls "
                          "WHERE len(cert_chain) > 0 ORDER BY 1")
        assert [x for (x,) in got] == subjects, src
        assert _query(src, "SELECT count(*), min(dt) FROM mirrorscope.ssh") == [
            (len(r.ssh), partition_of(r.ssh[0].ts)[0])]


def test_query_flow_shortcut_lists_the_flows_dns_tls_ssh(tmp_path):
    from stream_app.adapters.embedded import LocalOutputs
    from stream_app.query import run
    f = make_flow(3)
    cid = f.community_id
    r = Results(flows=[f], dns=[msgspec.structs.replace(make_dns(1), community_id=cid),
                                make_dns(2)],
                tls=[msgspec.structs.replace(make_tls(0), community_id=cid)],
                ssh=[make_ssh(0)])
    out = LocalOutputs(tmp_path)
    out.write(r)
    out.close()
    got = {res.name: res for res in run(tmp_path, ["flow", f.flow_id])}
    assert set(got) == {"flows", "http", "dns", "tls", "ssh"}
    ids = lambda res, col: [row[res.columns.index(col)] for row in res.rows]  # noqa: E731
    assert ids(got["dns"], "dns_id") == [r.dns[0].dns_id]
    assert ids(got["tls"], "tls_id") == [r.tls[0].tls_id]
    assert got["ssh"].rows == []


def test_report_counts_the_new_kinds(tmp_path):
    import re

    from stream_app.adapters.embedded import LocalOutputs
    from stream_app.report import build
    r = results(30)
    out = LocalOutputs(tmp_path / "out")
    out.write(r)
    out.close()
    page = build(tmp_path / "out", tmp_path / "report.html").read_text()
    cards = dict(re.findall(r'data-metric="(\w+)" data-value="([^"]*)"', page))
    assert int(cards["dns"]) == len(r.dns) and int(cards["tls"]) == len(r.tls)
    assert int(cards["ssh"]) == len(r.ssh)
    nx = sum(1 for d in r.dns if d.rcode_name == "NXDOMAIN")
    unanswered = sum(1 for d in r.dns if d.rcode is None)
    failed = sum(1 for t in r.tls if not t.established)
    assert f"{len(r.dns):,} ({nx:,} / {unanswered:,})" in page
    assert f"{len(r.tls):,} ({failed:,})" in page


def test_kinesis_direct_outputs_write_every_kind_to_s3_and_count_them(moto, monkeypatch):
    """AwsOutputs: `mirrorscope kinesis-worker` without Kafka writes each kind's Parquet and
    CloudWatch counts itself, durably at the checkpoint's flush."""
    import datetime as dt

    from stream_app.adapters.kinesis import ShardTP
    from stream_app.runtime.aws_outputs import AwsOutputs
    from stream_app.sinks.cloudwatch import CloudWatchSettings
    from stream_app.sinks.parquet import decode_parquet
    from stream_app.sinks.s3 import S3Settings
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    bucket, ns = f"b-{uuid.uuid4().hex[:8]}", f"NS{uuid.uuid4().hex[:6]}"
    s3 = client("s3", moto)
    s3.create_bucket(Bucket=bucket)
    out = AwsOutputs("stream", S3Settings(bucket=bucket, prefix="p/", endpoint_url=moto.url,
                                          region="us-east-1"),
                     CloudWatchSettings(namespace=ns, log_group=None, endpoint_url=moto.url,
                                        region="us-east-1"))
    shard = ShardTP("stream", "shardId-000000000001")
    r = results(25)

    async def go():
        await out.publish(shard, r)
        await out.flush(shard)
    asyncio.run(go())
    for kind in NAMES:
        k = BY_NAME[kind]
        rows = []
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"p/{kind}/").get("Contents", []):
            rows += decode_parquet(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read(),
                                   k.struct_type)
        assert sorted(rows, key=k.id_of) == sorted(getattr(r, kind), key=k.id_of), kind
    cw = client("cloudwatch", moto)
    now = dt.datetime.now(dt.timezone.utc)

    def total(name, dims=()):
        res = cw.get_metric_statistics(
            Namespace=ns, MetricName=name, Dimensions=[{"Name": a, "Value": b} for a, b in dims],
            StartTime=now - dt.timedelta(hours=1), EndTime=now + dt.timedelta(hours=1),
            Period=60, Statistics=["Sum"])
        return sum(x["Sum"] for x in res["Datapoints"])
    # (moto sums every series of a metric when no dimension is given: query by dimension)
    by_rcode = {rc: total("DnsTransactions", [("Rcode", rc)])
                for rc in ("NOERROR", "NXDOMAIN", "NoResponse")}
    assert by_rcode == {"NOERROR": sum(1 for d in r.dns if d.rcode == 0),
                        "NXDOMAIN": sum(1 for d in r.dns if d.rcode == 3),
                        "NoResponse": sum(1 for d in r.dns if d.rcode is None)}
    assert sum(by_rcode.values()) == 25
    assert total("TlsHandshakes", [("Outcome", "failed")]) == 4
    assert total("TlsHandshakes", [("Outcome", "established")]) == 21
    assert total("SshSessions") == 12  # its only series


def test_analyze_command_counts_every_file_it_writes(tmp_path):
    """`mirrorscope analyze --json` on the sample (HTTP, DNS and ICMP): one file per kind, and
    the summary's count of each kind is the number of lines in its file."""
    from tests.conftest import SAMPLE
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "stream_app.cli", "analyze", str(SAMPLE),
                          "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    j = json.loads(res.stdout)
    lines = {k: len((out / f"{k}.jsonl").read_bytes().splitlines()) for k in NAMES}
    assert j["records"] == lines
    assert (j["dns_transactions"], j["tls_handshakes"], j["ssh_sessions"]) == (
        lines["dns"], lines["tls"], lines["ssh"])
    assert lines["flows"] == j["flows"] == 6 and lines["http"] == j["http_transactions"] == 5
    assert set(j["outputs"]) == set(NAMES)
