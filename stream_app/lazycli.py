"""A click group whose subcommands are imported only when they run.

`mirrorscope --help` and `mirrorscope analyze` should not pay for importing the collector, the
worker (Faust, asyncio), the sinks and the service launchers (issue #12: --help took 0.27 s, most
of it imports no one used). Each subcommand is named by "module:attribute" plus the one-line
help shown in the command list, so listing the commands imports none of them;
tests/test_cli_startup.py checks each entry against the real command.

A command whose optional dependency is missing fails with the extra to install, not a traceback.
"""

from __future__ import annotations

import importlib

import click

# Top-level module -> the pyproject.toml extra that installs it.
EXTRA_OF = {
    "faust": "stream", "aiokafka": "stream", "kafka": "stream", "redis": "stream",
    "hiredis": "stream", "lz4": "stream", "crc32c": "stream", "cramjam": "stream",
    "prometheus_client": "stream",
    "boto3": "aws", "botocore": "aws", "pyarrow": "aws",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    return EXTRA_OF.get((exc.name or "").split(".")[0])


class LazyConsole:
    """rich's Console, made on first use: importing rich costs ~20 ms that `--help` never needs.
    Called like the class (``LazyConsole(stderr=True)``); any attribute makes the real one."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs, self._console = args, kwargs, None

    def get(self):
        """The real Console (for code that needs the object itself, e.g. rich's Progress)."""
        if self._console is None:
            from rich.console import Console
            self._console = Console(*self._args, **self._kwargs)
        return self._console

    def __getattr__(self, name):
        if name in ("_args", "_kwargs", "_console"):  # before __init__ ran (copy, pickle)
            raise AttributeError(name)
        return getattr(self.get(), name)


def Table(*args, **kwargs):  # noqa: N802  (stands in for the class)
    """rich.table.Table, imported on first use."""
    from rich.table import Table as _Table
    return _Table(*args, **kwargs)


class LazyGroup(click.Group):
    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx, name):
        if name in self.commands or name not in self.lazy_commands:
            return super().get_command(ctx, name)
        module, _, attr = self.lazy_commands[name][0].partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx, formatter):
        """As click lists commands, with the lazy ones' help taken from the table."""
        from click.utils import make_default_short_help
        names = [n for n in self.list_commands(ctx)
                 if n not in self.commands or not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(self.lazy_commands[name][1], limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = missing_extra(exc)
            if extra is None:
                raise
            raise click.ClickException(
                f"{ctx.invoked_subcommand or 'this command'} needs the [{extra}] extra "
                f"({exc.name} is not installed): pip install 'mirrorscope[{extra}]'") from None
