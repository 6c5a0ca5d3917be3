"""The `rd3h` command line (typer + rich)."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperGroup

from rd3_harness.cli.common import err
from rd3_harness.errors import ProtocolError, Rd3Error
from rd3_harness.version import __version__


class Rd3Group(TyperGroup):
    """Turns the harness's errors into short messages and exit codes (2 bad input, 1 failure)."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201
        try:
            return super().invoke(ctx)
        except ProtocolError as exc:
            err.print(f"[red]error:[/] {exc.source}: invalid protocol", highlight=False)
            for problem in exc.problems:
                err.print(f"  {problem}", markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except Rd3Error as exc:
            err.print("[red]error:[/] ", end="", highlight=False)
            err.print(str(exc), markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=Rd3Group,
    name="rd3h",
    help="rd3-harness: evaluate dataset distillation methods under one frozen, hashed protocol.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rd3h {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="RD3_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "warning",
    threads: Annotated[
        int | None,
        typer.Option("--threads", envvar="RD3_THREADS", min=1, help="CPU threads for torch (default: torch's choice)."),
    ] = None,
) -> None:
    """rd3-harness command line."""
    import logging

    if threads is not None:  # only then: commands that train nothing must not pay for importing torch
        import torch

        torch.set_num_threads(threads)
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_path=False)
    logging.basicConfig(level=log_level.upper(), format="%(message)s", handlers=[handler], force=True)


def _register() -> None:
    from rd3_harness.cli import analysis, catalog, plugins, protocol, results, run, scaffold, sweep, teacher

    app.add_typer(protocol.app, name="protocol")
    app.add_typer(plugins.app, name="plugins")
    app.add_typer(scaffold.app, name="plugin")
    app.add_typer(catalog.datasets_app, name="datasets")
    app.add_typer(catalog.models_app, name="models")
    app.add_typer(teacher.app, name="teacher")
    app.add_typer(results.app, name="results")
    run.register(app)
    sweep.register(app)
    analysis.register(app)


_register()


def main() -> None:
    app()
