"""Zeek's view of a TCP connection: endpoint states, history letters and conn_state.

Follows Zeek's TCP analyzer and base/protocols/conn (conn_state), reduced to what a mirror
copy can show: SYN, SYN-ACK, ACK, data, FIN and RST per direction. Letters for checksum
errors, gaps, retransmissions and zero windows (C G T W) are not produced.
"""

from __future__ import annotations

import re

# Endpoint states (Zeek's TCP_ENDPOINT_*).
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

_REJ_FROM_ORIG = re.compile(r"\^?S[^HAFGIQ]*R.*")


def update(state: int, peer: int, flags: int) -> tuple[int, int]:
    """New (state, peer state) after an endpoint in ``state`` sends a segment with ``flags``."""
    if flags & RST:
        return RESET, peer
    if flags & SYN:
        if flags & ACK:
            if state in (INACTIVE, SYN_SENT, PARTIAL):
                state = SYN_ACK_SENT
        elif state == INACTIVE:
            state = SYN_SENT
        return state, peer
    if flags & FIN:
        return CLOSED, peer
    if flags & ACK:
        if state in (SYN_SENT, SYN_ACK_SENT) and peer in (SYN_SENT, SYN_ACK_SENT):
            # The ACK that completes the handshake establishes both ends.
            return ESTABLISHED, ESTABLISHED
        if state == SYN_ACK_SENT and peer == INACTIVE:
            return ESTABLISHED, peer
        if state == INACTIVE:
            return PARTIAL, peer
        if state == SYN_SENT and peer in (PARTIAL, ESTABLISHED):
            return ESTABLISHED, peer
    elif state == INACTIVE:
        return PARTIAL, peer
    return state, peer


def letters(flags: int, payload_len: int) -> str:
    """History letters one segment adds (upper case; the caller lowers them for the responder)."""
    out = ""
    if flags & SYN:
        out += "H" if flags & ACK else "S"
    if flags & FIN:
        out += "F"
    if flags & RST:
        out += "R"
    if payload_len:
        out += "D"
    elif flags & ACK and not flags & (SYN | FIN | RST):
        out += "A"
    return out


def conn_state_tcp(os: int, rs: int, history: str, orig_data: int, resp_data: int) -> str:
    """Zeek's conn_state for a TCP connection (base/protocols/conn/main.zeek)."""
    o_inactive = os in (INACTIVE, PARTIAL)
    r_inactive = rs in (INACTIVE, PARTIAL)
    if rs == RESET:
        if os in (SYN_SENT, SYN_ACK_SENT) or (os == RESET and orig_data == 0 and resp_data == 0):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os == RESET:
        if r_inactive:
            return "RSTOS0" if _REJ_FROM_ORIG.fullmatch(history) else "OTH"
        return "RSTO"
    if rs == CLOSED and os == CLOSED:
        return "SF"
    if os == CLOSED:
        return "SH" if r_inactive else "S2"
    if rs == CLOSED:
        return "SHR" if o_inactive else "S3"
    if os == SYN_SENT and rs == INACTIVE:
        return "S0"
    if os == ESTABLISHED and rs == ESTABLISHED:
        return "S1"
    return "OTH"


def conn_state_other(proto: int, orig_pkts: int, resp_pkts: int) -> str:
    """Zeek's conn_state for UDP (and, by the same rule, other port protocols); OTH otherwise."""
    if proto not in (17, 132):
        return "OTH"
    if orig_pkts:
        return "SF" if resp_pkts else "S0"
    return "SHR" if resp_pkts else "OTH"
