"""`mirrorscope report OUT`: one self-contained HTML file with plots of the results (traffic
over time with alerts, top talkers and ports, a service map, HTTP status and latency).

The data come from the tables `mirrorscope query` reads (an --out folder, the S3 layout in a
folder, or s3://); plotly (the `report` extra) draws the charts in the browser from the
plotly.js it ships, inlined into the file. Both are imported only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click


def build(source: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Write the report for ``source`` to ``out``; returns the path."""
    from stream_app.query import connect
    from stream_app.report.data import collect
    from stream_app.report.html import render

    con = connect(source)
    try:
        data = collect(con)
    finally:
        con.close()
    out = Path(out)
    if out.is_dir():
        out = out / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    page = render(data, title or "MirrorScope report", str(source))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


@click.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--in", "source", default="out", show_default=True, metavar="DIR|s3://B/P/",
              help="Results to show (as for `mirrorscope query`).")
@click.option("--title", help="Page title [default: MirrorScope report].")
def report(out: Path, source: str, title: str | None) -> None:
    """Write OUT (an .html file, or OUT/report.html for a folder): one self-contained page
    with traffic over time and the alerts on it, top talkers and ports, a service map of
    who calls whom (request rates, error rates, latency), HTTP status codes and latency.
    Opening it fetches nothing from the network."""
    import sys

    from stream_app.query import QueryError
    try:
        path = build(source, out, title)
    except QueryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ImportError as exc:
        click.echo(f"error: {exc.name or exc} is missing: pip install 'mirrorscope[report]'",
                   err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot write {out}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
