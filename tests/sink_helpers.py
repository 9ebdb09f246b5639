"""Helpers of the sink tests (no conftest): a real moto server on a free loopback port, and
record factories."""

from __future__ import annotations

import os
import signal


from schemas.records import (Alert, DnsAnswer, DnsTransaction, FlowRecord, HttpTransaction, SshSession,
                             TlsCertificate, TlsHandshake)

from tests.services.kafka_service import free_port  # noqa: F401  (re-exported for the tests)
from tests.services.moto_service import CREDENTIALS, MotoServer  # noqa: F401  (re-exported)


class Moto(MotoServer):
    """The shared moto launcher, plus ``pause``/``resume`` (SIGSTOP/SIGCONT): the endpoint
    becomes unreachable -- connections hang and time out -- while keeping its state."""

    def start(self, timeout: float = 30.0) -> "Moto":
        super().start(timeout)
        return self

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        super().stop()



def client(service: str, moto: Moto, **cfg):
    import boto3
    from botocore.config import Config
    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(**cfg) if cfg else None)


HOUR = 3600
T0 = 1_780_000_000 - (1_780_000_000 % HOUR)  # 2026-05-28T20:00:00Z, an hour boundary


def make_flow(i: int, ts: float | None = None, proto: int = 6) -> FlowRecord:
    end = int(ts if ts is not None else T0 + i)
    return FlowRecord(
        version=5, account_id="123456789012" if i % 2 else None, interface_id=None,
        srcaddr=f"10.0.{i % 250}.{i % 7 + 1}", dstaddr="10.1.0.9", srcport=40000 + i % 20000,
        dstport=80 if i % 3 else 443, protocol=proto, packets=10 + i, bytes=1000 + 7 * i,
        start=end - 2, end=end, action=None, log_status="OK", vpc_id="vpc-1" if i % 2 else None,
        subnet_id=None, instance_id=None, tcp_flags=0x13, type="IPv4",
        pkt_srcaddr=f"10.0.{i % 250}.{i % 7 + 1}", pkt_dstaddr="10.1.0.9", region=None,
        az_id=None, sublocation_type=None, sublocation_id=None, pkt_src_aws_service=None,
        pkt_dst_aws_service=None, flow_direction="egress" if i % 2 else None,
        traffic_path=None if i % 5 else 1, flow_id=f"flow-{i:08d}", community_id=f"1:abc+/{i}=",
        vni=None if i % 4 == 0 else 42 + i % 3, mirror_source="10.0.0.5", orig_pkts=6 + i,
        orig_bytes=600 + i, resp_pkts=4, resp_bytes=400 + 6 * i, duration=2.0 + i / 1000,
        conn_state=("SF", "S0", "REJ", "RSTO")[i % 4], history="ShADadFf",
        app_proto="http" if i % 3 else None, end_reason="fin", truncated_pkts=0,
        fragment_pkts=i % 2)


def make_http(i: int, ts: float | None = None, status: int | None = 200) -> HttpTransaction:
    return HttpTransaction(
        http_id=f"http-{i:08d}", ts=ts if ts is not None else T0 + i + 0.25,
        community_id=f"1:x{i}", vni=42, srcaddr="10.0.0.1", srcport=50000 + i % 1000,
        dstaddr="10.0.0.2", dstport=80, trans_depth=1 + i % 3, method="GET",
        host=f"svc{i % 4}.internal" if i % 5 else None, uri=f"/p/{i}?q=é", version="1.1",
        user_agent="curl/8", referrer=None, status_code=status, status_msg="OK" if status else None,
        request_body_len=0, response_body_len=10 * i, request_content_type=None,
        response_content_type="text/html", latency=0.01 if status else None,
        tags=[] if i % 3 else ["gap", "truncated"], authorization=None, proxy_authorization=None,
        cookie="<redacted>" if i % 7 == 0 else None, set_cookie=None, flow_direction=None)


def make_alert(i: int, ts: float | None = None, type_: str = "port_scan",
               severity: str = "high") -> Alert:
    t = ts if ts is not None else T0 + i
    return Alert(alert_id=f"alert-{i:06d}", ts=t, type=type_, severity=severity,
                     source=f"10.0.0.{i % 200}", targets=["10.1.0.1", "10.1.0.2"][: 1 + i % 2],
                     vni=None if i % 2 else 7, interface_id=None, window_start=t - 60,
                     window_end=t, evidence={"ports": 100 + i, "hosts": 1}, summary=f"scan #{i}")


