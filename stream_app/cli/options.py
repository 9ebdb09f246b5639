"""Options shared by several commands (worker, kinesis-worker, sink, analyze):
one definition each, so the commands cannot drift apart. Only click and the standard library at
module level: `mirrorscope --help` and `analyze` stay light."""

from __future__ import annotations

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


def redact(url: str) -> str:
    from urllib.parse import urlsplit
    u = urlsplit(url)
    if u.password:
        return url.replace(u.password, "***")
    return url




ALL_PROTOCOLS = ("http", "tls", "dns", "ssh")


def _parse_protocols(_ctx, param, value):
    if value is None:
        return frozenset(ALL_PROTOCOLS)
    names = {p.strip().lower() for p in str(value).split(",") if p.strip()}
    bad = names - set(ALL_PROTOCOLS)
    if bad:
        raise click.BadParameter(f"unknown protocol(s) {', '.join(sorted(bad))}; "
                                 f"choose from {', '.join(ALL_PROTOCOLS)}", param=param)
    return frozenset(names)


protocols_option = click.option(
    "--protocols", envvar="MIRRORSCOPE_PROTOCOLS", default=None, metavar="LIST",
    callback=_parse_protocols, show_default="http,tls,dns,ssh",
    help="Application protocols recognised by content and logged (comma-separated from "
         "http, tls, dns, ssh). --no-http turns all application analysis off.")
