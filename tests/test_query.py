"""`mirrorscope query`: DuckDB over analyze's JSON lines, the S3 sink's Parquet layout (in a
folder and in S3 through httpfs, against moto), with the Athena table names. Every query of
docs/athena.md gives the rows sqlglot's Python executor gives over the same records (the
check tests/test_athena_ddl.py already makes), and the shortcuts give what the records say."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from sqlglot.executor import execute

from schemas.kinds import KINDS
from stream_app import query as q
from stream_app.adapters.embedded import analyze
from stream_app.sinks.batching import partition_of
from stream_app.sinks.parquet import encode
from tests.conftest import CORPUS, SAMPLE
from tests.sink_helpers import (CREDENTIALS, client, make_alert, make_dns, make_flow, make_http,
                                make_ssh, make_tls)

TYPES = {k.table: k.struct_type for k in KINDS}
PLACED = {k.table: k.ts_of for k in KINDS}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "athena.md"


def docs_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S)


def read_records(folder: Path) -> dict[str, list]:
    out = {}
    for t, typ in TYPES.items():
        p = folder / f"{t}.jsonl"
        dec = msgspec.json.Decoder(typ)
        out[t] = [dec.decode(x) for x in p.read_bytes().splitlines()] if p.exists() else []
    return out


def synthetic() -> dict[str, list]:
    flows = [make_flow(i, proto=(6, 6, 17)[i % 3]) for i in range(120)]
    https = [make_http(i, status=(200, 404, 500, 503, None)[i % 5]) for i in range(60)]
    https = [msgspec.structs.replace(h, community_id=flows[i].community_id) if i < 10 else h
             for i, h in enumerate(https)]
    alerts = [make_alert(i, type_=("port_scan", "syn_flood")[i % 2]) for i in range(9)]
    return {"flows": flows, "http": https, "alerts": alerts,
            "dns": [make_dns(i, answered=i % 5 != 4) for i in range(50)],
            "tls": [make_tls(i, established=i % 6 != 5) for i in range(40)],
            "ssh": [make_ssh(i) for i in range(15)]}


def write_jsonl(folder: Path, recs: dict[str, list]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    for t, rs in recs.items():
        (folder / f"{t}.jsonl").write_bytes(enc.encode_lines(rs))
    return folder


def parquet_objects(recs: dict[str, list]) -> dict[str, bytes]:
    """The S3 sink's layout: <type>/dt=/hour=/<name>.parquet, one file per hour."""
    objs = {}
    for t, rs in recs.items():
        by_part = collections.defaultdict(list)
        for r in rs:
            by_part[partition_of(PLACED[t](r))].append(r)
        for (d, h), part in by_part.items():
            objs[f"{t}/dt={d}/hour={h}/x-0-0.parquet"] = encode(part, TYPES[t], "parquet")
    return objs


def sqlglot_tables(recs: dict[str, list]) -> dict:
    return {"mirrorscope": {
        t: [{**msgspec.to_builtins(r), **dict(zip(("dt", "hour"), partition_of(PLACED[t](r))))}
            for r in rs] for t, rs in recs.items()}}


def sqlglot_schema() -> dict:
    """Column types, so that an empty table (the sample has no alerts) still resolves."""
    def typ(t: str) -> str:
        if t.startswith("STRUCT("):  # nested records: no docs query reads into them
            return "VARCHAR"
        if t.endswith("[]"):
            return f"ARRAY<{typ(t[:-2])}>"
        if t.startswith("MAP("):
            return "MAP<VARCHAR, BIGINT>"
        return t
    return {"mirrorscope": {t: {**{n: typ(ty) for n, ty in q.table_columns(t)},
                                "dt": "VARCHAR", "hour": "VARCHAR"} for t in TYPES}}


def dated(sql: str, recs: dict[str, list]) -> str:
    """The docs' example dates moved to the day (and hour) of the records."""
    ends = [f.end for f in recs["flows"]]
    d, h = partition_of(min(ends))
    nxt = (dt.date.fromisoformat(d) + dt.timedelta(days=1)).isoformat()
    return (sql.replace("'2026-05-29'", f"'{nxt}'").replace("'2026-05-28'", f"'{d}'")
            .replace("h.hour = '20'", f"h.hour = '{h}'"))


def norm(v):
    if isinstance(v, dt.datetime):
        return v.replace(tzinfo=None) if v.tzinfo is None else \
            v.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(v, float):
        return round(v, 6)
    return v


