"""The commands' options that extend the core's redaction lists (stream_app/core/redact.py):
``--redact-param NAME`` and ``--redact-path-segment NAME``, repeatable, also from --config
(``redact_param: [a, b]``) or MIRRORSCOPE_REDACT_PARAMS / MIRRORSCOPE_REDACT_PATH_SEGMENTS
(space-separated). They add to the documented defaults; nothing removes one.

The values go to the click context rather than through each command's signature, so that a
command takes them with one decorator and one ``redact_config()`` call."""

from __future__ import annotations

import click

from stream_app.core.redact import RedactConfig

_META = "mirrorscope.redact"


def _keep(ctx: click.Context, param, value):
    ctx.meta.setdefault(_META, {})[param.name] = tuple(value or ())
    return value


def redact_options(f):
    f = click.option("--redact-path-segment", "redact_path_segment", multiple=True,
                     envvar="MIRRORSCOPE_REDACT_PATH_SEGMENTS", expose_value=False,
                     callback=_keep, metavar="NAME",
                     help="Also redact the path segment after a segment so named "
                          "(repeatable; added to the defaults, docs/http.md).")(f)
    f = click.option("--redact-param", "redact_param", multiple=True,
                     envvar="MIRRORSCOPE_REDACT_PARAMS", expose_value=False, callback=_keep,
                     metavar="NAME",
                     help="Also redact the value of this query parameter (repeatable; added "
                          "to the defaults, docs/http.md).")(f)
    return f


def redact_config() -> RedactConfig:
    """The current command's additions (defaults only outside a command)."""
    ctx = click.get_current_context(silent=True)
    got = ctx.meta.get(_META, {}) if ctx is not None else {}  # meta: shared by the chain
    return RedactConfig(params=got.get("redact_param", ()),
                        path_segments=got.get("redact_path_segment", ()))