def make_dns(i: int, ts: float | None = None, answered: bool = True) -> DnsTransaction:
    """A resolver's answer (A with a CNAME first, every third one NXDOMAIN), or an unanswered
    query; names may carry exfiltration-style labels, which nothing redacts."""
    name = f"svc{i % 5}.internal.example." if i % 4 else f"dGVzdC1{i:04x}.tunnel.example."
    nx = i % 3 == 0
    answers = [] if (nx or not answered) else [
        DnsAnswer(name=name, type="CNAME", ttl=300, data=f"lb{i % 2}.example."),
        DnsAnswer(name=f"lb{i % 2}.example.", type="A", ttl=60, data=f"192.0.2.{i % 250 + 1}")]
    return DnsTransaction(
        dns_id=f"dns-{i:08d}", ts=ts if ts is not None else T0 + i + 0.125,
        community_id=f"1:d{i}", vni=None if i % 4 == 0 else 42, srcaddr=f"10.0.1.{i % 200 + 1}",
        srcport=30000 + i % 30000, dstaddr="10.0.0.2", dstport=53,
        transport="tcp" if i % 7 == 0 else "udp", trans_id=(i * 7919) & 0xFFFF, query=name,
        qclass=1, qtype=1, qtype_name="A", rcode=(3 if nx else 0) if answered else None,
        rcode_name=("NXDOMAIN" if nx else "NOERROR") if answered else None,
        authoritative=False, truncated=False, recursion_desired=True,
        recursion_available=answered, answers=answers, rtt=0.0021 * (1 + i % 4) if answered else None,
        tags=[] if answered else ["unanswered"], flow_direction="egress" if i % 2 else None)


def make_tls(i: int, ts: float | None = None, established: bool = True) -> TlsHandshake:
    """A TLS 1.2 handshake with a two-certificate chain (every other one TLS 1.3: no chain
    on the wire), or one that failed with an alert."""
    tls13 = i % 2 == 1
    host = f"api{i % 3}.example.com"
    chain = [] if tls13 else [
        TlsCertificate(subject=f"CN={host}", issuer="CN=Example CA,O=Example", serial=f"{i:x}",
                       not_before=T0 - 86400 * 30, not_after=T0 + 86400 * 60,
                       sans=[host, f"*.{host}"], sha256=f"{i:064x}", self_signed=False),
        TlsCertificate(subject="CN=Example CA,O=Example", issuer="CN=Example CA,O=Example",
                       serial="1", not_before=T0 - 86400 * 900, not_after=T0 + 86400 * 900,
                       sans=[], sha256="ab" * 32, self_signed=True)]
    return TlsHandshake(
        tls_id=f"tls-{i:08d}", ts=ts if ts is not None else T0 + i + 0.5, community_id=f"1:t{i}",
        vni=42, srcaddr=f"10.0.2.{i % 200 + 1}", srcport=41000 + i % 20000, dstaddr="10.0.0.3",
        dstport=443, version="TLSv1.3" if tls13 else "TLSv1.2",
        cipher="TLS_AES_128_GCM_SHA256" if tls13 else "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        server_name=host, alpn_offered=["h2", "http/1.1"], alpn="h2" if established else None,
        ja4="t13d1516h2_8daaf6152771_02713d6af862", ja4s="t130200_1301_234ea6891581",
        resumed=i % 5 == 4, established=established,
        alert=None if established else "handshake_failure", cert_chain=chain,
        tags=[] if established else ["failed"], flow_direction=None)


def make_ssh(i: int, ts: float | None = None) -> SshSession:
    return SshSession(
        ssh_id=f"ssh-{i:08d}", ts=ts if ts is not None else T0 + i + 0.75, community_id=f"1:s{i}",
        vni=None, srcaddr=f"10.0.3.{i % 200 + 1}", srcport=52000 + i % 10000, dstaddr="10.0.0.4",
        dstport=22, client="SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13",
        server="SSH-2.0-OpenSSH_8.9p1" if i % 2 else "SSH-2.0-dropbear_2022.83",
        hassh="ec7378c1a92f5a8dde7e8b7a1ddf33d1", hassh_server="b12d2871a1189eff20364cf5333619ee",
        kex_alg="curve25519-sha256", host_key_alg="ssh-ed25519",
        cipher_alg="chacha20-poly1305@openssh.com", mac_alg=None, compression_alg="none",
        tags=[], flow_direction=None)