def run_cli(source, sql: str) -> q.Result:
    """The query through the `mirrorscope query` command (JSON out)."""
    p = cli("--in", str(source), "--format", "json", sql)
    rows = json.loads(p.stdout)
    cols = list(rows[0]) if rows else None
    return q.Result("query", cols, [tuple(r.values()) for r in rows])


def compare_with_sqlglot(source, recs: dict[str, list], move_dates: bool,
                         through_cli: bool = False) -> int:
    """Each docs query through `mirrorscope query` (DuckDB; the command or the function
    behind it) and through sqlglot's executor; returns the rows compared."""
    tables = sqlglot_tables(recs)
    compared = 0
    for sql in docs_queries():
        sql = dated(sql, recs) if move_dates else sql
        [duck] = [run_cli(source, sql)] if through_cli else q.run(source, [sql])
        ref = execute(sql.replace("approx_percentile(latency, 0.95)", "max(latency)"),
                      dialect="athena", tables=tables,
                      schema=sqlglot_schema())
        if duck.columns is None:  # JSON of no rows names no columns
            duck.columns = list(ref.columns)
        assert duck.columns == list(ref.columns), sql
        p95 = duck.columns.index("p95_latency_s") if "p95_latency_s" in duck.columns else None
        got = [[norm(v) for v in row] for row in duck.rows]
        want = [[norm(v) for v in row] for row in ref.rows]
        if through_cli:  # the command prints timestamps as ISO strings
            want = [[norm(q._readable(c, v, False)) for c, v in zip(duck.columns, row)]
                    for row in ref.rows]
        if p95 is not None:  # DuckDB's approximate quantile vs sqlglot's max: at most the max
            for g, w in zip(got, want):
                assert g[p95] is None and w[p95] is None or g[p95] <= w[p95] + 1e-6
                g[p95] = w[p95] = None
        if "ORDER BY" in sql and "LIMIT" in sql:  # ties may come in either order
            assert sorted(map(repr, got)) == sorted(map(repr, want)), sql
        else:
            assert sorted(map(repr, got)) == sorted(map(repr, want)), sql
        compared += len(got)
    return compared


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "out"
    analyze([SAMPLE], out)
    return out


def test_docs_queries_on_the_sample_match_sqlglot(sample_out):
    recs = read_records(sample_out)
    assert len(recs["flows"]) == 6 and len(recs["http"]) == 5
    # top talkers 1 + TCP health by server 1 + VPC query 1 + the 5 transactions joined
    assert compare_with_sqlglot(sample_out, recs, move_dates=True, through_cli=True) == 8


def test_docs_queries_on_a_corpus_capture_match_sqlglot(tmp_path):
    out = tmp_path / "out"
    analyze([CORPUS / "zeek__wikipedia.pcap"], out)
    recs = read_records(out)
    assert len(recs["flows"]) > 20
    assert compare_with_sqlglot(out, recs, move_dates=True) > 20


def test_docs_queries_unchanged_on_jsonl_and_parquet_folders(tmp_path):
    recs = synthetic()
    jl = write_jsonl(tmp_path / "jsonl", recs)
    pq = tmp_path / "pq"
    for key, data in parquet_objects(recs).items():
        (pq / key).parent.mkdir(parents=True, exist_ok=True)
        (pq / key).write_bytes(data)
    for source in (jl, pq):
        assert compare_with_sqlglot(source, recs, move_dates=False) > 20


