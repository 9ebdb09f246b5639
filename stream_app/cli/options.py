"""Options and their setup shared by several commands (worker, kinesis-worker, sink, analyze):
one definition each, so the commands cannot drift apart. Only click and the standard library at
module level: `mirrorscope --help` and `analyze` stay light."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click


def load_config(ctx: click.Context, _param, path):
    """--config YAML: keys are the option names (dashes or underscores); MIRRORSCOPE_*
    environment variables override it and flags override both."""
    if path:
        import yaml
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise click.BadParameter("must be a YAML mapping", param_hint="--config")
        ctx.default_map = {str(k).replace("-", "_"): v for k, v in data.items()}
    return path


# The result topics, as the workers publish them and the sinks read them.
RESULT_TOPIC_OPTIONS = [
    click.option("--topic-flows", envvar="MIRRORSCOPE_TOPIC_FLOWS", default="mirrorscope.flows",
                 show_default=True, help="Flow records (schemas.records.FlowRecord)."),
    click.option("--topic-http", envvar="MIRRORSCOPE_TOPIC_HTTP", default="mirrorscope.http",
                 show_default=True, help="HTTP transactions (schemas.records.HttpTransaction)."),
    click.option("--topic-alerts", envvar="MIRRORSCOPE_TOPIC_ALERTS", default="mirrorscope.alerts",
                 show_default=True, help="Alert records (schemas.records.Alert)."),
]


def result_topic_options(f):
    for o in reversed(RESULT_TOPIC_OPTIONS):
        f = o(f)
    return f


def detect_config_from(path: Path | None):
    from stream_app.core.detectors import DetectConfig
    if path is None:
        return DetectConfig()
    import yaml
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return DetectConfig.from_dict(data)
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--detect-config") from None


def state_options(f):
    """The options `worker` and `kinesis-worker` share: where the state lives (Redis, and the
    key that signs it), how often it is checkpointed, and what the core runs."""
    opts = [
        click.option("--redis-url", envvar="MIRRORSCOPE_REDIS_URL",
                     default="redis://127.0.0.1:6379/0", show_default=True,
                     help="redis:// or rediss:// (TLS); user:password@ for AUTH."),
        click.option("--redis-cluster", envvar="MIRRORSCOPE_REDIS_CLUSTER", is_flag=True,
                     help="Redis Cluster (keys are hash-tagged by partition)."),
        click.option("--redis-password", envvar="MIRRORSCOPE_REDIS_PASSWORD", default=None,
                     help="AUTH password (or in the URL)."),
        click.option("--redis-ca", envvar="MIRRORSCOPE_REDIS_CA", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="CA bundle for rediss://."),
        click.option("--state-key-file", envvar="MIRRORSCOPE_STATE_KEY_FILE", default=None,
                     type=click.Path(exists=True, dir_okay=False),
                     help="File holding the key that signs flow state in Redis "
                          "(or MIRRORSCOPE_STATE_KEY). Every worker of a group needs the "
                          "same key."),
        click.option("--checkpoint-interval", envvar="MIRRORSCOPE_CHECKPOINT_INTERVAL",
                     default=1.0, show_default=True, type=float,
                     help="Seconds between state snapshots."),
        click.option("--idle-advance", envvar="MIRRORSCOPE_IDLE_ADVANCE", default=30.0,
                     show_default=True, type=float,
                     help="Wall-clock seconds of silence after which a partition's (or "
                          "shard's) idle flows end."),
        click.option("--http/--no-http", "http", default=True, show_default=True,
                     help="Extract HTTP/1.x transactions."),
        click.option("--keep-credentials", is_flag=True,
                     help="Keep Authorization and cookie values (redacted by default)."),
        click.option("--detect/--no-detect", "detect", default=True, show_default=True,
                     help="Run the detectors, with their state shared in Redis."),
        click.option("--detect-config", type=click.Path(exists=True, dir_okay=False),
                     default=None, help="Detector thresholds (JSON/YAML; docs/detectors/)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@dataclass
class StateSetup:
    """What `state_options` describe, connected: the Redis settings, client and store, the state key,
    the core's HTTP settings, and the detectors with their state in Redis (or None)."""

    redis_config: object
    redis: object
    store: object
    key: bytes
    l7: object
    detectors: object
    detect_state: object


def state_setup(redis_url, redis_cluster, redis_password, redis_ca, state_key_file, http,
                keep_credentials, detect, detect_config, detect_prefix: str) -> StateSetup:
    from pathlib import Path

    from stream_app.core.detectors import Detectors
    from stream_app.core.http import HttpConfig
    from stream_app.core.l7 import L7Config
    from stream_app.state.detectors import RedisDetectorState
    from stream_app.state.store import RedisConfig, RedisStore, connect

    key = state_key(state_key_file)
    rcfg = RedisConfig(url=redis_url, cluster=redis_cluster, password=redis_password,
                       ssl_ca_certs=redis_ca)
    client = connect(rcfg)
    detectors = dstate = None
    if detect:
        dcfg = detect_config_from(Path(detect_config) if detect_config else None)
        dstate = RedisDetectorState(client, prefix=detect_prefix)
        detectors = Detectors(dcfg, state=dstate)
    l7 = L7Config(http=HttpConfig(keep_credentials=keep_credentials)) if http else None
    return StateSetup(rcfg, client, RedisStore(client), key, l7, detectors, dstate)


def state_key(path) -> bytes:
    if path:
        with open(path, "rb") as f:
            key = f.read().strip()
    else:
        key = os.environ.get("MIRRORSCOPE_STATE_KEY", "").encode()
    if not key:
        click.echo("warning: no MIRRORSCOPE_STATE_KEY: flow state in Redis is signed with a "
                   "well-known development key; set one in production", err=True)
        key = b"mirrorscope-development-key"
    return key


def redact(url: str) -> str:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    if u.password:
        return url.replace(u.password, "***")
    return url


