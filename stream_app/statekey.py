"""The key that signs the flow state workers keep in Redis: loaded fail-closed.

Whoever can write to Redis and knows this key can make a worker restore bytes of their choosing,
so there is no default: a worker (``worker``, ``kinesis-worker``) refuses to start unless it is
given a key, from a file (``--state-key-file`` / ``MIRRORSCOPE_STATE_KEY_FILE``, what the chart
mounts) or from ``MIRRORSCOPE_STATE_KEY``. ``--insecure-dev-key`` is the one way to run without
one, for a local trial: it uses a published development key and says so in the log.

The MAC is keyed BLAKE2b, whose key is at most 64 bytes. A longer key is refused rather than cut
down to its first 64 bytes: two keys that share a prefix must not silently sign alike. A key under
16 bytes is accepted with a warning (it may be guessable). Surrounding whitespace (a trailing newline in a file or a
Secret) is not part of the key.
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger("mirrorscope.statekey")

MAX_KEY_BYTES = 64  # hashlib.blake2b's key limit (blake2b.MAX_KEY_SIZE)
MIN_KEY_BYTES = 16
ENV_KEY = "MIRRORSCOPE_STATE_KEY"
ENV_FILE = "MIRRORSCOPE_STATE_KEY_FILE"
# Published on purpose: it is what --insecure-dev-key means, never a fallback.
DEV_KEY = b"mirrorscope-development-key"


class StateKeyError(Exception):
    """No usable state key; the message says what to do."""


def check_key(key: bytes, origin: str) -> bytes:
    """``key`` without surrounding whitespace, or StateKeyError naming ``origin``."""
    key = key.strip()
    if not key:
        raise StateKeyError(f"{origin} is empty")
    if len(key) > MAX_KEY_BYTES:
        raise StateKeyError(
            f"{origin} is {len(key)} bytes; the state MAC (keyed BLAKE2b) takes at most "
            f"{MAX_KEY_BYTES}. Use a shorter key (e.g. `head -c 32 /dev/urandom | base64`), "
            f"it is refused rather than truncated")
    if len(key) < MIN_KEY_BYTES:
        log.warning("the state key is short: use at least %d random bytes "
                    "(e.g. `head -c 32 /dev/urandom | base64`)", MIN_KEY_BYTES,
                    extra={"origin": origin, "bytes": len(key)})
    return key


def load_state_key(path: str | os.PathLike | None = None, *, insecure_dev_key: bool = False,
                   environ=None) -> bytes:
    """The state key: from ``path`` (or $MIRRORSCOPE_STATE_KEY_FILE), else from
    $MIRRORSCOPE_STATE_KEY; the development key only with ``insecure_dev_key`` and neither set.
    Raises StateKeyError when there is none, or it is too short or too long."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_FILE) or None
    if path:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                key = f.read()
        except OSError as exc:
            raise StateKeyError(f"state key file {path}: {exc.strerror or exc}") from None
        if mode & stat.S_IROTH:
            log.warning("the state key file is readable by every user: chmod o-r it",
                        extra={"path": str(path)})
        return check_key(key, f"state key file {path}")
    if env.get(ENV_KEY):
        return check_key(env[ENV_KEY].encode(), ENV_KEY)
    if insecure_dev_key:
        log.warning("INSECURE: flow state in Redis is signed with the published development key "
                    "(--insecure-dev-key); anyone who can write to Redis can run code in this "
                    "worker. For local trials only.")
        return DEV_KEY
    raise StateKeyError(
        "no state key: the flow state kept in Redis must be signed with a secret key. Give one "
        f"with --state-key-file FILE ({ENV_FILE}) or {ENV_KEY} (the same for every worker of "
        "the group; e.g. `head -c 32 /dev/urandom | base64`), or --insecure-dev-key for a "
        "local trial")
