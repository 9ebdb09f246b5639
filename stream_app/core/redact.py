"""Redaction of credentials that travel inside URIs and free text. Pure functions, no I/O.

Applied in the core (the HTTP parser calls ``redact_request`` on every request it parses,
before the transaction is kept in flow state, handed to the detectors or written anywhere), so
embedded and distributed modes agree, and nothing downstream ever sees the value.

What is redacted (the value becomes ``[redacted]``; names stay, so a record still says *that*
a token was sent):

- **query parameters** (and ``;name=value`` path parameters, and ``name=value`` pairs in a
  fragment) whose name, percent-decoded and lowercased, is in ``DEFAULT_PARAMS`` or contains
  one of ``DEFAULT_PARAM_PARTS``: ``?token=``, ``?password=``, ``api_key``, ``X-Amz-Signature``
  and ``X-Amz-Credential`` of presigned S3 URLs, OAuth ``access_token``/``code``,
  ``;jsessionid=``, Azure SAS ``sig``, ...;
- **path segments** that follow a segment named in ``DEFAULT_PATH_SEGMENTS``
  (``/token/<value>``, ``/api_key/<value>``, ``/password/<value>``, ...), and segments that
  match ``DEFAULT_PATH_PATTERNS`` (a Telegram bot token ``/bot123456:AA...``);
- **userinfo** of an absolute URI (``http://user:secret@host/``: the whole ``user:secret``);
- the same in the ``Referer`` header and in a ``Host`` header that (wrongly) carries userinfo.

``RedactConfig(params=..., path_segments=...)`` adds names to the defaults (the commands'
``--redact-param`` / ``--redact-path-segment``); they never remove one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

REDACTED = "[redacted]"

# Parameter names that carry a credential (compared lowercased, percent-decoded).
DEFAULT_PARAMS = frozenset({
    "key", "apikey", "api_key", "api-key", "auth", "authorization", "authkey", "code",
    "pass", "passwd", "pwd", "pin", "otp", "sig", "sid", "jwt", "ticket", "hmac",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "awsaccesskeyid", "x-api-key", "sessionid", "jsessionid", "phpsessid",
    "aspsessionid", "cfid", "cftoken",
})
# ...or whose name contains one of these.
DEFAULT_PARAM_PARTS = ("token", "secret", "password", "passphrase", "signature", "credential",
                       "apikey", "api_key", "access_key", "private_key", "session_key")
# A path segment named like this makes the next segment a credential: /token/<value>.
DEFAULT_PATH_SEGMENTS = frozenset({
    "token", "tokens", "access_token", "apikey", "api_key", "api-key", "key", "keys", "secret",
    "secrets", "password", "passwd", "auth", "session", "sessions", "signature",
})
# A whole path segment that is a credential (kept: the part before the secret).
DEFAULT_PATH_PATTERNS = (
    re.compile(r"(bot\d{3,}:)[A-Za-z0-9_-]{20,}"),  # Telegram bot API: /bot<id>:<token>/
)

_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)", re.S)
# Bounded repeats before the anchor ('://', '='): these run over whole log lines, which can
# hold long base64 (a botocore debug dump), and an unbounded run before an anchor that is
# absent makes the search quadratic in the token's length.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s\"'<>]+")
_NAMES = re.compile(r"[?&;#]([^=&;#?/]*)=")  # parameter names (query, path params, fragment)
_PAIR_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_.%-])([A-Za-z0-9_.%-]{1,64})=([^\s&;\"',]+)")


@dataclass(frozen=True)
class RedactConfig:
    """Names added to the defaults (lowercase or not; compared lowercased)."""

    params: tuple[str, ...] = ()
    path_segments: tuple[str, ...] = ()
    _r: Redactor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_r", Redactor(self))

    def __reduce__(self):  # the compiled Redactor is rebuilt, not pickled
        return RedactConfig, (self.params, self.path_segments)

    @property
    def redactor(self) -> Redactor:
        return self._r


class Redactor:
    def __init__(self, config: RedactConfig):
        self.params = DEFAULT_PARAMS | {p.lower() for p in config.params}
        self.parts = DEFAULT_PARAM_PARTS
        self.segments = DEFAULT_PATH_SEGMENTS | {s.lower() for s in config.path_segments}
        self._cache: dict[str, bool] = {}
        self._safe: set[str] = set()
        self._clean: set[str] = set()

    # -- names ---------------------------------------------------------------------------------
    def secret_name(self, name: str) -> bool:
        hit = self._cache.get(name)
        if hit is None:
            n = unquote_plus(name).strip().lower() if "%" in name or "+" in name \
                else name.strip().lower()
            hit = n in self.params or any(p in n for p in self.parts)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[name] = hit
        return hit

    def _all_safe(self, names: list[str]) -> bool:
        """No credential name among ``names`` (memoised as a set: one C-level subset test for
        the parameter names a site uses again and again)."""
        safe = self._safe
        if safe.issuperset(names):
            return True
        for n in names:
            if n not in safe:
                if self.secret_name(n):
                    return False
                if len(safe) > 4096:
                    safe.clear()
                safe.add(n)
        return True

    def _pairs(self, s: str, sep: str) -> str:
        out = []
        changed = False
        for item in s.split(sep):
            name, eq, value = item.partition("=")
            if eq and value and self.secret_name(name):
                out.append(f"{name}={REDACTED}")
                changed = True
            else:
                out.append(item)
        return sep.join(out) if changed else s

    # -- URIs ----------------------------------------------------------------------------------
    def uri(self, s: str | None) -> str | None:
        """A request target, Referer or any URL with its credentials redacted."""
        if not s or s in self._clean:
            return s
        # Screen (this runs for every request): with no '=' (no parameter), no '@' (no
        # userinfo) and no credential-named segment, nothing can need redacting; str and set
        # operations in C decide that for most URIs without a Python loop.
        if "@" not in s:
            low = s.lower()
            if "/bot" not in low and self.segments.isdisjoint(low.split("/")) and (
                    "=" not in s or self._all_safe(_NAMES.findall(s))):
                # remembered: the same Referer and URIs come back again and again. Only URIs
                # with nothing to redact are kept, so this set never holds a secret.
                if len(self._clean) > 8192:
                    self._clean.clear()
                self._clean.add(s)
                return s
        prefix = ""
        m = _ABSOLUTE.match(s)
        if m:
            scheme, authority, s = m.groups()
            prefix = scheme + self.authority(authority)
        path, qmark, rest = s.partition("?")
        if not qmark:
            path, hmark, frag = path.partition("#")
            query = ""
        else:
            query, hmark, frag = rest.partition("#")
        path = self.path(path)
        if query:
            query = self._pairs(query, "&")
        if frag and "=" in frag:
            frag = self._pairs(frag, "&")
        return prefix + path + (qmark + query if qmark else "") + (hmark + frag if hmark else "")

    def authority(self, a: str | None) -> str | None:
        """host[:port], without the userinfo before an '@'."""
        if not a or "@" not in a:
            return a
        return REDACTED + "@" + a.rpartition("@")[2]

    def path(self, p: str) -> str:
        if ";" not in p:
            low = p.lower()
            if "/bot" not in low and self.segments.isdisjoint(low.split("/")):
                return p
        segs = p.split("/")
        after_name = False
        changed = False
        for i, seg in enumerate(segs):
            name, semi, params = seg.partition(";")
            if after_name and name:
                segs[i] = REDACTED + (semi + self._pairs(params, ";") if semi else "")
                changed = True
                after_name = False
                continue
            new = seg
            if semi and "=" in params:
                new = name + semi + self._pairs(params, ";")
            for pat in DEFAULT_PATH_PATTERNS:
                m = pat.fullmatch(name)
                if m:
                    new = m.group(1) + REDACTED + new[len(name):]
            if new is not seg:
                segs[i] = new
                changed = True
            after_name = name.lower() in self.segments
        return "/".join(segs) if changed else p

    # -- free text (log lines, alert summaries) -----------------------------------------------
    def text(self, s: str | None) -> str | None:
        """Every URL in ``s`` redacted as a URI, and credential-named ``name=value`` pairs."""
        if not s or ("=" not in s and "@" not in s and "://" not in s):
            return s
        if "://" in s:
            s = _URL_IN_TEXT.sub(lambda m: self.uri(m.group(0)), s)
        if "=" not in s:
            return s
        return _PAIR_IN_TEXT.sub(
            lambda m: f"{m.group(1)}={REDACTED}"
            if m.group(2) != REDACTED and self.secret_name(m.group(1)) else m.group(0), s)


DEFAULT = RedactConfig()


def uri_digest(uri: str | None) -> str:
    """A short stable digest standing for a URI where only its identity matters (the
    detectors' distinct-URI counts kept in Redis), so the state never holds the URI."""
    import hashlib
    return hashlib.blake2b((uri or "").encode("utf-8", "surrogatepass"),
                           digest_size=12).hexdigest()


def redact_request(txn, config: RedactConfig = DEFAULT) -> None:
    """Redact a parsed request's URI, Referer and Host in place (an http.Txn, or anything
    with those attributes)."""
    r = config.redactor
    if txn.uri is not None:
        txn.uri = r.uri(txn.uri)
    if txn.referrer is not None:
        txn.referrer = r.uri(txn.referrer)
    if txn.host is not None and "@" in txn.host:
        txn.host = r.authority(txn.host)
