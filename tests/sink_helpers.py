"""Helpers of the sink tests (no conftest): a real moto server on a free loopback port, and
record factories."""

from __future__ import annotations

import os
import signal


from schemas.records import Alert, FlowRecord, HttpTransaction

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
