"""One self-contained HTML file from ReportData: plotly.js (from the plotly package) inlined,
the figures as JSON, the key numbers and tables as plain HTML. A Content-Security-Policy
forbids every network fetch, so opening the file never reaches out (and the test would see
a violation as an error)."""

from __future__ import annotations

import datetime as dt
import html
import json
import math

from stream_app.report.data import ReportData, tiers

SEVERITY_COLOR = {"info": "#7f8c8d", "low": "#2980b9", "medium": "#f39c12", "high": "#e74c3c",
                  "critical": "#8e44ad"}
PROTO_COLOR = {"TCP": "#1f77b4", "UDP": "#ff7f0e", "ICMP": "#2ca02c", "ICMPv6": "#17becf"}
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data: blob:; font-src data:")

# Recorded into the page itself, so a headless browser's DOM dump shows them (the test
# asserts there are none), and shown to a user who opens a broken report.
ERROR_HOOK = """
window.__reportErrors = [];
function __reportError(msg) {
  window.__reportErrors.push(String(msg));
  var el = document.getElementById('report-errors');
  if (el) { el.textContent = window.__reportErrors.join('\\n'); el.hidden = false; }
}
window.addEventListener('error', function (e) { __reportError('error: ' + e.message); });
window.addEventListener('unhandledrejection', function (e) { __reportError('rejection: ' + e.reason); });
document.addEventListener('securitypolicyviolation', function (e) {
  __reportError('blocked: ' + e.violatedDirective + ' ' + e.blockedURI); });
(function () { var orig = console.error; console.error = function () {
  __reportError('console.error: ' + Array.prototype.join.call(arguments, ' '));
  return orig.apply(console, arguments); }; })();
"""

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0;
       background: #f5f6f8; color: #222; }
