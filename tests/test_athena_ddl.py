"""The Athena/Glue DDL in schemas/athena/: it parses (sqlglot, Athena and Hive dialects), its
columns equal the JSON Schemas' (and Terraform's Glue tables'), the flow table keeps every VPC
Flow Logs v5 field, and the example queries in docs/athena.md resolve against it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify

from schemas.athena import generate
from schemas.kinds import KINDS

TABLES = [k.table for k in KINDS]

ROOT = Path(__file__).resolve().parents[1]
DDL = ROOT / "schemas" / "athena"
JSON = ROOT / "schemas" / "jsonschema"
TABLES_TF = ROOT / "terraform" / "modules" / "storage" / "tables.tf"

# VPC Flow Logs version 5 fields (AWS documentation), in snake_case.
VPC_FLOW_LOGS_V5 = """version account_id interface_id srcaddr dstaddr srcport dstport protocol
packets bytes start end action log_status vpc_id subnet_id instance_id tcp_flags type pkt_srcaddr
pkt_dstaddr region az_id sublocation_type sublocation_id pkt_src_aws_service pkt_dst_aws_service
flow_direction traffic_path""".split()

JSON_FOR = {k.table: f"{k.schema}.json" for k in KINDS}


def parse(path: Path, dialect: str = "athena") -> exp.Create:
    stmt = sqlglot.parse_one(path.read_text(), read=dialect)
    assert isinstance(stmt, exp.Create) and stmt.args.get("kind") == "TABLE"
    return stmt


def ddl_columns(stmt: exp.Create) -> list[tuple[str, str]]:
    return [(c.name, c.args["kind"].sql(dialect="hive").lower().replace(" ", ""))
            for c in stmt.this.expressions if isinstance(c, exp.ColumnDef)]


def json_hive_type(s: dict, defs: dict) -> str:
    if "anyOf" in s:
        [s] = [x for x in s["anyOf"] if x.get("type") != "null"]
    if "$ref" in s:  # a nested Struct (DNS answers, TLS certificates): a Hive struct
        d = defs[s["$ref"].rsplit("/", 1)[1]]
        # JSON Schema lists properties by name: compared with sorted_structs(DDL type)
        return "struct<" + ",".join(f"{k}:{json_hive_type(v, defs)}"
                                    for k, v in sorted(d["properties"].items())) + ">"
    if "enum" in s:
        return "string"
    t = s["type"]
    if t == "array":
        return f"array<{json_hive_type(s['items'], defs)}>"
    if t == "object":
        return f"map<string,{json_hive_type(s['additionalProperties'], defs)}>"
    return {"integer": "bigint", "number": "double", "string": "string", "boolean": "boolean"}[t]


def sorted_structs(hive: str) -> str:
    """A Hive type with each struct's members sorted by name (JSON Schema's order)."""
    import sqlglot.expressions as e
    node = sqlglot.parse_one(f"CAST(x AS {hive})", read="hive").to
    for dt in node.find_all(e.DataType):
        if dt.this == e.DataType.Type.STRUCT:
            dt.set("expressions", sorted(dt.expressions, key=lambda c: c.name))
    return node.sql(dialect="hive").lower().replace(" ", "")


def json_columns(name: str) -> dict[str, str]:
    doc = json.loads((JSON / name).read_text())
    ref = doc["$ref"].rsplit("/", 1)[1]
    props = doc["$defs"][ref]["properties"]
    return {k: json_hive_type(v, doc["$defs"]) for k, v in props.items()}


def tf_columns() -> dict[str, list[tuple[str, str]]]:
    import hcl2
    loc = hcl2.load(TABLES_TF.open())["locals"][0]
    unq = lambda s: s.strip('"')  # noqa: E731
    return {t: [(unq(c["name"]), unq(c["type"]).replace(" ", "")) for c in loc[key]]
            for t, key in (("flows", "flow_columns"), ("http", "http_columns"),
                           ("alerts", "alert_columns"), ("dns", "dns_columns"),
                           ("tls", "tls_columns"), ("ssh", "ssh_columns"))}


def test_generated_files_are_current():
    assert generate.main(["--check"]) == 0, "run python -m schemas.athena.generate"
    assert {p.stem for p in DDL.glob("*.sql")} == set(TABLES)
    assert {p.stem for p in (DDL / "views").glob("*.sql")} == {f"{t}_unique" for t in TABLES}


@pytest.mark.parametrize("dialect", ["athena", "hive"])
@pytest.mark.parametrize("table", TABLES)
def test_ddl_parses_with_partitions_and_projection(table, dialect):
    stmt = parse(DDL / f"{table}.sql", dialect)
    assert stmt.this.this.name == table
    props = stmt.args["properties"].sql(dialect="hive")
    assert "PARTITIONED BY (`dt` STRING, `hour` STRING)" in props
    assert "STORED AS PARQUET" in props
    assert "'projection.enabled'='true'" in props.replace(" ", "")
    assert f"${{PREFIX}}{table}/dt=${{dt}}/hour=${{hour}}/'" in props


@pytest.mark.parametrize("table", TABLES)
def test_columns_match_the_json_schemas(table):
    cols = ddl_columns(parse(DDL / f"{table}.sql"))
    assert {n: sorted_structs(t) for n, t in cols} == {
        n: sorted_structs(t) for n, t in json_columns(JSON_FOR[table]).items()}
    assert len(cols) == len(dict(cols))


@pytest.mark.parametrize("table", TABLES)
def test_columns_match_terraform_glue_tables(table):
    assert ddl_columns(parse(DDL / f"{table}.sql")) == tf_columns()[table]


def test_every_table_in_terraform_is_a_result_kind():
    """A kind added to schemas/kinds.py needs its Glue table; one removed leaves none behind."""
    import hcl2
    loc = hcl2.load(TABLES_TF.open())["locals"][0]
    assert set(loc["tables"]) == set(TABLES)


def test_flow_table_keeps_every_vpc_flow_logs_v5_column():
    cols = ddl_columns(parse(DDL / "flows.sql"))
    names = [n for n, _ in cols]
    assert names[: len(VPC_FLOW_LOGS_V5)] == VPC_FLOW_LOGS_V5  # same names, same order
    types = dict(cols)
    for n in ("srcport", "dstport", "protocol", "packets", "bytes", "start", "end", "tcp_flags"):
        assert types[n] == "bigint"  # the Flow Logs table's numeric types (int/bigint) compare alike


def docs_queries() -> list[str]:
    text = (ROOT / "docs" / "athena.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, re.S)


def test_docs_queries_resolve_against_the_ddl():
    schema: dict = {"mirrorscope": {}}
    for p in DDL.glob("*.sql"):
        stmt = parse(p)
        schema["mirrorscope"][p.stem] = {**{n: t for n, t in ddl_columns(stmt)},
                                         "dt": "string", "hour": "string"}
    queries = docs_queries()
    assert len(queries) >= 4
    tables_used = set()
    for q in queries:
        stmt = sqlglot.parse_one(q, read="athena")
        assert isinstance(stmt, exp.Query), q
        qualify(stmt, schema=schema, dialect="athena", validate_qualify_columns=True)
        tables_used |= {t.name for t in stmt.find_all(exp.Table)}
    assert tables_used >= {"flows", "http", "alerts"}


def test_docs_queries_run_over_the_sinks_parquet_files():
    """Each example query, executed by sqlglot's Python engine over records that went through
    the S3 sink's Parquet encoding (plus the dt/hour partition columns), gives the answer the
    records imply."""
    import collections

    import msgspec
    from sqlglot.executor import execute

    from schemas.records import Alert, FlowRecord, HttpTransaction
    from stream_app.sinks.batching import flow_kind, http_kind, partition_of
    from stream_app.sinks.parquet import decode, encode
    from tests.sink_helpers import make_alert, make_flow, make_http

    flows = [make_flow(i, proto=(6, 6, 17)[i % 3]) for i in range(120)]
    # TCP health (flow schema 3) on the TCP flows; null on the others, as the flow table does.
    flows = [msgspec.structs.replace(
        f, handshake_rtt_resp=0.001 * (1 + i % 4), handshake_rtt_orig=0.0005,
        orig_retrans_pkts=i % 3, orig_retrans_bytes=100 * (i % 3), resp_retrans_pkts=i % 5,
        resp_retrans_bytes=1400 * (i % 5), orig_ooo_pkts=0, resp_ooo_pkts=i % 2,
        orig_zero_windows=0, resp_zero_windows=0, missed_bytes=7 * (i % 4))
        if f.protocol == 6 else f for i, f in enumerate(flows)]
    https = [make_http(i, status=(200, 404, 500, 503, None)[i % 5]) for i in range(60)]
    https = [msgspec.structs.replace(h, community_id=flows[i].community_id) if i < 10 else h
             for i, h in enumerate(https)]
    alerts = [make_alert(i, type_=("port_scan", "syn_flood")[i % 2]) for i in range(9)]

    def rows(recs, typ, ts_of):
        back = decode(encode(recs, typ, "parquet"), typ, "parquet")
        return [{**msgspec.to_builtins(r), **dict(zip(("dt", "hour"), partition_of(ts_of(r))))}
                for r in back]
    tables = {"mirrorscope": {"flows": rows(flows, FlowRecord, flow_kind().ts_of),
                              "http": rows(https, HttpTransaction, http_kind().ts_of),
                              "alerts": rows(alerts, Alert, lambda a: a.ts)}}
    results = []
    for q in [q for q in docs_queries() if not NEW_KINDS_QUERY.search(q)]:
        q = q.replace("approx_percentile(latency, 0.95)", "max(latency)")
        results.append(execute(q, dialect="athena", tables=tables))
    top, health, unanswered, http5xx, by_type, joined, vpc = results

    pair_bytes = collections.Counter()
    for f in flows:
        pair_bytes[(f.srcaddr, f.dstaddr)] += f.bytes
    want_top = [b for _, b in pair_bytes.most_common(10)]
    assert [r[2] for r in top.rows] == want_top
    assert [r[2] for r in vpc.rows] == want_top
    tcp = [f for f in flows if f.protocol == 6]
    want_health = collections.defaultdict(lambda: [0, 0, 0])
    for f in tcp:
        w = want_health[(f.dstaddr, f.dstport)]
        w[0] += 1
        w[1] += f.orig_retrans_pkts + f.resp_retrans_pkts
        w[2] += f.missed_bytes
    assert {(r[0], r[1]): list(r[2:5]) for r in health.rows} == dict(want_health)
    assert sum(r[2] for r in health.rows) == len(tcp)  # UDP flows (null health) left out
    assert sum(r[3] for r in unanswered.rows) == sum(
        1 for f in flows if f.protocol == 6 and f.conn_state in ("S0", "REJ"))
    assert {r[2] for r in unanswered.rows} <= {"S0", "REJ"}
    assert sum(r[2] for r in http5xx.rows) == sum(
        1 for h in https if h.status_code is not None and 500 <= h.status_code <= 599)
    assert {(r[0], r[1]): r[2] for r in by_type.rows} == dict(
        collections.Counter((a.type, a.severity) for a in alerts))
    assert len(joined.rows) == 10


# docs/athena.md's queries over the DNS, TLS and SSH tables (run by the test below)
NEW_KINDS_QUERY = re.compile(r"FROM mirrorscope\.(dns|tls|ssh)\b")


def test_docs_dns_tls_ssh_queries_run_over_the_sinks_parquet_files():
    """The example queries over the new tables, executed by sqlglot's Python engine over
    records that went through the S3 sink's Parquet encoding (nested answers and certificate
    chains included), give the answers the records imply."""
    import collections

    import msgspec
    from sqlglot.executor import execute

    from schemas.records import DnsTransaction, SshSession, TlsHandshake
    from stream_app.sinks.batching import partition_of
    from stream_app.sinks.parquet import decode, encode
    from tests.sink_helpers import make_dns, make_ssh, make_tls

    dnss = [make_dns(i, answered=i % 5 != 4) for i in range(50)]
    tlss = [make_tls(i, established=i % 6 != 5) for i in range(40)]
    sshs = [make_ssh(i) for i in range(15)]

    def rows(recs, typ):
        back = decode(encode(recs, typ, "parquet"), typ, "parquet")
        assert back == recs
        return [{**msgspec.to_builtins(r), **dict(zip(("dt", "hour"), partition_of(r.ts)))}
                for r in back]
    tables = {"mirrorscope": {"dns": rows(dnss, DnsTransaction), "tls": rows(tlss, TlsHandshake),
                              "ssh": rows(sshs, SshSession)}}
    queries = [q for q in docs_queries() if NEW_KINDS_QUERY.search(q)]
    assert len(queries) == 3
    nxdomain, tls_names, ssh_clients = [execute(q, dialect="athena", tables=tables)
                                        for q in queries]
    nx = collections.Counter(d.srcaddr for d in dnss if d.rcode_name == "NXDOMAIN")
    assert {r[0]: r[1] for r in nxdomain.rows} == dict(nx) and nx
    assert {(r[0], r[1]): (r[2], r[3]) for r in tls_names.rows} == {
        (h, v): (sum(1 for t in tlss if (t.server_name, t.version) == (h, v)),
                 sum(1 for t in tlss if (t.server_name, t.version) == (h, v) and not t.established))
        for h, v in {(t.server_name, t.version) for t in tlss}}
    assert {(r[0], r[1]): r[2] for r in ssh_clients.rows} == dict(
        collections.Counter((s.dstaddr, s.client) for s in sshs))
