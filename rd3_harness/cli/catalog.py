"""`rd3h datasets list` and `rd3h models list`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rd3_harness.cli.common import DataRootOpt, JsonOpt, out, print_json, registries, runtime_settings
from rd3_harness.models import describe, list_models

datasets_app = typer.Typer(help="Registered datasets and whether they are present.", no_args_is_help=True)
models_app = typer.Typer(help="Registered architectures.", no_args_is_help=True)


@datasets_app.command("list")
def list_datasets(as_json: JsonOpt = False, data_root: DataRootOpt = None) -> None:
    """Each dataset: classes, channels, resolution, and where it was found (or how to get it)."""
    root = runtime_settings(data_root=data_root).data_root
    rows = []
    for name, info in sorted(registries().datasets.items()):
        found = info.locate(root)
        rows.append(
            {
                "name": name,
                "classes": info.num_classes,
                "channels": info.channels,
                "resolution": info.resolution,
                "present": found is not None,
                "path": str(found) if found else None,
                "how_to_get": info.how_to_get,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("name", "classes", "ch", "px", "present", "where / how to get", box=None)
    for r in rows:
        table.add_row(
            r["name"],
            str(r["classes"]),
            str(r["channels"]),
            str(r["resolution"]),
            "[green]yes[/]" if r["present"] else "no",
            r["path"] or r["how_to_get"],
        )
    out.print(table)


@models_app.command("list")
def list_models_(
    pattern: Annotated[str, typer.Argument(help="Shell pattern, e.g. 'convnet*' or 'resnet*'.")] = "*",
    as_json: JsonOpt = False,
) -> None:
    """Architectures by name; any `timm:NAME` also works."""
    known = registries().models
    names = list_models(known, pattern)
    if as_json:
        print_json([{"name": n, "description": describe(known, n)} for n in names])
        return
    table = Table("name", "description", box=None)
    for n in names:
        table.add_row(n, describe(known, n))
    out.print(table)
    if pattern == "*":
        out.print("timm:NAME  any model of timm.list_models()", markup=False)