header { background: #1d2a3a; color: #fff; padding: 16px 28px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; opacity: .8; font-size: 13px; }
main { padding: 16px 28px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.card { background: #fff; border-radius: 6px; padding: 10px 16px; min-width: 120px;
        box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { font-size: 12px; color: #666; }
section { background: #fff; border-radius: 6px; padding: 12px 16px; margin-bottom: 16px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
section h2 { font-size: 16px; margin: 0 0 8px 0; }
.row { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.chart { width: 100%; min-height: 320px; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.sev { color: #fff; border-radius: 3px; padding: 1px 6px; font-size: 11px; }
.empty { color: #888; font-style: italic; }
#report-errors { color: #b00; white-space: pre-wrap; }
"""


def _iso(t: float | None) -> str:
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _ms(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc) \
        .strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _e(s) -> str:
    return html.escape("" if s is None else str(s))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


# -- figures (plotly figure dicts; plotly.graph_objects validates them) -------------------

def _fig(data: list, layout: dict) -> dict:
    import plotly.graph_objects as go
    base = {"margin": {"l": 60, "r": 20, "t": 30, "b": 50}, "template": "plotly_white",
            "legend": {"orientation": "h", "y": -0.2}}
    return json.loads(go.Figure(data=data, layout={**base, **layout}).to_json())


def traffic_figure(d: ReportData) -> dict:
    import plotly.graph_objects as go
    traces = []
    for proto in sorted({r["proto"] for r in d.traffic}):
        rows = [r for r in d.traffic if r["proto"] == proto]
        traces.append(go.Bar(x=[_ms(r["t"]) for r in rows], y=[r["bytes"] for r in rows],
                             name=f"{proto} bytes", marker_color=PROTO_COLOR.get(proto),
                             customdata=[[r["flows"], r["packets"]] for r in rows],
                             hovertemplate="%{x}<br>%{y:,} bytes, %{customdata[0]} flows, "
                                           "%{customdata[1]} packets<extra>" + proto + "</extra>"))
    if d.http_over_time:
        traces.append(go.Scatter(
            x=[_ms(r["t"]) for r in d.http_over_time], y=[r["requests"] for r in d.http_over_time],
            name="HTTP requests", yaxis="y2", mode="lines+markers", line={"color": "#555"}))
    shapes, ann = [], []
    ymax_alert = []
    for a in d.alerts:  # alerts on the timeline: a line at the alert, its evidence on hover
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": _ms(a["ts"]),
                       "x1": _ms(a["ts"]), "y0": 0, "y1": 1,
                       "line": {"color": SEVERITY_COLOR.get(a["severity"], "#e74c3c"),
                                "width": 2, "dash": "dash"}})
        if len(ann) < 30:  # named on the chart (all of them are in the alerts table)
            ann.append({"x": _ms(a["ts"]), "xref": "x", "y": 1.0, "yref": "paper",
                        "yanchor": "bottom", "showarrow": False, "text": _e(a["type"]),
                        "font": {"size": 10, "color": SEVERITY_COLOR.get(a["severity"], "#e74c3c")}})
        ymax_alert.append(a)
    if ymax_alert:
        traces.append(go.Scatter(
            x=[_ms(a["ts"]) for a in ymax_alert], y=[1.0] * len(ymax_alert), yaxis="y3",
            mode="markers", name="alerts",
            marker={"symbol": "triangle-down", "size": 12,
                    "color": [SEVERITY_COLOR.get(a["severity"], "#e74c3c") for a in ymax_alert]},
            text=[f"{a['type']} ({a['severity']})<br>{_e(a['summary'])}<br>evidence: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(a["evidence"].items()))
                  for a in ymax_alert],
            hovertemplate="%{text}<extra></extra>"))
    return _fig(traces, {
        "barmode": "stack", "shapes": shapes, "annotations": ann,
        "xaxis": {"title": f"time (UTC), {d.bucket_s} s buckets", "type": "date"},
        "yaxis": {"title": "bytes"},
        "yaxis2": {"title": "HTTP requests", "overlaying": "y", "side": "right",
                   "showgrid": False, "rangemode": "tozero"},
        "yaxis3": {"overlaying": "y", "range": [0, 1.05], "visible": False},
        "margin": {"l": 60, "r": 60, "t": 40, "b": 50}})


def talkers_figure(d: ReportData) -> dict:
    import plotly.graph_objects as go
    rows = list(reversed(d.talkers))
    return _fig([go.Bar(orientation="h", x=[r["bytes"] for r in rows],
                        y=[f"{r['srcaddr']} → {r['dstaddr']}" for r in rows],
                        customdata=[[r["flows"], r["packets"]] for r in rows],
                        hovertemplate="%{y}<br>%{x:,} bytes, %{customdata[0]} flows<extra></extra>",
                        marker_color="#1f77b4")],
                {"xaxis": {"title": "bytes (both directions)"}, "yaxis": {"automargin": True},
                 "height": max(260, 28 * len(rows) + 80)})


def ports_figure(d: ReportData) -> dict:
    import plotly.graph_objects as go
    rows = list(reversed(d.ports))
    return _fig([go.Bar(orientation="h", x=[r["bytes"] for r in rows],
                        y=[f"{r['proto']}/{r['dstport']}" for r in rows],
                        customdata=[[r["flows"], r["clients"]] for r in rows],
                        hovertemplate="%{y}<br>%{x:,} bytes, %{customdata[0]} flows, "
                                      "%{customdata[1]} clients<extra></extra>",
                        marker_color=[PROTO_COLOR.get(r["proto"], "#888") for r in rows])],
                {"xaxis": {"title": "bytes"}, "yaxis": {"automargin": True, "type": "category"},
                 "height": max(260, 28 * len(rows) + 80)})


def edge_label(e: dict) -> str:
    parts = [f"{e['proto']}/{e['port']}", f"{e['flows']} flows"]
    if e["requests"]:
        parts.append(f"{e['req_per_s']:.2f} req/s")
        parts.append(f"{100 * e['error_rate']:.0f}% err")
        if e["p50"] is not None:
            parts.append(f"p50 {e['p50'] * 1000:.1f} ms")
    return " · ".join(parts)


def service_map_figure(d: ReportData) -> tuple[dict, dict[str, tuple[float, float]]]:
    import plotly.graph_objects as go
    tier = tiers(d.edges)
    cols: dict[int, list[str]] = {}
    for n in sorted(tier, key=lambda n: (tier[n], n)):
        cols.setdefault(tier[n], []).append(n)
    pos: dict[str, tuple[float, float]] = {}
    for t, names in cols.items():
        for i, n in enumerate(names):
            pos[n] = (float(t), (i + 1) / (len(names) + 1))
    ann = []
    ex, ey = [], []
    pairs: dict[tuple[str, str], list[dict]] = {}
    for e in d.edges:  # one arrow per client -> server, a label line per port
        pairs.setdefault((e["client"], e["server"]), []).append(e)
    for i, ((client, server), es) in enumerate(pairs.items()):
        (x0, y0), (x1, y1) = pos[client], pos[server]
        at = (0.3, 0.5, 0.7)[i % 3]  # labels staggered: edges that converge stay readable
        ex += [x0, x1, None]
        ey += [y0, y1, None]
        reqs = sum(e["requests"] for e in es)
        err = sum(e["errors"] for e in es) / reqs if reqs else 0
        nbytes = sum(e["bytes"] for e in es)
        ann.append({"x": x1, "y": y1, "ax": x0, "ay": y0, "xref": "x", "yref": "y",
                    "axref": "x", "ayref": "y", "showarrow": True, "arrowhead": 2,
                    "arrowsize": 1.2, "standoff": 10, "startstandoff": 10, "text": "",
                    "arrowcolor": "#e74c3c" if err >= 0.05 else "#7f8c8d",
                    "arrowwidth": 1 + min(4, math.log10(1 + nbytes) / 2)})
        ann.append({"x": x0 + at * (x1 - x0), "y": y0 + at * (y1 - y0), "xref": "x", "yref": "y",
                    "showarrow": False, "text": "<br>".join(_e(edge_label(e)) for e in es),
                    "font": {"size": 10}, "bgcolor": "rgba(255,255,255,0.85)", "align": "left"})
    maxt = max(cols) if cols else 0
    role = {n: "client" if tier[n] == 0 else ("server" if tier[n] == maxt else "middle tier")
            for n in tier}
    nodes = sorted(pos)
    data = [go.Scatter(x=ex, y=ey, mode="lines", line={"color": "rgba(0,0,0,0)"},
                       hoverinfo="skip", showlegend=False),
            go.Scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes],
                       mode="markers+text", text=nodes, textposition="top center",
                       marker={"size": 18, "color": [{"client": "#2980b9", "middle tier": "#8e44ad",
                                                      "server": "#27ae60"}[role[n]] for n in nodes]},
                       customdata=[role[n] for n in nodes],
                       hovertemplate="%{text} (%{customdata})<extra></extra>", showlegend=False)]
    fig = _fig(data, {
        "annotations": ann, "height": max(320, 70 * max((len(v) for v in cols.values()), default=1)),
        "xaxis": {"visible": False, "range": [-0.5, maxt + 0.5]},
        "yaxis": {"visible": False, "range": [0, 1.05]}})
    return fig, pos


def status_figure(d: ReportData) -> dict:
    import plotly.graph_objects as go

    def color(s: str) -> str:
        return {"2": "#27ae60", "3": "#2980b9", "4": "#f39c12", "5": "#e74c3c"}.get(s[:1], "#7f8c8d")
    return _fig([go.Bar(x=[r["status"] for r in d.statuses], y=[r["n"] for r in d.statuses],
                        marker_color=[color(r["status"]) for r in d.statuses],
                        hovertemplate="status %{x}: %{y} transactions<extra></extra>")],
                {"xaxis": {"title": "status code", "type": "category"},
                 "yaxis": {"title": "transactions"}})


def latency_figure(d: ReportData) -> dict:
    import plotly.graph_objects as go
    return _fig([go.Histogram(x=d.latencies_ms, nbinsx=40, marker_color="#8e44ad",
                              hovertemplate="%{x} ms: %{y} transactions<extra></extra>")],
                {"xaxis": {"title": "latency, request to first response byte (ms)"},
                 "yaxis": {"title": "transactions"}})


# -- the page -----------------------------------------------------------------------------

def _table(cols: list[tuple[str, str]], rows: list[dict], table_id: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c, _ in cols)
    body = []
    for r in rows:
        cells = []
        for c, kind in cols:
            v = r.get(c)
            if kind == "n":
                cells.append(f'<td class="n" data-col="{c}">{_e("" if v is None else f"{v:,}")}</td>')
            elif kind == "t":
                cells.append(f'<td data-col="{c}">{_e(_ms(v))}</td>')
            else:
                cells.append(f'<td data-col="{c}">{_e(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def render(d: ReportData, title: str, source: str) -> str:
    from plotly.offline import get_plotlyjs

    t = d.totals
    figs: dict[str, dict] = {}
    if t["flows"]:
        figs["chart-traffic"] = traffic_figure(d)
        figs["chart-talkers"] = talkers_figure(d)
        figs["chart-ports"] = ports_figure(d)
        figs["chart-service-map"], _ = service_map_figure(d)
    if t["http"]:
        figs["chart-http-status"] = status_figure(d)
        if d.latencies_ms:
            figs["chart-http-latency"] = latency_figure(d)

    def card(key: str, label: str, value: str, raw) -> str:
        return (f'<div class="card"><div class="v" data-metric="{key}" data-value="{_e(raw)}">'
                f'{_e(value)}</div><div class="k">{_e(label)}</div></div>')

    err_pct = f"{100 * t['http_errors'] / t['http']:.1f}%" if t["http"] else "-"
    p95 = t["http_p95_ms"]
    cards = "".join([
        card("flows", "flows", f"{t['flows']:,}", t["flows"]),
        card("packets", "packets", f"{t['packets']:,}", t["packets"]),
        card("bytes", "IP bytes", _human_bytes(t["bytes"]), t["bytes"]),
        card("hosts", "clients / servers", f"{t['clients']:,} / {t['servers']:,}",
             f"{t['clients']}/{t['servers']}"),
        card("http", "HTTP transactions", f"{t['http']:,}", t["http"]),
        card("http_4xx", "HTTP 4xx", f"{t['http_4xx']:,}", t["http_4xx"]),
        card("http_errors", "HTTP 5xx or unanswered", f"{t['http_errors']:,} ({err_pct})",
             t["http_errors"]),
        card("http_p95_ms", "HTTP p95 latency", "-" if p95 is None else f"{p95:.1f} ms",
             "" if p95 is None else round(p95, 3)),
        card("dns", "DNS transactions (NXDOMAIN / unanswered)",
             f"{t['dns']:,} ({t['dns_nxdomain']:,} / {t['dns_unanswered']:,})", t["dns"]),
        card("tls", "TLS handshakes (failed)", f"{t['tls']:,} ({t['tls_failed']:,})", t["tls"]),
        card("ssh", "SSH sessions", f"{t['ssh']:,}", t["ssh"]),
        card("alerts", "alerts", f"{t['alerts']:,}", t["alerts"]),
    ])

    def chart(cid: str, heading: str, empty: str) -> str:
        inner = f'<div class="chart" id="{cid}" data-chart="{cid}"></div>' if cid in figs \
            else f'<p class="empty">{_e(empty)}</p>'
        return f"<section><h2>{_e(heading)}</h2>{inner}</section>"

    edges = [{**e, "label": edge_label(e),
              "error_pct": None if e["error_rate"] is None else round(100 * e["error_rate"], 1),
              "req_per_s": round(e["req_per_s"], 3),
              "p50_ms": None if e["p50"] is None else round(e["p50"] * 1000, 3),
              "p95_ms": None if e["p95"] is None else round(e["p95"] * 1000, 3)} for e in d.edges]
    alerts = [{**a, "targets": ", ".join(a["targets"]),
               "evidence": ", ".join(f"{k}={v}" for k, v in sorted(a["evidence"].items()))}
              for a in d.alerts]
    sev = "".join(f'<span class="sev" style="background:{c}">{s}</span> '
                  for s, c in SEVERITY_COLOR.items())
    alerts_html = (_table([("ts", "t"), ("type", "s"), ("severity", "s"), ("source", "s"),
                           ("targets", "s"), ("evidence", "s"), ("summary", "s")],
                          alerts, "alerts-table")
                   if alerts else '<p class="empty" id="alerts-table">No alerts.</p>')
    body = f"""
<header><h1>{_e(title)}</h1>
<p>{_e(source)} · {_e(_iso(t['first']))} – {_e(_iso(t['last']))} ({t['span_s']:,.1f} s)
 · made by mirrorscope report</p></header>
<main>
<pre id="report-errors" hidden></pre>
<div class="cards">{cards}</div>
{chart("chart-traffic", "Traffic over time (alerts marked)", "No flow records.")}
<div class="row">
{chart("chart-talkers", "Top talkers", "No flow records.")}
{chart("chart-ports", "Top destination ports", "No flow records.")}
</div>
{chart("chart-service-map", "Service map: who calls whom (clients left, servers right)", "No flow records.")}
<section><h2>Service map edges</h2>
{_table([("client", "s"), ("server", "s"), ("port", "n"), ("proto", "s"), ("flows", "n"),
         ("bytes", "n"), ("requests", "n"), ("req_per_s", "s"), ("error_pct", "s"),
         ("p50_ms", "s"), ("p95_ms", "s")], edges, "edges-table")}
</section>
<div class="row">
{chart("chart-http-status", "HTTP status codes", "No HTTP transactions.")}
{chart("chart-http-latency", "HTTP latency", "No HTTP latencies.")}
</div>
<section><h2>Top talkers</h2>
{_table([("srcaddr", "s"), ("dstaddr", "s"), ("bytes", "n"), ("packets", "n"), ("flows", "n")],
        d.talkers, "talkers-table")}</section>
<section><h2>Alerts</h2><p>{sev}</p>{alerts_html}</section>
</main>"""
    figs_json = json.dumps(figs, separators=(",", ":")).replace("</", "<\\/")
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<script>{ERROR_HOOK}</script>
<style>{CSS}</style>
<script>{plotly_js}</script>
</head><body>
{body}
<script>
(function () {{
  var figs = {figs_json};
  var ids = Object.keys(figs), done = 0;
  ids.forEach(function (id) {{
    var f = figs[id];
    Plotly.newPlot(id, f.data, f.layout, {{displaylogo: false, responsive: true}})
      .then(function () {{ done += 1; document.body.dataset.chartsRendered = String(done); }})
      .catch(function (e) {{ __reportError('plot ' + id + ': ' + e); }});
  }});
  document.body.dataset.charts = String(ids.length);
  if (!ids.length) document.body.dataset.chartsRendered = '0';
}})();
</script>
</body></html>
"""
