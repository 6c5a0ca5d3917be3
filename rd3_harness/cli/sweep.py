"""`rd3h sweep`: plugins x protocols (x seed lists) into one store."""

from __future__ import annotations

from typing import Annotated

import typer

from rd3_harness.cli.common import DeviceOpt, JsonOpt, OutOpt, err, parse_seeds, plugins, print_json, runtime_settings
from rd3_harness.errors import UsageError


def sweep(
    plugin_names: Annotated[str, typer.Option("--plugins", help="Method plugins, e.g. random,herding.")],
    protocols: Annotated[list[str], typer.Option("--protocol", "-p", help="Protocol file or name (repeatable).")],
    seeds: Annotated[
        list[str] | None,
        typer.Option("--seeds", help="A seed list per variant, e.g. 0,1,2 (repeatable; changes the hash)."),
    ] = None,
    executor: Annotated[
        str, typer.Option("--executor", help="here (one after another), local (submitit) or slurm (a job array).")
    ] = "here",
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition.")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs per Slurm task.")] = 1,
    timeout_min: Annotated[int, typer.Option("--timeout-min", help="Slurm time limit per task, minutes.")] = 2880,
    parallelism: Annotated[int | None, typer.Option("--parallelism", help="Slurm array tasks at once.")] = None,
    device: DeviceOpt = None,
    out_dir: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run every plugin under every protocol into one store; tasks already complete are skipped.

    Each task is one `rd3h run`, so an interrupted task continues when the sweep is run again."""
    from rd3_harness import sweep as grid_sweep

    if executor not in grid_sweep.EXECUTORS:
        raise UsageError(f"--executor {executor!r}: use {', '.join(grid_sweep.EXECUTORS)}")
    names = [n.strip() for n in plugin_names.split(",") if n.strip()]
    if not names:
        raise UsageError("--plugins: give plugin names separated by commas")
    s = runtime_settings(out_dir, device)
    tasks = grid_sweep.grid(plugins(), names, protocols, [tuple(parse_seeds(x)) for x in seeds] if seeds else [None])
    todo = grid_sweep.pending(plugins(), tasks, s.out)
    err.print(
        f"{len(tasks)} tasks, {len(tasks) - len(todo)} complete, {len(todo)} to run ({executor})", highlight=False
    )
    slurm = {"timeout_min": timeout_min, "gpus_per_node": gpus, "tasks_per_node": 1}
    if partition:
        slurm["slurm_partition"] = partition
    if parallelism:
        slurm["slurm_array_parallelism"] = parallelism
    extra = ("--device", device) if device else ()
    ids = grid_sweep.submit(todo, s.out, executor, extra=extra, slurm=slurm) if todo else []
    result = {"tasks": len(tasks), "skipped": len(tasks) - len(todo), "submitted": len(todo), "job_ids": ids}
    if as_json:
        print_json(result)
    elif ids:
        err.print(f"jobs {', '.join(ids)}; logs in {s.out / 'sweep-logs'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(sweep)
