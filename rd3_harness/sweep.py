"""`rd3h sweep`: a grid of runs (plugins x protocols, optionally seed lists) into one store, one
`rd3h run` per task: here one after another, or as submitit jobs (a Slurm job array, or submitit's
local executor). Tasks with a complete run in the store are left out, so a rerun redoes nothing
and an interrupted task continues where its `rd3h run` stopped."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rd3_harness.errors import UsageError
from rd3_harness.plugins import Plugins
from rd3_harness.protocol.io import load_protocol, protocol_hash
from rd3_harness.protocol.library import protocol_path
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.store import Store

EXECUTORS = ("here", "local", "slurm")


@dataclass(frozen=True)
class Task:
    plugin: str
    protocol: str
    seeds: tuple[int, ...] | None
    protocol_hash: str

    def argv(self, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
        """The task's `rd3h run` command line."""
        args = [sys.executable, "-m", "rd3_harness", "run", "--plugin", self.plugin, "-p", self.protocol]
        if self.seeds:
            args += ["--seeds", ",".join(map(str, self.seeds))]
        return [*args, "-o", str(out), *extra]


def grid(
    plugins: Plugins, names: list[str], protocols: list[str], seed_lists: list[tuple[int, ...] | None]
) -> list[Task]:
    """Every plugin x protocol x seed list (None: the protocol's seeds), with the hash it runs under."""
    for name in names:
        plugins.method(name)  # an unknown name fails before anything runs
    tasks = []
    for ref in protocols:
        path = protocol_path(plugins.registries, ref)
        base = load_protocol(path)
        for seeds in seed_lists:
            p = base
            if seeds:
                data = base.model_dump(mode="json")
                data["evaluation"]["seeds"] = list(seeds)
                p = Protocol.model_validate(data)
            tasks += [Task(name, str(path), seeds, protocol_hash(p)) for name in names]
    return tasks


def pending(plugins: Plugins, tasks: list[Task], out: Path) -> list[Task]:
    """The tasks without a complete run (all students) of the installed plugin version in `out`."""
    if not (out / "results.sqlite").is_file():
        return tasks
    store = Store.in_folder(out)
    done = {
        (r.plugin.name, r.plugin.version, r.protocol_hash)
        for r in store.runs(status="complete")
        if not (r.settings or {}).get("students")
    }
    return [t for t in tasks if (t.plugin, plugins.method(t.plugin).version, t.protocol_hash) not in done]


def run_task(argv: list[str]) -> int:
    """One task: its `rd3h run` (module level, so submitit can pickle it)."""
    return subprocess.run(argv, check=True).returncode


def submit(
    tasks: list[Task],
    out: Path,
    executor: str,
    *,
    extra: tuple[str, ...] = (),
    folder: Path | None = None,
    slurm: dict | None = None,
) -> list[str]:
    """Run or submit the tasks; the submitit job ids (nothing when run here). `slurm`: submitit
    parameters (the local executor takes only `timeout_min`)."""
    commands = [t.argv(out, extra) for t in tasks]
    if executor == "here":
        for argv in commands:
            run_task(argv)
        return []
    try:
        import submitit
    except ImportError:
        raise UsageError(f"--executor {executor} needs submitit: pip install 'rd3-harness[slurm]'") from None
    logs = folder or out / "sweep-logs"
    params = dict(slurm or {})
    if executor == "local":
        ex = submitit.LocalExecutor(folder=logs)
        params = {k: v for k, v in params.items() if k == "timeout_min"}
    else:
        ex = submitit.AutoExecutor(folder=logs, cluster="slurm")
    ex.update_parameters(**params)
    jobs = ex.map_array(run_task, commands)  # on Slurm: one job array, one task per run
    if executor == "local":
        for job in jobs:
            job.result()
    return [job.job_id for job in jobs]
