"""`rd3h protocol list|show|validate|hash|diff|schema`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from rd3_harness.cli.common import DataRootOpt, JsonOpt, ProtocolArg, err, out, print_json, registries, runtime_settings
from rd3_harness.errors import ProtocolError, UsageError
from rd3_harness.protocol import diff_metadata, diff_settings, dump_yaml, protocol_hash, short_hash
from rd3_harness.protocol.diff import plain, value_text
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.protocol.schema import Protocol

app = typer.Typer(help="Validate, hash, show and compare protocols.", no_args_is_help=True)


def json_schema() -> dict:
    schema = Protocol.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "rd3-harness evaluation protocol"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Registered protocols (shipped and from plugins) with their hashes."""
    rows = []
    for name, path in sorted(registries().protocols.items()):
        try:
            p, _ = resolve_protocol(registries(), path, check=False)
            rows.append(
                {
                    "name": name,
                    "hash": protocol_hash(p),
                    "dataset": p.dataset.name,
                    "ipc": p.ipc,
                    "description": " ".join(p.description.split()).split(". ")[0],
                    "path": str(path),
                }
            )
        except ProtocolError as exc:
            rows.append({"name": name, "hash": None, "error": "; ".join(exc.problems), "path": str(path)})
    if as_json:
        print_json(rows)
        return
    table = Table("name", "hash", "dataset", "ipc", "description", box=None)
    for r in rows:
        table.add_row(
            r["name"],
            short_hash(r["hash"]) if r["hash"] else "[red]invalid[/]",
            r.get("dataset", ""),
            str(r.get("ipc", "")),
            r.get("description") or r.get("error", ""),
        )
    out.print(table)


@app.command()
def show(protocol: ProtocolArg, as_json: JsonOpt = False) -> None:
    """The protocol with every default written out, and its hash."""
    p, path = resolve_protocol(registries(), protocol, check=False)
    if as_json:
        print_json({"hash": protocol_hash(p), "source": str(path), "protocol": p.model_dump(mode="json")})
        return
    err.print(f"# {path}  sha256:{protocol_hash(p)}", highlight=False)
    sys.stdout.write(dump_yaml(p))


@app.command()
def validate(
    protocols: Annotated[list[str], typer.Argument(help="Protocol files or registered names.")],
    as_json: JsonOpt = False,
    data_root: DataRootOpt = None,
) -> None:
    """Check protocols against the schema and the registries; exit 2 if any is invalid. An
    `imagefolder:PATH` dataset whose folder is missing or malformed here gets a note (the
    protocol stays valid: it names data, it does not hold it); no image is read."""
    from rd3_harness.data.datasets import folder_problems

    root = runtime_settings(data_root=data_root).data_root
    results = []
    for ref in protocols:
        try:
            p, path = resolve_protocol(registries(), ref)
            notes = folder_problems(p.dataset.name, root)
            results.append({"protocol": ref, "valid": True, "hash": protocol_hash(p), "problems": [], "notes": notes})
        except ProtocolError as exc:
            results.append({"protocol": ref, "valid": False, "hash": None, "problems": exc.problems, "notes": []})
        except UsageError as exc:
            results.append({"protocol": ref, "valid": False, "hash": None, "problems": [str(exc)], "notes": []})
    if as_json:
        print_json(results)
    else:
        for r in results:
            if r["valid"]:
                err.print(f"[green]valid[/]   {r['protocol']}  sha256:{short_hash(r['hash'])}", highlight=False)
                for note in r["notes"]:
                    err.print(f"  [yellow]note[/] {escape(note)}", highlight=False)
            else:
                err.print(f"[red]invalid[/] {r['protocol']}", highlight=False)
                for problem in r["problems"]:
                    err.print(f"  {problem}", markup=False, highlight=False)
    if not all(r["valid"] for r in results):
        raise typer.Exit(2)


@app.command("hash")
def hash_(
    protocols: Annotated[list[str], typer.Argument(help="Protocol files or registered names.")],
    as_json: JsonOpt = False,
) -> None:
    """The sha256 of each protocol's settings (metadata, key order and formatting excluded)."""
    rows = []
    for ref in protocols:
        p, _ = resolve_protocol(registries(), ref, check=False)
        rows.append({"protocol": ref, "hash": protocol_hash(p)})
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            out.print(f"{r['hash']}  {r['protocol']}", markup=False, highlight=False)


@app.command()
def diff(a: ProtocolArg, b: ProtocolArg, as_json: JsonOpt = False) -> None:
    """Every setting that differs between two protocols."""
    pa, _ = resolve_protocol(registries(), a, check=False)
    pb, _ = resolve_protocol(registries(), b, check=False)
    changes, meta = diff_settings(pa, pb), diff_metadata(pa, pb)
    ha, hb = protocol_hash(pa), protocol_hash(pb)
    if as_json:
        print_json(
            {
                "a": {"protocol": a, "hash": ha},
                "b": {"protocol": b, "hash": hb},
                "identical_settings": not changes,
                "settings": [{"path": c.path, "a": plain(c.old), "b": plain(c.new)} for c in changes],
                "metadata": [{"path": c.path, "a": c.old, "b": c.new} for c in meta],
            }
        )
        return
    if not changes:
        err.print(f"settings are identical: sha256:{ha}", highlight=False)
        if meta:
            err.print(f"only metadata differs: {', '.join(c.path for c in meta)}", highlight=False)
        return
    table = Table("setting", a, b, title=f"{len(changes)} setting(s) differ", box=None)
    for c in changes:
        table.add_row(c.path, value_text(c.old), value_text(c.new))
    out.print(table)
    err.print(f"a sha256:{short_hash(ha)}  b sha256:{short_hash(hb)}", highlight=False)


@app.command()
def schema() -> None:
    """The protocol JSON Schema (protocols/protocol.schema.json is generated from it)."""
    sys.stdout.write(schema_text())
