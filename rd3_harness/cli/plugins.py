"""`rd3h plugins [list|info NAME]`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from rd3_harness.cli.common import JsonOpt, err, out, plugins, print_json
from rd3_harness.errors import UsageError

app = typer.Typer(help="Installed plugins: methods and registries.", invoke_without_command=True)


@app.callback()
def _default(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Include built-in registry plugins.")] = False,
) -> None:
    """List plugins (method plugins, and broken ones with their errors)."""
    if ctx.invoked_subcommand is None:
        list_(as_json=as_json, all_=all_)


@app.command("list")
def list_(
    as_json: JsonOpt = False,
    all_: Annotated[bool, typer.Option("--all", help="Include built-in registry plugins.")] = False,
) -> None:
    """List plugins with version, distribution, hooks and status."""
    records = [r for r in plugins().records.values() if all_ or r.method is not None or r.error or not r.builtin]
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    table = Table("name", "version", "distribution", "hooks", "status", "summary", box=None)
    for r in records:
        status = "[red]broken[/]" if r.error else "[green]ok[/]"
        table.add_row(
            r.name,
            r.version,
            r.distribution or "",
            ", ".join(r.hooks),
            status,
            r.error or (r.method.summary if r.method else ""),
        )
    out.print(table)
    for r in records:
        for w in r.warnings:
            err.print(f"[yellow]warning:[/] {r.name}: {w}", highlight=False)


@app.command()
def info(name: Annotated[str, typer.Argument(help="Plugin name.")], as_json: JsonOpt = False) -> None:
    """One plugin: its method, config keys with defaults, paper."""
    record = plugins().records.get(name)
    if record is None:
        raise UsageError(f"no plugin named {name!r}; see `rd3h plugins`")
    data = record.as_dict()
    m = record.method
    if m is not None:
        data.update(
            summary=m.summary,
            paper=m.paper,
            citation=m.citation,
            needs_teacher=m.needs_teacher,
            needs_real_data=m.needs_real_data,
            config={
                k: {
                    "default": f.default,
                    "type": getattr(f.annotation, "__name__", str(f.annotation)),
                    "description": f.description,
                }
                for k, f in m.config_model.model_fields.items()
            },
        )
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        if key == "config":
            out.print("config:")
            for k, v in value.items():
                out.print(
                    f"  {k} = {v['default']!r}  ({v['type']}){'  ' + v['description'] if v['description'] else ''}",
                    markup=False,
                    highlight=False,
                )
        elif value not in (None, "", []):
            out.print(f"{key}: {value}", markup=False, highlight=False)
