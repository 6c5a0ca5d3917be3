"""`rd3h teacher train|show`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from rd3_harness.cli.common import (
    DataRootOpt,
    DeviceOpt,
    DownloadOpt,
    JsonOpt,
    ProtocolOpt,
    err,
    out,
    print_json,
    registries,
    runtime_settings,
)
from rd3_harness.progress import rich_progress

app = typer.Typer(help="Train, cache and inspect the protocol's teachers.", no_args_is_help=True)


@app.command()
def train(
    protocol: ProtocolOpt = None,
    device: DeviceOpt = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train again even if cached.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train (or load from the cache) every teacher the protocol names; print checksums and accuracy."""
    from rd3_harness.teachers import get_teacher, protocol_teachers
    from rd3_harness.workspace import open_workspace

    s = runtime_settings(None, device, download, data_root)
    ws = open_workspace(registries(), protocol, s)
    p = ws.protocol
    rows = []
    with rich_progress(err):
        for spec in protocol_teachers(p):
            if spec.kind == "trained":
                t = get_teacher(ws.registries.models, spec, p.dataset, s, ws.train, ws.test, retrain=retrain)
            else:
                t = ws.teacher(spec)
            rows.append(t.as_record())
    if as_json:
        print_json(rows)
        return
    for r in rows:
        acc = f"{100 * r['test_top1']:.2f}%" if r["test_top1"] is not None else "n/a"
        trained = f", trained in {r['train_wall_s']:.1f} s" if r["train_wall_s"] else " (cached)"
        out.print(
            f"{r['architecture']}  sha256:{r['sha256'][:12]}  test top-1 {acc}{trained}  {r['path']}",
            markup=False,
            highlight=False,
        )


@app.command()
def show(protocol: ProtocolOpt = None, as_json: JsonOpt = False) -> None:
    """Where the protocol's trained teachers are cached and whether they exist yet."""
    from rd3_harness.protocol.library import resolve_protocol
    from rd3_harness.teachers import cache_paths, protocol_teachers

    p, _ = resolve_protocol(registries(), protocol)
    s = runtime_settings()
    rows = []
    for spec in protocol_teachers(p):
        row = {"architecture": spec.architecture, "kind": spec.kind}
        if spec.kind == "trained":
            weights, meta = cache_paths(spec, p.dataset, s)
            row["path"] = str(weights)
            row["cached"] = weights.is_file() and meta.is_file()
            if row["cached"]:
                row.update(
                    {
                        k: v
                        for k, v in json.loads(meta.read_text()).items()
                        if k in ("sha256", "test_top1", "train_wall_s")
                    }
                )
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = "cached" if r.get("cached") else ("not trained yet" if r["kind"] == "trained" else r["kind"])
        acc = f"  test top-1 {100 * r['test_top1']:.2f}%" if r.get("test_top1") is not None else ""
        out.print(f"{r['architecture']}  {state}{acc}  {r.get('path', '')}", markup=False, highlight=False)