def test_s3_parquet_through_httpfs(tmp_path, moto, monkeypatch):
    recs = synthetic()
    s3 = client("s3", moto)
    s3.create_bucket(Bucket="q-results")
    for key, data in parquet_objects(recs).items():
        s3.put_object(Bucket="q-results", Key="mirror/" + key, Body=data)
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("MIRRORSCOPE_S3_ENDPOINT_URL", moto.url)
    assert compare_with_sqlglot("s3://q-results/mirror/", recs, move_dates=False) > 20
    [r] = q.run("s3://q-results/mirror/", ["SELECT count(*) FROM mirrorscope.alerts"])
    assert r.rows == [(9,)]


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "stream_app.cli", "query", *args],
                       capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_shortcuts_give_what_the_records_say(tmp_path):
    recs = synthetic()
    src = str(write_jsonl(tmp_path / "r", recs))

    top = json.loads(cli("--in", src, "--format", "json", "--limit", "5", "top", "talkers").stdout)
    pair = collections.Counter()
    for f in recs["flows"]:
        pair[(f.srcaddr, f.dstaddr)] += f.bytes
    assert [(r["srcaddr"], r["dstaddr"], r["bytes"]) for r in top] == \
        [(a, b, n) for (a, b), n in pair.most_common(5)]

    failed = json.loads(cli("--in", src, "--format", "json", "--limit", "1000",
                            "failed", "http").stdout)
    want = sorted(h.http_id for h in recs["http"] if h.status_code is None or h.status_code >= 400)
    assert sorted(r["http_id"] for r in failed) == want and len(want) == 48
    assert {r["status_code"] for r in failed} == {404, 500, 503, None}

    ip = "10.0.3.4"
    host = json.loads(cli("--in", src, "--format", "json", "host", ip).stdout)
    mine = [f for f in recs["flows"] if ip in (f.srcaddr, f.dstaddr)]
    assert sum(r["flows"] for r in host["flows"]) == len(mine)
    assert sum(r["bytes"] for r in host["flows"]) == sum(f.bytes for f in mine)
    assert {r["peer"] for r in host["flows"]} == {"10.1.0.9"}
    assert [a["summary"] for a in host["alerts"]] == \
        [a.summary for a in recs["alerts"] if a.source == ip]

    f = recs["flows"][3]
    one = json.loads(cli("--in", src, "--format", "json", "flow", f.flow_id).stdout)
    assert [r["flow_id"] for r in one["flows"]] == [f.flow_id]
    assert [h["http_id"] for h in one["http"]] == \
        [h.http_id for h in recs["http"] if h.community_id == f.community_id]


def test_readable_times_csv_and_old_records(sample_out, tmp_path):
    recs = read_records(sample_out)
    out = cli("--in", str(sample_out), "--format", "csv", "-t",
              "SELECT flow_id, start, start_time, \"end\" FROM mirrorscope.flows ORDER BY flow_id").stdout
    lines = out.splitlines()
    assert lines[0] == "flow_id,start,start_time,end"
    by_id = {f.flow_id: f for f in recs["flows"]}
    for line in lines[1:]:
        fid, start, start_time, end = line.split(",")
        f = by_id[fid]
        assert start == dt.datetime.fromtimestamp(f.start, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        parsed = dt.datetime.fromisoformat(start_time.replace("Z", "+00:00")).timestamp()
        assert math.isclose(parsed, f.start_time, abs_tol=1e-6)
        assert f.start <= f.start_time < f.start + 1  # sub-second, same whole second
    # A version 1 record (no start_time/end_time) is still read, with them null.
    v1 = msgspec.to_builtins(recs["flows"][0])
    for k in ("start_time", "end_time"):
        v1.pop(k)
    v1["schema_version"] = 1
    (tmp_path / "flows.jsonl").write_text(json.dumps(v1) + "\n")
    [r] = q.run(tmp_path, ["SELECT schema_version, start, start_time FROM mirrorscope.flows"])
    assert r.rows == [(1, v1["start"], None)]


def test_bad_input_is_a_clear_error(tmp_path, sample_out):
    p = cli("--in", str(tmp_path / "nope"), "top", "talkers", check=False)
    assert p.returncode == 2 and "no such folder" in p.stderr and "Traceback" not in p.stderr
    p = cli("--in", str(sample_out), "SELECT nosuchcolumn FROM mirrorscope.flows", check=False)
    assert p.returncode == 2 and "nosuchcolumn" in p.stderr and "Traceback" not in p.stderr
    p = cli("--in", str(sample_out), "host", "not-an-ip", check=False)
    assert p.returncode == 2 and "not an IPv4 or IPv6 address" in p.stderr
    # A torn line (a file cut short by a crash) names the file, it is not skipped silently.
    (tmp_path / "torn").mkdir()
    good = (sample_out / "flows.jsonl").read_text().splitlines()[0]
    (tmp_path / "torn" / "flows.jsonl").write_text(good + "\n" + good[:40])
    p = cli("--in", str(tmp_path / "torn"), "top", "talkers", check=False)
    assert p.returncode == 2 and "Malformed JSON" in p.stderr and "flows.jsonl" in p.stderr
    # An empty folder has empty tables, not an error.
    (tmp_path / "empty").mkdir()
    [r] = q.run(tmp_path / "empty", ["SELECT count(*) FROM mirrorscope.http"])
    assert r.rows == [(0,)]
