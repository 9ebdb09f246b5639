"""``mirrorscope services``: a development command, not part of the product.

The local Kafka/Redis/moto launchers live with the tests (tests/services/: the test suite,
the benchmarks and this command share them), so the installed package carries no service
launchers. From a source checkout (``pip install -e .``, as .ci/setup.sh does) this command
finds them next to the package and runs tests/services/services_cli.py; from a wheel it says
where they are instead of failing with an ImportError.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click

CHECKOUT = Path(__file__).resolve().parents[2]
DEV_SERVICES = CHECKOUT / "tests" / "services"
PACKAGE = "mirrorscope_dev_services"  # its own name: no clash with another "tests" package


def load_group() -> click.Group | None:
    """tests/services/services_cli.py's ``services`` group, or None outside a checkout."""
    init = DEV_SERVICES / "__init__.py"
    if not (DEV_SERVICES / "services_cli.py").is_file():
        return None
    pkg = sys.modules.get(PACKAGE)
    if pkg is None:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, init, submodule_search_locations=[str(DEV_SERVICES)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = pkg
        spec.loader.exec_module(pkg)
    return importlib.import_module(PACKAGE + ".services_cli").services


@click.command("services", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def services(ctx: click.Context) -> None:
    """Local Kafka, Redis and moto for trying the distributed mode (a development command:
    needs a source checkout; see docs/distributed.md)."""
    group = load_group()
    if group is None:
        raise click.UsageError(
            "`mirrorscope services` is a development command: it runs the launchers in a "
            "source checkout's tests/services/ (git clone, then pip install -e .)")
    group.main(args=ctx.args, prog_name=f"{ctx.find_root().info_name or 'mirrorscope'} services",
               standalone_mode=True)
