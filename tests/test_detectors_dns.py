"""DNS detectors (docs/detectors/dns_tunnel.md, nxdomain_storm.md) on records the core made from
crafted captures: an iodine-style burst of long random subdomains, a TXT tunnel, an NXDOMAIN
storm, and the benign look-alikes that must stay quiet; in memory and with two engines sharing
one Redis (as distributed workers do), which must raise the same alerts."""

from __future__ import annotations

import base64
import random

import pytest
import redis

from stream_app.core.detectors import DetectConfig, Detectors
from stream_app.core.detectors_dns import DnsTunnelConfig, registered_domain
from stream_app.state.detectors import RedisDetectorState
from tests.craft import write_pcap, udp_frame
from tests.dns_helpers import core_run
from tests.test_dns import query, response

C, S = "10.1.0.5", "10.1.0.2"


def capture(tmp_path, items, name="c.pcap"):
    """items: (qname, qtype, rcode or None for no answer); one source port per query, as a
    resolver library does."""
    frames, t = [], 1_700_000_000.0
    for i, (qname, qtype, rcode) in enumerate(items):
        port = 20000 + i % 30000
        frames.append((t, udp_frame(C, S, port, 53, query(qname, i & 0xFFFF, qtype))))
        t += 0.002
        if rcode is not None:
            frames.append((t, udp_frame(S, C, 53, port, response(qname, [], i & 0xFFFF, qtype, rcode))))
            t += 0.002
    return core_run([write_pcap(tmp_path / name, frames)], detect=None)[0].dns


def tunnel_names(n, domain="t.evil-tunnel.net", seed=1):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        chunk = base64.b32encode(rnd.randbytes(35)).decode().rstrip("=").lower()
        out.append((f"{chunk[:50]}.{chunk[50:]}.{domain}", 10, 0))  # NULL, as iodine
    return out


def observe(records, engines=1, state=None):
    det = [Detectors(DetectConfig(), state=state() if state else None) for _ in range(engines)]
    alerts = []
    for i in range(0, len(records), 25):  # batches, spread over the engines
        alerts += det[(i // 25) % engines].observe([], [], dns=records[i:i + 25])
    return alerts


def test_registered_domain():
    assert registered_domain("a.b.Example.COM") == ("example.com", "a.b")
    assert registered_domain("x.y.example.co.uk") == ("example.co.uk", "x.y")
    assert registered_domain("example.com") == ("example.com", "")


def test_iodine_style_burst_alerts(tmp_path):
    recs = capture(tmp_path, tunnel_names(120))
    alerts = observe(recs)
    assert [(a.type, a.source, a.targets) for a in alerts] == [("dns_tunnel", C, ["evil-tunnel.net"])]
    ev = alerts[0].evidence
    assert ev["distinct_subdomains"] >= 60 and ev["encoded_queries"] >= 30


def test_txt_volume_alerts(tmp_path):
    names = [(f"s{i}x.c2.example.org", 16, 0) for i in range(110)]  # short names, TXT volume
    alerts = observe(capture(tmp_path, names))
    assert [(a.type, a.targets) for a in alerts] == [("dns_tunnel", ["example.org"])]
    assert alerts[0].evidence["txt_null_queries"] >= 100


def test_benign_lookups_stay_quiet(tmp_path):
    # Many distinct ordinary names under one domain (a CDN, a crawler) and reverse lookups.
    names = [(f"img{i}.static.example.com", 1, 0) for i in range(200)]
    names += [(f"{i}.{i % 7}.0.10.in-addr.arpa", 12, 0) for i in range(200)]
    names += [("missing.example.com", 1, 3)] * 80  # one name retried: no storm
    assert observe(capture(tmp_path, names)) == []


def test_nxdomain_storm_alerts(tmp_path):
    rnd = random.Random(7)
    names = [("".join(rnd.choice("abcdefghijklmnop") for _ in range(12)) + ".com", 1, 3)
             for _ in range(70)]
    alerts = observe(capture(tmp_path, names))
    assert [(a.type, a.source, a.targets) for a in alerts] == [("nxdomain_storm", C, [S])]
    assert alerts[0].evidence == {"nxdomain": 50, "distinct_names": 50}


def test_thresholds_are_config(tmp_path):
    recs = capture(tmp_path, tunnel_names(120))
    det = Detectors(DetectConfig.from_dict({"dns_tunnel": {"min_distinct_subdomains": 500, "min_txt_queries": 500}}))
    assert det.observe([], [], dns=recs) == []
    assert Detectors(DetectConfig.from_dict({"dns_tunnel": None})).observe([], [], dns=recs) == []


def test_two_engines_sharing_redis_alert_as_one(tmp_path, redis_db):
    recs = capture(tmp_path, tunnel_names(120))
    rnd = random.Random(3)
    recs += capture(tmp_path, [(f"{rnd.getrandbits(48):x}.net", 1, 3) for _ in range(70)], "nx.pcap")
    alone = observe(recs)
    client = redis.Redis.from_url(redis_db)
    shared = observe(recs, 2, lambda: RedisDetectorState(client, prefix="md:dns"))
    assert sorted(a.type for a in alone) == ["dns_tunnel", "nxdomain_storm"]
    key = lambda a: (a.alert_id, a.type, a.source, a.targets, a.evidence)  # noqa: E731
    assert sorted(map(key, shared)) == sorted(map(key, alone))
    assert DnsTunnelConfig().min_distinct_subdomains == 60  # the documented default
