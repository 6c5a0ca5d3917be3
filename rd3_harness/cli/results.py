"""`rd3h results list|show|export|verify`."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rd3_harness.cli.common import JsonOpt, OutOpt, out, pct, print_json, registries, runtime_settings
from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.results.store import STORE_NAME, Store, export_document

app = typer.Typer(help="Stored results.", no_args_is_help=True)
RunArg = Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")]


def open_store(out_dir) -> Store:
    folder = runtime_settings(out_dir).out
    if not (folder / STORE_NAME).is_file():
        raise UsageError(f"no results store in {folder} (run `rd3h run` first, or pass --out)")
    return Store.in_folder(folder)


@app.command("list")
def list_(
    out_dir: OutOpt = None,
    as_json: JsonOpt = False,
    protocol_hash: Annotated[str | None, typer.Option("--hash", help="Only this protocol hash.")] = None,
) -> None:
    """Runs with their state, protocol hash, method and per-student accuracy."""
    runs = open_store(out_dir).runs(protocol_hash=protocol_hash)
    if as_json:
        print_json(
            [
                json.loads(
                    r.model_dump_json(
                        by_alias=True,
                        include={
                            "run_id",
                            "created",
                            "status",
                            "protocol_hash",
                            "protocol_name",
                            "plugin",
                            "summary",
                            "error",
                        },
                    )
                )
                for r in runs
            ]
        )
        return
    table = Table("run", "state", "protocol", "hash", "method", "top-1 % per student", box=None)
    for r in runs:
        acc = "; ".join(
            f"{s.student} {pct(s.mean)}"
            + (f" ± {100 * s.std:.2f}" if s.std is not None else "")
            + (" (best-of-run)" if s.test_set_selection else "")
            for s in r.summary
        )
        table.add_row(
            r.run_id, r.state, r.protocol_name, short_hash(r.protocol_hash), r.plugin.name, acc or (r.error or "")
        )
    out.print(table)


@app.command()
def show(run_id: RunArg, out_dir: OutOpt = None, as_json: JsonOpt = False) -> None:
    """One run with its records."""
    data = open_store(out_dir).export(run_id)
    if as_json:
        print_json(data)
        return
    run = data["run"]
    for key in ("run_id", "status", "protocol_name", "protocol_hash", "created", "finished", "error"):
        if run.get(key):
            out.print(f"{key}: {run[key]}", markup=False, highlight=False)
    out.print(
        f"method: {run['plugin']['name']} {run['plugin']['version']}  config {run['method_config']}",
        markup=False,
        highlight=False,
    )
    if run.get("synset"):
        out.print(f"synset: sha256 {run['synset']['sha256']}  {run['synset']['storage_bytes']} bytes", markup=False)
    if run.get("synthesis"):
        out.print(
            f"time-to-synthesize: {run['synthesis']['wall_s']:.2f} s wall, {run['synthesis']['cpu_s']:.2f} s CPU",
            markup=False,
        )
    table = Table("student", "seed", "top-1 %", "top-5 %", "selected", "train s", box=None)
    for r in data["records"]:
        sel = f"epoch {r['selected_epoch']} (test-set selection)" if r["test_set_selection"] else "final"
        table.add_row(r["student"], str(r["seed"]), pct(r["top1"]), pct(r["top5"]), sel, f"{r['train_wall_s']:.1f}")
    out.print(table)


@app.command()
def export(
    run_id: Annotated[
        str | None, typer.Argument(help="Run id; omit to export every record (csv) or run (json).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json or csv.")] = "json",
    out_dir: OutOpt = None,
) -> None:
    """Export a run (json: run + records, the file reviewers verify) or records as CSV."""
    store = open_store(out_dir)
    if fmt == "json":
        data = store.export(run_id) if run_id else [export_document(r, store.records(r.run_id)) for r in store.runs()]
        print_json(data)
    elif fmt == "csv":
        records = store.records(store.run(run_id).run_id) if run_id else store.records()
        rows = [json.loads(r.model_dump_json()) for r in records]
        if rows:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise UsageError(f"--format {fmt!r}: use json or csv")


@app.command()
def verify(
    record: Annotated[Path, typer.Argument(help="A run exported with `rd3h results export RUN_ID`.")],
    protocol: Annotated[
        str | None, typer.Option("--protocol", "-p", help="The protocol the run claims (file or registered name).")
    ] = None,
    synset: Annotated[Path | None, typer.Option("--synset", help="The submitted synthetic set folder.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reviewer's check: protocol hash (or the diff to --protocol), synthetic-set sha256, and internal
    consistency (hash of run.protocol, every record's hash, seeds, per-seed numbers vs summary).
    Exits 1 on any mismatch."""
    from rd3_harness.analysis.verify import read_export
    from rd3_harness.analysis.verify import verify as check
    from rd3_harness.protocol.library import resolve_protocol

    named = resolve_protocol(registries(), protocol, check=False)[0] if protocol else None
    verdict = check(read_export(record), protocol=named, protocol_ref=protocol, synset_dir=synset)
    if as_json:
        print_json(verdict.as_dict())
    else:
        out.print(verdict.text(), markup=False, highlight=False)
    if not verdict.ok:
        raise typer.Exit(1)
