"""The terminal summary of an analysis (`mirrorscope analyze`, and `collect --embedded` when it
stops): packets, flows, top talkers, HTTP, DNS/TLS/SSH counts and alerts, as rich tables. Shared by the command line
and the live mode, so neither imports the other."""

from __future__ import annotations

from stream_app.lazycli import LazyConsole, Table

err = LazyConsole(stderr=True, soft_wrap=True)


def print_summary(res, out=None) -> None:
    out = out or LazyConsole()
    t = Table(title="Packets", show_header=False, title_justify="left")
    t.add_row("frames read", f"{res.frames:,}")
    t.add_row("decoded", f"{res.decoded:,}")
    t.add_row("dropped", f"{res.dropped:,}")
    for reason, n in sorted(res.drops.items(), key=lambda kv: -kv[1]):
        if n:
            t.add_row(f"  {reason}", f"{n:,}")
    out.print(t)

    fs = res.flows
    out.print(f"[bold]Flows[/bold]: {fs.flows:,} ({fs.packets:,} packets, {fs.bytes:,} IP bytes)")
    t = Table()
    t.add_column("protocol")
    t.add_column("flows", justify="right")
    for proto, n in fs.by_proto.most_common():
        t.add_row(proto, f"{n:,}")
    out.print(t)
    if fs.vnis:
        out.print("VNIs: " + ", ".join(f"{v} ({n:,} flows)" for v, n in fs.vnis.most_common(10)))

    talkers = fs.top_talkers()
    if talkers:
        t = Table(title="Top talkers (bytes, both directions)", title_justify="left")
        t.add_column("source")
        t.add_column("destination")
        t.add_column("bytes", justify="right")
        for a, b, v in talkers:
            t.add_row(a, b, f"{v:,}")
        out.print(t)
    hs = res.http
    if hs.transactions:
        out.print(f"[bold]HTTP[/bold]: {hs.transactions:,} transactions")
        t = Table()
        t.add_column("status")
        t.add_column("count", justify="right")
        for cls, n in sorted(hs.by_class.items()):
            t.add_row(cls, f"{n:,}")
        out.print(t)
        if hs.hosts:
            out.print("Top hosts: " + ", ".join(f"{h} ({n:,})" for h, n in hs.hosts.most_common(5)))
    rc = getattr(res, "records", None)
    if rc is not None:
        named = [(label, rc.by_kind.get(k, 0)) for k, label in
                 (("dns", "DNS transactions"), ("tls", "TLS handshakes"), ("ssh", "SSH sessions"))]
        if any(n for _, n in named):
            out.print(", ".join(f"[bold]{label}[/bold]: {n:,}" for label, n in named))
    al = res.alerts
    if al.alerts:
        out.print(f"[bold red]Alerts[/bold red]: {al.alerts:,} ("
                  + ", ".join(f"{t} {n:,}" for t, n in al.by_type.most_common()) + ")")
        t = Table()
        for col in ("type", "severity", "source", "summary"):
            t.add_column(col)
        for a in al.first:
            t.add_row(a.type, a.severity, a.source or "-", a.summary)
        out.print(t)
        if al.alerts > len(al.first):
            out.print(f"... and {al.alerts - len(al.first):,} more in alerts.jsonl")
    else:
        out.print("[bold]Alerts[/bold]: " + ("none" if res.detect else "detectors off (--no-detect)"))
    for p in res.problems:
        err.print(f"[yellow]warning:[/yellow] {p}", highlight=False)
    out.print("wrote " + ", ".join(res.outputs.values()))
