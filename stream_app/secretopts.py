"""Secrets never on a command line: every user of the host sees a process's arguments (`ps`,
/proc/PID/cmdline). Options that take a password, or a URL that may carry one, use
``callback=not_on_command_line``: given as a flag they are refused with the way to give them
instead (their MIRRORSCOPE_* variable, or --config FILE), from the environment or a file they
are taken as before."""

from __future__ import annotations

from urllib.parse import urlsplit

import click


def _has_password(value) -> bool:
    if not isinstance(value, str) or "://" not in value:
        return bool(value)
    try:
        return urlsplit(value).password is not None
    except ValueError:
        return False


def not_on_command_line(ctx: click.Context, param: click.Parameter, value):
    if value and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE \
            and _has_password(value):
        env = param.envvar if isinstance(param.envvar, str) else (param.envvar or ["?"])[0]
        raise click.BadParameter(
            f"a password on the command line is visible to every user (ps); give it in "
            f"{env} or in the --config file instead", ctx=ctx, param=param)
    return value
