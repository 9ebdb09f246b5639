"""tshark's view of the TLS handshakes in a capture, for the differential tests: per client
(address, port), the fields tshark 4.0 shows, and the JA4/JA4S computed from tshark's own
decode of the hellos (so our framing and fingerprint code is checked against Wireshark's
dissector, not against itself)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

SEP = "\x1f"


def _rows(tshark: str, path: Path, display: str, *fields: str) -> list[list[str]]:
    out = subprocess.run([tshark, "-n", "-r", str(path), "-Y", display, "-T", "fields",
                          "-E", "occurrence=a", "-E", f"aggregator={SEP}",
                          *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


def _last(v: str) -> str:
    """The innermost of a field repeated by encapsulation (VXLAN: outer then inner IP)."""
    return v.split(SEP)[-1]


def _ints(v: str) -> list[int]:
    return [int(x, 0) for x in v.split(SEP) if x]


def _grease(v: int) -> bool:
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


def _h12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


VER = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3"}
NAMES = {0x0304: "TLSv1.3", 0x0303: "TLSv1.2", 0x0302: "TLSv1.1", 0x0301: "TLSv1"}


def _alpn2(a: str) -> str:
    if not a:
        return "00"
    if a[0].isascii() and a[0].isalnum() and a[-1].isascii() and a[-1].isalnum():
        return a[0] + a[-1]
    h = a.encode("latin-1").hex()
    return h[0] + h[-1]


def tshark_tls(tshark: str, path: Path) -> dict[tuple[str, int], dict]:
    hs: dict[tuple[str, int], dict] = {}
    for src, sport, vers, ciphers, exts, sigs, sni, alpn, sv in _rows(
            tshark, path, "tls.handshake.type == 1", "ip.src", "tcp.srcport",
            "tls.handshake.version", "tls.handshake.ciphersuite", "tls.handshake.extension.type",
            "tls.handshake.sig_hash_alg", "tls.handshake.extensions_server_name",
            "tls.handshake.extensions_alpn_str", "tls.handshake.extensions.supported_version"):
        key = (_last(src), int(_last(sport)))
        if key in hs:
            continue  # a second ClientHello (after a HelloRetryRequest): ours keeps the first
        cs = [c for c in _ints(ciphers) if not _grease(c)]
        ex = [e for e in _ints(exts) if not _grease(e)]
        sg = [s for s in _ints(sigs) if not _grease(s)]
        svs = [v for v in _ints(sv) if not _grease(v)]
        ver = VER.get(max(svs) if svs else _ints(vers)[0], "00")
        alpns = alpn.split(SEP) if alpn else []
        rest = sorted(f"{e:04x}" for e in ex if e not in (0, 16))
        c = _h12(",".join(rest) + ("_" + ",".join(f"{s:04x}" for s in sg) if sg else "")) \
            if rest else "0" * 12
        ja4 = (f"t{ver}{'d' if 0 in ex else 'i'}{min(len(cs), 99):02d}{min(len(ex), 99):02d}"
               f"{_alpn2(alpns[0] if alpns else '')}_"
               f"{_h12(','.join(sorted(f'{x:04x}' for x in cs))) if cs else '0' * 12}_{c}")
        hs[key] = {"server_name": sni or None, "alpn_offered": alpns, "ja4": ja4,
                   "version": None, "cipher": None, "alpn": None, "ja4s": None, "certs": []}
    for dst, dport, vers, cipher, exts, alpn, sv in _rows(
            tshark, path, "tls.handshake.type == 2", "ip.dst", "tcp.dstport",
            "tls.handshake.version", "tls.handshake.ciphersuite", "tls.handshake.extension.type",
            "tls.handshake.extensions_alpn_str", "tls.handshake.extensions.supported_version"):
        h = hs.setdefault((_last(dst), int(_last(dport))), {"certs": []})
        version = _ints(sv)[0] if sv else _ints(vers)[0]
        cs = _ints(cipher)[0]
        ex = _ints(exts)
        h.update(version=NAMES.get(version), cipher_id=cs, alpn=alpn or None,
                 ja4s=f"t{VER.get(version, '00')}{min(len(ex), 99):02d}{_alpn2(alpn)}_{cs:04x}_"
                      f"{_h12(','.join(f'{e:04x}' for e in ex)) if ex else '0' * 12}")
    for dst, dport, certs in _rows(tshark, path, "tls.handshake.type == 11", "ip.dst",
                                   "tcp.dstport", "tls.handshake.certificate"):
        h = hs.setdefault((_last(dst), int(_last(dport))), {"certs": []})
        h["certs"] = [hashlib.sha256(bytes.fromhex(c.replace(":", ""))).hexdigest()
                      for c in certs.split(SEP) if c]
    return hs
