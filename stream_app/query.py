"""`mirrorscope query`: SQL over the results with DuckDB.

The tables are named as in schemas/athena (``mirrorscope.flows``, ``mirrorscope.http``,
``mirrorscope.alerts``, ``.dns``, ``.tls``, ``.ssh``: schemas.kinds), each with the ``dt``/``hour`` partition columns), and the few Presto
functions the queries of docs/athena.md use are defined as DuckDB macros, so an Athena query
runs here unchanged. The data can be:

* a folder `mirrorscope analyze` or `collect --embedded` wrote (``flows.jsonl`` ...,
  and the rotated ``flows-*.jsonl`` of live output); ``dt``/``hour`` are computed from each
  record's time as the S3 sink places it (flows: ``end``; http, alerts: ``ts``);
* a folder laid out as the S3 sink writes (``flows/dt=.../hour=.../*.parquet``, e.g. after
  ``aws s3 sync``);
* ``s3://bucket/prefix/`` itself, read through DuckDB's httpfs extension (shipped on PyPI
  as duckdb-ext-httpfs, so nothing is downloaded at run time); credentials, region and
  endpoint from the usual AWS variables and MIRRORSCOPE_S3_ENDPOINT_URL.

DuckDB is imported here only, so other commands start without it.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.kinds import KINDS

TABLES = tuple(k.table for k in KINDS)
# The time each record is placed by in dt=/hour= (as the S3 sink places it).
PLACED_BY = {k.table: '"' + k.time_field + '"' for k in KINDS}
# Columns holding Unix seconds: shown as UTC date-times with --readable-times.
TIME_COLUMNS = {"start", "end", "ts", "start_time", "end_time", "window_start", "window_end",
                "first_seen", "last_seen"}

# Presto/Athena functions docs/athena.md uses, in DuckDB terms.
MACROS = (
    "CREATE OR REPLACE MACRO from_unixtime(x) AS to_timestamp(x)",
    "CREATE OR REPLACE MACRO approx_percentile(x, p) AS approx_quantile(x, p)",
    "CREATE OR REPLACE MACRO to_unixtime(x) AS epoch(x)",
)


class QueryError(Exception):
    """A query or data source the user should fix (printed without a traceback)."""


@dataclass
class Result:
    name: str
    columns: list[str]
    rows: list[tuple]


def _record_types() -> dict[str, type]:
    return {k.table: k.struct_type for k in KINDS}


def _duck_type(lt: tuple) -> str:
    kind = lt[0]
    if kind == "list":
        return _duck_type(lt[1]) + "[]"
    if kind == "map":
        return f"MAP({_duck_type(lt[1])}, {_duck_type(lt[2])})"
    if kind == "struct":
        return "STRUCT(" + ", ".join(f"{_q(n)} {_duck_type(t)}" for n, t in lt[1]) + ")"
    return {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "bool": "BOOLEAN"}[kind]


def table_columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) of a table's record columns, from the record contract."""
    from stream_app.sinks.parquet import struct_columns
    return [(n, _duck_type(lt)) for n, lt in struct_columns(_record_types()[table])]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _httpfs_dir() -> str | None:
    try:
        import duckdb_ext  # namespace package of duckdb-ext-httpfs
    except ImportError:
        return None
    for p in duckdb_ext.__path__:
        d = os.path.join(p, "extensions")
        if os.path.isdir(d):
            return d
    return None


def connect(source: str | Path):
    """A DuckDB connection with the mirrorscope.* views over ``source``."""
    import duckdb

    src = str(source)
    cfg: dict[str, Any] = {"autoinstall_known_extensions": False}
    ext = _httpfs_dir()
    if ext:
        cfg["extension_directory"] = ext
    con = duckdb.connect(config=cfg)
    for m in MACROS:
        con.execute(m)
    con.execute("CREATE SCHEMA mirrorscope")
    if src.startswith("s3://"):
        _s3_setup(con)
        base = src if src.endswith("/") else src + "/"
        for t in TABLES:
            _parquet_view(con, t, base + t + "/**/*.parquet", required=False)
        return con
    p = Path(src)
    if not p.is_dir():
        raise QueryError(f"{src}: no such folder (give the --out folder of analyze/collect, "
                         f"a folder of the S3 layout, or s3://bucket/prefix/)")
    for t in TABLES:
        parquet = list((p / t).glob("**/*.parquet")) if (p / t).is_dir() else []
        if parquet:
            _parquet_view(con, t, str(p / t) + "/**/*.parquet", required=True)
        else:
            _jsonl_view(con, t, p)
    return con


