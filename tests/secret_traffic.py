"""Mirror traffic whose HTTP requests carry one of each kind of secret issue 13 lists, each
with a unique marker, for the tests that look for the markers in every output.

Every request also says which kind it is in a harmless parameter (``kind=``), so a test can
check that each request was analysed (and redacted), not merely lost."""

from __future__ import annotations

import json
from pathlib import Path

from tests.services.traffic import capture_of, tcp_flows, write_pcap

CUSTOM_PARAM = "tenant_passage"  # not in the defaults: added with --redact-param

# kind -> (request line target, extra header lines, the secret markers it carries)
SECRETS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "query-token": ("/api/v1/items?kind=query-token&token=MSKTOKEN1a2b3c", "", ("MSKTOKEN1a2b3c",)),
    "query-password": ("/login?kind=query-password&user=bob&password=MSKPASSWD9z8y", "",
                       ("MSKPASSWD9z8y",)),
    "query-api-key": ("/maps?kind=query-api-key&api_key=MSKAPIKEY7x6w", "", ("MSKAPIKEY7x6w",)),
    "presigned-s3": ("/bucket/obj.bin?kind=presigned-s3&X-Amz-Algorithm=AWS4-HMAC-SHA256"
                     "&X-Amz-Credential=MSKAKIACRED5v4u%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
                     "&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
                     "&X-Amz-Signature=MSKAMZSIG3t2s1r", "", ("MSKAKIACRED5v4u", "MSKAMZSIG3t2s1r")),
    "path-segment": ("/v2/token/MSKPATHTOK0q9p/profile?kind=path-segment", "", ("MSKPATHTOK0q9p",)),
    "path-param-session": ("/shop;jsessionid=MSKJSESS8o7n?kind=path-param-session", "",
                           ("MSKJSESS8o7n",)),
    "userinfo": ("http://alice:MSKUSERINFO6m5l@proxy.example/?kind=userinfo", "",
                 ("MSKUSERINFO6m5l",)),
    "referer-query": ("/next?kind=referer-query",
                      "Referer: https://idp.example/cb?state=1&access_token=MSKREFTOK4k3j\r\n",
                      ("MSKREFTOK4k3j",)),
    "referer-userinfo": ("/next?kind=referer-userinfo",
                         "Referer: https://carol:MSKREFPW2i1h@site.example/page\r\n",
                         ("MSKREFPW2i1h",)),
    "authorization": ("/secure?kind=authorization", "Authorization: Bearer MSKBEARER0g9f\r\n",
                      ("MSKBEARER0g9f",)),
    "cookie": ("/cart?kind=cookie", "Cookie: theme=dark; sid=MSKCOOKIE8e7d\r\n", ("MSKCOOKIE8e7d",)),
    "custom-param": (f"/report?kind=custom-param&{CUSTOM_PARAM}=MSKCUSTOM6c5b", "",
                     ("MSKCUSTOM6c5b",)),
    # an attack pattern beside a credential: the detectors see it (an alert, detector state)
    "attack-with-token": ("/search?kind=attack-with-token&q=1'%20or%201=1--&session_token="
                          "MSKATTACK4a3z", "", ("MSKATTACK4a3z",)),
}
MARKERS = tuple(m for _, _, ms in SECRETS.values() for m in ms)
# The detectors fire on the one attack-pattern request (tests only: the default needs more).
DETECT_CONFIG = {"http_attack": {"min_hits": 1}}


def request(target: str, headers: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: t\r\n{headers}\r\n"
            .encode())


def write_secret_capture(path: Path, repeat: int = 1) -> int:
    """A pcap of one HTTP conversation per secret kind (``repeat`` times each, every one from
    its own client); returns the number of conversations."""
    grams = []
    n = 0
    for k, (target, headers, _) in enumerate(SECRETS.values()):
        grams += tcp_flows(repeat, seed=100 + k, client_net=f"10.{50 + k}.0.0",
                           request=request(target, headers))
        n += repeat
    write_pcap(path, capture_of(grams))
    return n


def write_detect_config(path: Path) -> Path:
    path.write_text(json.dumps(DETECT_CONFIG))
    return path


def leaks(blob: bytes | str) -> list[str]:
    """The markers found in ``blob`` (raw, and percent-decoded once for URIs)."""
    from urllib.parse import unquote_plus
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    dec = unquote_plus(text)
    return [m for m in MARKERS if m in text or m in dec]
