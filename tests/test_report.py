"""`mirrorscope report`: the HTML file opened in headless Chromium (Debian's chromium, no
network: a Content-Security-Policy in the page and a resolver that resolves nothing). The page
loads with no console errors, every chart renders, and the numbers in the rendered DOM equal
the records; a screenshot is kept in the test's tmp dir."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from stream_app.adapters.embedded import analyze
from tests.conftest import CORPUS, SAMPLE

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
                  "--window-size=1400,2600", "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is required (Debian package chromium; .ci/setup.sh installs it)"
    return exe


class Dom(HTMLParser):
    """The rendered DOM: data-metric values, table cells by table id and column, body data."""

    def __init__(self, text: str):
        super().__init__()
        self.metrics: dict[str, str] = {}
        self.tables: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.body: dict[str, str] = {}
        self.errors_text = ""
        self.errors_hidden = None
        self.svgs = 0
        self._table = None
        self._col = None
        self._pre = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = {k: v for k, v in a.items() if k.startswith("data-")}
        if "data-metric" in a:
            self.metrics[a["data-metric"]] = a.get("data-value", "")
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table:
            self.tables[self._table].append({})
        if tag == "td" and self._table and "data-col" in a:
            self._col = a["data-col"]
            self.tables[self._table][-1][self._col] = ""
        if tag == "pre" and a.get("id") == "report-errors":
            self._pre = True
            self.errors_hidden = "hidden" in a
        if tag == "svg" and "main-svg" in (a.get("class") or ""):
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag == "td":
            self._col = None
        if tag == "table":
            self._table = None
        if tag == "pre":
            self._pre = False

    def handle_data(self, data):
        if self._col and self._table:
            self.tables[self._table][-1][self._col] += data
        if self._pre:
            self.errors_text += data


def rows(table: list[dict]) -> list[dict]:
    return [r for r in table if r]  # the header row has no data cells


def num(s: str) -> int:
    return int(s.replace(",", "")) if s.strip() else 0


def open_report(chromium: str, html: Path, shot: Path) -> tuple[Dom, str]:
    url = html.resolve().as_uri()
    d = subprocess.run([chromium, *CHROMIUM_FLAGS, "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    assert d.returncode == 0, d.stderr[-2000:]
    s = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--screenshot={shot}", url],
                       capture_output=True, text=True, timeout=120)
    assert s.returncode == 0, s.stderr[-2000:]
    return Dom(d.stdout), d.stderr + s.stderr


def load(folder: Path, kind: str) -> list[dict]:
    p = folder / f"{kind}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


CASES = {
    "sample": (SAMPLE, None),
    # A real capture, with the beaconing detector's thresholds lowered so that it alerts
    # (49 HTTP connections from one client at a steady pace): the alert is on the page.
    "corpus": (CORPUS / "zeek__http_methods.pcap",
               {"beaconing": {"min_events": 3, "min_interval": 0.01}}),
    # One client and a dozen servers: a service map with many edges.
    "corpus-wikipedia": (CORPUS / "zeek__wikipedia.pcap", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_report_renders_the_records(case, chromium, tmp_path):
    from stream_app.core.detectors import DetectConfig

    capture, detect = CASES[case]
    out = tmp_path / "out"
    analyze([capture], out, detect=DetectConfig.from_dict(detect) if detect else DetectConfig())
    flows, http, alerts = load(out, "flows"), load(out, "http"), load(out, "alerts")
    assert flows and http
    if case == "corpus":
        assert alerts, "the lowered thresholds should make the beaconing detector alert"

    html = tmp_path / "report.html"
    p = subprocess.run([sys.executable, "-m", "stream_app.cli", "report", str(html), "--in", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    text = html.read_text()
    # Self-contained: nothing to fetch, and a policy that forbids fetching.
    assert "default-src 'none'" in text
    assert "<script src" not in text and "<link" not in text

    shot = tmp_path / f"report-{case}.png"
    dom, log = open_report(chromium, html, shot)
    assert shot.exists() and shot.stat().st_size > 20_000 and shot.read_bytes()[:4] == b"\x89PNG"

    # No errors: none recorded by the page (uncaught errors, console.error, blocked fetches)
    # and none in Chromium's console log.
    assert dom.errors_hidden is True and dom.errors_text == "", dom.errors_text
    console = [x for x in log.splitlines() if "CONSOLE" in x]
    assert not [x for x in console if "rror" in x or "Uncaught" in x or "Refused" in x], console
    # Every chart drew (plotly made its SVG).
    expected_charts = 6
    assert dom.body.get("data-charts") == dom.body.get("data-charts-rendered") == str(expected_charts)
    assert dom.svgs >= expected_charts

    # The numbers are the records'.
    m = dom.metrics
    assert int(m["flows"]) == len(flows)
    assert int(m["packets"]) == sum(f["packets"] for f in flows)
    assert int(m["bytes"]) == sum(f["bytes"] for f in flows)
    assert int(m["http"]) == len(http)
    assert int(m["http_4xx"]) == sum(1 for h in http if h["status_code"] is not None
                                     and 400 <= h["status_code"] < 500)
    assert int(m["http_errors"]) == sum(1 for h in http if h["status_code"] is None
                                        or h["status_code"] >= 500)
    assert int(m["alerts"]) == len(alerts)
    assert m["hosts"] == f"{len({f['srcaddr'] for f in flows})}/{len({f['dstaddr'] for f in flows})}"

    pair = collections.Counter()
    for f in flows:
        pair[(f["srcaddr"], f["dstaddr"])] += f["bytes"]
    talkers = rows(dom.tables["talkers-table"])
    assert [(r["srcaddr"], r["dstaddr"], num(r["bytes"])) for r in talkers] == \
        [(a, b, n) for (a, b), n in pair.most_common(10)]

    # Service map edges: flows and HTTP requests per client -> server:port.
    edge_flows = collections.Counter((f["srcaddr"], f["dstaddr"], f["dstport"]) for f in flows)
    edge_reqs = collections.Counter((h["srcaddr"], h["dstaddr"], h["dstport"]) for h in http)
    edges = rows(dom.tables["edges-table"])
    assert len(edges) == min(30, len(edge_flows))
    for r in edges:
        k = (r["client"], r["server"], num(r["port"]))
        assert num(r["flows"]) == edge_flows[k]
        assert num(r["requests"]) == edge_reqs[k]

    if alerts:
        shown = rows(dom.tables["alerts-table"])
        assert [(r["type"], r["severity"], r["source"]) for r in shown] == \
            [(a["type"], a["severity"], a["source"]) for a in sorted(alerts, key=lambda a: (a["ts"], a["alert_id"]))]
        for r, a in zip(shown, sorted(alerts, key=lambda a: (a["ts"], a["alert_id"]))):
            assert r["evidence"] == ", ".join(f"{k}={v}" for k, v in sorted(a["evidence"].items()))
    else:
        assert "alerts-table" not in dom.tables


def test_report_of_nothing_and_bad_input(chromium, tmp_path):
    (tmp_path / "empty").mkdir()
    html = tmp_path / "empty.html"
    p = subprocess.run([sys.executable, "-m", "stream_app.cli", "report", str(html), "--in",
                        str(tmp_path / "empty")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    dom, _ = open_report(chromium, html, tmp_path / "empty.png")
    assert dom.errors_text == "" and dom.body.get("data-charts") == "0"
    assert dom.metrics["flows"] == "0" and dom.metrics["alerts"] == "0"
    p = subprocess.run([sys.executable, "-m", "stream_app.cli", "report", str(html), "--in",
                        str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no such folder" in p.stderr and "Traceback" not in p.stderr