def _s3_setup(con) -> None:
    try:
        con.execute("LOAD httpfs")
    except Exception as exc:  # duckdb.Error
        raise QueryError(f"reading S3 needs DuckDB's httpfs extension (pip install "
                         f"'mirrorscope[query]'): {exc}") from None
    opts = {"TYPE": "s3"}
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID"):
        opts["KEY_ID"] = env["AWS_ACCESS_KEY_ID"]
        opts["SECRET"] = env.get("AWS_SECRET_ACCESS_KEY", "")
        if env.get("AWS_SESSION_TOKEN"):
            opts["SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        opts["REGION"] = region
    endpoint = env.get("MIRRORSCOPE_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") \
        or env.get("AWS_ENDPOINT_URL")
    if endpoint:  # a non-AWS endpoint (moto, MinIO): path-style, http:// allowed
        scheme, _, hostport = endpoint.partition("://")
        opts["ENDPOINT"] = hostport.rstrip("/") if hostport else scheme
        opts["URL_STYLE"] = "path"
        opts["USE_SSL"] = "false" if scheme == "http" else "true"
    body = ", ".join(f"{k} {v if k in ('TYPE', 'USE_SSL') else _lit(v)}" for k, v in opts.items())
    con.execute(f"CREATE SECRET mirrorscope_s3 ({body})")


def _select_list(table: str, have: set[str] | None) -> str:
    cols = []
    for name, typ in table_columns(table):
        if have is None or name in have:
            cols.append(f"CAST({_q(name)} AS {typ}) AS {_q(name)}")
        else:  # older records (an earlier schema version) lack it
            cols.append(f"CAST(NULL AS {typ}) AS {_q(name)}")
    return ", ".join(cols)


def _empty_view(con, table: str) -> None:
    con.execute(f"CREATE VIEW mirrorscope.{table} AS SELECT {_select_list(table, set())}, "
                f"CAST(NULL AS VARCHAR) AS dt, CAST(NULL AS VARCHAR) AS hour WHERE false")


def _jsonl_view(con, table: str, folder: Path) -> None:
    # flows.jsonl (analyze, or the live file being written) and rotated flows-*.jsonl.
    files = sorted(str(f) for f in folder.glob(f"{table}*.jsonl")
                   if f.name == f"{table}.jsonl" or f.name.startswith(f"{table}-"))
    files = [f for f in files if os.path.getsize(f) > 0]
    if not files:
        _empty_view(con, table)
        return
    cols = "{" + ", ".join(f"{_lit(n)}: {_lit(t)}" for n, t in table_columns(table)) + "}"
    when = PLACED_BY[table]
    con.execute(
        f"CREATE VIEW mirrorscope.{table} AS SELECT {_select_list(table, None)}, "
        f"strftime(to_timestamp(floor({when})::BIGINT) AT TIME ZONE 'UTC', '%Y-%m-%d') AS dt, "
        f"strftime(to_timestamp(floor({when})::BIGINT) AT TIME ZONE 'UTC', '%H') AS hour "
        f"FROM read_json([{', '.join(_lit(f) for f in files)}], format='newline_delimited', "
        f"columns={cols})")


def _parquet_view(con, table: str, pattern: str, required: bool) -> None:
    import duckdb
    src = f"read_parquet({_lit(pattern)}, hive_partitioning=true, union_by_name=true, " \
          f"hive_types={{'dt': VARCHAR, 'hour': VARCHAR}})"
    try:
        have = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    except duckdb.IOException as exc:
        if "No files found" in str(exc) and not required:
            _empty_view(con, table)
            return
        raise QueryError(f"{pattern}: {exc}") from None
    con.execute(f"CREATE VIEW mirrorscope.{table} AS SELECT {_select_list(table, have)}, "
                f"dt, hour FROM {src}")


# -- named shortcuts ------------------------------------------------------------------------

def _ip_literal(ip: str) -> str:
    import ipaddress
    try:
        return _lit(str(ipaddress.ip_address(ip)))
    except ValueError:
        raise QueryError(f"{ip!r} is not an IPv4 or IPv6 address") from None


def shortcut(words: list[str], limit: int = 20) -> list[tuple[str, str]] | None:
    """(name, SQL) of the queries a named shortcut stands for; None when ``words`` are SQL."""
    w = [x.lower() for x in words]
    if w[:2] == ["top", "talkers"]:
        return [("top talkers", f"""
            SELECT srcaddr, dstaddr, sum(bytes) AS bytes, sum(packets) AS packets,
                   count(*) AS flows, min(start) AS first_seen, max("end") AS last_seen
            FROM mirrorscope.flows GROUP BY srcaddr, dstaddr
            ORDER BY bytes DESC, srcaddr, dstaddr LIMIT {limit}""")]
    if w[:2] == ["top", "ports"]:
        return [("top ports", f"""
            SELECT protocol, dstport, count(*) AS flows, sum(bytes) AS bytes,
                   count(DISTINCT srcaddr) AS clients, count(DISTINCT dstaddr) AS servers
            FROM mirrorscope.flows GROUP BY protocol, dstport
            ORDER BY bytes DESC, protocol, dstport LIMIT {limit}""")]
    if w[:2] == ["failed", "http"]:
        return [("failed http", f"""
            SELECT ts, srcaddr, dstaddr, dstport, method, host, uri, status_code, status_msg,
                   latency, tags, community_id, http_id
            FROM mirrorscope.http
            WHERE status_code >= 400 OR status_code IS NULL
            ORDER BY ts LIMIT {limit}""")]
    if w[:1] == ["host"]:
        if len(words) != 2:
            raise QueryError("usage: mirrorscope query host IP")
        ip = _ip_literal(words[1])
        return [
            ("flows", f"""
            SELECT CASE WHEN srcaddr = {ip} THEN 'client' ELSE 'server' END AS role,
                   CASE WHEN srcaddr = {ip} THEN dstaddr ELSE srcaddr END AS peer,
                   protocol, dstport, count(*) AS flows, sum(bytes) AS bytes,
                   sum(CASE WHEN srcaddr = {ip} THEN orig_bytes ELSE resp_bytes END) AS bytes_sent,
                   string_agg(DISTINCT conn_state, ',' ORDER BY conn_state) AS conn_states,
                   min(start) AS first_seen, max("end") AS last_seen
            FROM mirrorscope.flows WHERE srcaddr = {ip} OR dstaddr = {ip}
            GROUP BY ALL ORDER BY bytes DESC, peer LIMIT {limit}"""),
            ("http", f"""
            SELECT CASE WHEN srcaddr = {ip} THEN 'client' ELSE 'server' END AS role,
                   coalesce(host, dstaddr) AS server, method, status_code, count(*) AS requests,
                   round(avg(latency), 6) AS avg_latency, min(ts) AS first_seen, max(ts) AS last_seen
            FROM mirrorscope.http WHERE srcaddr = {ip} OR dstaddr = {ip}
            GROUP BY ALL ORDER BY requests DESC, server LIMIT {limit}"""),
            ("alerts", f"""
            SELECT ts, type, severity, source, summary FROM mirrorscope.alerts
            WHERE source = {ip} OR list_contains(targets, {ip})
               OR len(list_filter(targets, t -> starts_with(t, {ip[:-1]}:'))) > 0
            ORDER BY ts LIMIT {limit}"""),
        ]
    if w[:1] == ["flow"]:
        if len(words) != 2:
            raise QueryError("usage: mirrorscope query flow FLOW_ID|COMMUNITY_ID")
        fid = _lit(words[1])
        return [
            ("flows", f"""
            SELECT * EXCLUDE (dt, hour) FROM mirrorscope.flows
            WHERE flow_id = {fid} OR community_id = {fid} ORDER BY start_time, start"""),
            ("http", f"""
            SELECT h.* EXCLUDE (dt, hour) FROM mirrorscope.http AS h
            WHERE h.community_id IN (SELECT community_id FROM mirrorscope.flows
                                     WHERE flow_id = {fid} OR community_id = {fid})
               OR h.community_id = {fid}
            ORDER BY h.ts, h.trans_depth"""),
        ] + [(t, f"""
            SELECT x.* EXCLUDE (dt, hour) FROM mirrorscope.{t} AS x
            WHERE x.community_id IN (SELECT community_id FROM mirrorscope.flows
                                     WHERE flow_id = {fid} OR community_id = {fid})
               OR x.community_id = {fid}
            ORDER BY x.ts""") for t in ("dns", "tls", "ssh")]
    return None


SHORTCUTS = ("top talkers", "top ports", "failed http", "host IP", "flow FLOW_ID|COMMUNITY_ID")


def run(source: str | Path, words: list[str], limit: int = 20) -> list[Result]:
    """Run SQL (``words`` joined) or a named shortcut over ``source``."""
    import duckdb

    queries = shortcut(words, limit) or [("query", " ".join(words))]
    con = connect(source)
    out = []
    try:
        for name, sql in queries:
            try:
                cur = con.execute(sql)
            except duckdb.Error as exc:
                raise QueryError(f"{name}: {exc}") from None
            cols = [d[0] for d in cur.description] if cur.description else []
            out.append(Result(name, cols, cur.fetchall()))
    finally:
        con.close()
    return out


# -- output ---------------------------------------------------------------------------------

def _readable(col: str, v: Any, times: bool) -> Any:
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=_dt.timezone.utc)
        return v.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if times and col in TIME_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool):
        t = _dt.datetime.fromtimestamp(v, tz=_dt.timezone.utc)
        spec = "seconds" if isinstance(v, int) else "microseconds"
        return t.isoformat(timespec=spec).replace("+00:00", "Z")
    if isinstance(v, (_dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return v.total_seconds()
    return v


def plain_rows(r: Result, times: bool) -> list[dict]:
    return [{c: _readable(c, v, times) for c, v in zip(r.columns, row)} for row in r.rows]


def render(results: list[Result], fmt: str, times: bool) -> str:
    import csv
    import io
    import json

    if fmt == "json":
        if len(results) == 1:
            data: Any = plain_rows(results[0], times)
        else:
            data = {r.name: plain_rows(r, times) for r in results}
        return json.dumps(data, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        for i, r in enumerate(results):
            if len(results) > 1:
                buf.write(("\n" if i else "") + f"# {r.name}\n")
            w.writerow(r.columns)
            for row in plain_rows(r, times):
                w.writerow(["" if v is None else v for v in row.values()])
        return buf.getvalue()
    from rich.console import Console
    from rich.table import Table
    buf = io.StringIO()
    con = Console(file=buf, width=200, soft_wrap=True)
    for r in results:
        t = Table(title=f"{r.name} ({len(r.rows)} rows)", title_justify="left")
        for c in r.columns:
            t.add_column(c)
        for row in plain_rows(r, times):
            t.add_row(*("" if v is None else str(v) for v in row.values()))
        con.print(t)
    return buf.getvalue()


# -- the command ----------------------------------------------------------------------------

def _command():
    import click

    @click.command("query", context_settings={"ignore_unknown_options": True})
    @click.argument("words", nargs=-1, required=True)
    @click.option("--in", "source", default="out", show_default=True, metavar="DIR|s3://B/P/",
                  help="Results to query: an --out folder (JSON lines), a folder in the S3 "
                       "layout (<type>/dt=/hour=/*.parquet), or s3://bucket/prefix/.")
    @click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                  default="table", show_default=True)
    @click.option("--readable-times", "-t", "times", is_flag=True,
                  help="Show Unix-seconds columns (start, end, ts, ...) as UTC date-times.")
    @click.option("--limit", default=20, show_default=True, type=int,
                  help="Rows of a named shortcut at most.")
    def query(words, source, fmt, times, limit):
        """SQL over the results with DuckDB, tables as in Athena: mirrorscope.flows,
        mirrorscope.http, mirrorscope.alerts (with dt/hour), so the queries of
        docs/athena.md run unchanged. WORDS is SQL, or a shortcut: `top talkers`,
        `top ports`, `failed http`, `host IP`, `flow FLOW_ID|COMMUNITY_ID`."""
        import sys
        try:
            results = run(source, list(words), limit=limit)
        except QueryError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except ImportError as exc:
            click.echo(f"error: {exc.name or exc} is missing: pip install 'mirrorscope[query]'",
                       err=True)
            sys.exit(2)
        sys.stdout.write(render(results, fmt, times))

    return query


query = _command()
