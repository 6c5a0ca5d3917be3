"""`rd3h plugin new NAME` and `rd3h plugin check NAME`: the plugin author's kit."""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from rd3_harness.cli.common import (
    DataRootOpt,
    DeviceOpt,
    JsonOpt,
    err,
    out,
    parse_pairs,
    plugins,
    print_json,
    registries,
    runtime_settings,
)
from rd3_harness.plugins import ENTRY_POINT_GROUP

app = typer.Typer(help="Write a method plugin: scaffold a package, check one.", no_args_is_help=True)


@app.command()
def new(
    name: Annotated[str, typer.Argument(help="Method name: lowercase letters, digits, hyphens (e.g. my-method).")],
    directory: Annotated[Path, typer.Option("--dir", help="Folder in which to create rd3-plugin-NAME/.")] = Path("."),
) -> None:
    """Scaffold rd3-plugin-NAME/: entry point, a working synthesize, frozen config, README, kit tests."""
    from rd3_harness.kit.scaffold import scaffold

    folder = scaffold(name, directory)
    out.print(str(folder), markup=False, highlight=False)
    if any(ep.name == name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        err.print(f"[yellow]warning:[/] a plugin named {name!r} is already installed; only one of them will load")
    err.print(
        f"created {folder} (plugin [bold]{name}[/]). Next:\n"
        f"  pip install -e {folder}\n"
        f"  rd3h plugins\n"
        f"  pytest {folder}\n"
        f"  rd3h run --plugin {name} --protocol cpu/smoke.v1",
        highlight=False,
    )


@app.command()
def check(
    name: Annotated[str, typer.Argument(help="Installed method plugin (see `rd3h plugins`).")],
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", "-c", help="Config override key=value, repeatable (default: the plugin's SMOKE_CONFIG)."
        ),
    ] = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the kit's conformance checks on an installed plugin (smoke protocol; exit 1 on problems)."""
    from rd3_harness.kit.conformance import check_plugin
    from rd3_harness.kit.contexts import SMOKE_PROTOCOL
    from rd3_harness.progress import rich_progress
    from rd3_harness.workspace import open_workspace

    with tempfile.TemporaryDirectory() as tmp, rich_progress(err):
        s = runtime_settings(Path(tmp), device, data_root=data_root)
        report = check_plugin(
            name,
            config=parse_pairs(config) if config else None,
            workspace=open_workspace(registries(), SMOKE_PROTOCOL, s),
            strict=False,
            plugins=plugins(),
        )
    if as_json:
        print_json(report.as_dict())
    else:
        out.print(str(report), markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(1)
