"""`rd3h run`, `rd3h synthesize` and `rd3h evaluate`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rd3_harness.cli.common import (
    DataRootOpt,
    DeviceOpt,
    DownloadOpt,
    JsonOpt,
    OutOpt,
    ProtocolOpt,
    err,
    out,
    parse_pairs,
    parse_seeds,
    pct,
    plugins,
    print_json,
    registries,
    runtime_settings,
)
from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.progress import rich_progress

PluginOpt = Annotated[str, typer.Option("--plugin", help="Method plugin name (see `rd3h plugins`).")]
ConfigOpt = Annotated[
    list[str] | None, typer.Option("--config", "-c", help="Method config override key=value (repeatable).")
]
ConfigFileOpt = Annotated[Path | None, typer.Option("--config-file", help="YAML file of method config keys.")]
SeedsOpt = Annotated[
    str | None, typer.Option("--seeds", help="Evaluation seeds, e.g. 0,1,2 (changes the protocol hash).")
]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Synthesize again even if a cached set exists.")]
LogOpt = Annotated[
    list[str] | None,
    typer.Option("--log", help="Also log to a tracker: tensorboard, mlflow or wandb (repeatable; optional extras)."),
]
RestartOpt = Annotated[
    bool, typer.Option("--restart", help="Start a new run instead of continuing an interrupted one of this command.")
]
StudentsOpt = Annotated[
    str | None,
    typer.Option("--students", help="Evaluate only these of the protocol's students, e.g. resnet18 (same hash)."),
]
ParallelOpt = Annotated[
    str,
    typer.Option(
        "--parallel",
        help="Under torchrun: jobs (each rank runs whole student x seed evaluations) or data (DDP per student).",
    ),
]
DeterministicOpt = Annotated[
    bool, typer.Option("--deterministic", help="Deterministic algorithms (repeatable CUDA numbers; slower).")
]
BenchmarkCudnnOpt = Annotated[
    bool, typer.Option("--benchmark-cudnn", help="cuDNN autotuning (faster convolutions; not repeatable).")
]


def _runtime(out_dir, device, download, data_root, restart, students, parallel, deterministic, benchmark_cudnn):
    from rd3_harness.distributed import MODES

    if parallel not in MODES:
        raise UsageError(f"--parallel {parallel!r}: use {' or '.join(MODES)}")
    names = tuple(n.strip() for n in students.split(",") if n.strip()) if students is not None else None
    if names is not None and not names:
        raise UsageError("--students: give student names separated by commas")
    return runtime_settings(
        out_dir,
        device,
        download,
        data_root,
        resume=not restart,
        parallel=parallel,
        deterministic=deterministic or None,
        benchmark_cudnn=benchmark_cudnn or None,
        students=names,
    )


def _config(pairs: list[str] | None, file: Path | None) -> dict:
    config = {}
    if file is not None:
        from rd3_harness.protocol.io import read_document

        data = read_document(file)
        if not isinstance(data, dict):
            raise UsageError(f"{file}: a config file is a mapping of keys to values")
        config.update(data)
    config.update(parse_pairs(pairs))
    return config


def print_run(outcome, out_folder: Path, as_json: bool) -> None:
    from rd3_harness.results.store import export_document

    run = outcome.run
    if as_json:
        print_json(export_document(run, outcome.records))
        return
    synth = run.synthesis
    title = f"{run.plugin.name} under {run.protocol_name}  sha256:{short_hash(run.protocol_hash)}"
    table = Table("student", "top-1 % (mean ± std)", "95% CI", "top-5 %", "seeds", "eval s", title=title, box=None)
    for s in run.summary:
        std = f" ± {100 * s.std:.2f}" if s.std is not None else ""
        ci = f"[{pct(s.ci95_low)}, {pct(s.ci95_high)}]" if s.ci95_low is not None else "-"
        flag = "  [yellow](best-of-run: selected on test set)[/]" if s.test_set_selection else ""
        wall = sum(r.train_wall_s + r.eval_wall_s for r in outcome.records if r.student == s.student)
        table.add_row(
            s.student, f"{pct(s.mean)}{std}{flag}", ci, pct(s.top5_mean), ",".join(map(str, s.seeds)), f"{wall:.1f}"
        )
    out.print(table)
    synth_text = f"{synth.wall_s:.1f} s" if synth else "n/a"
    reused = " (cached set reused)" if run.synset and run.synset.reused else ""
    err.print(
        f"time-to-synthesize {synth_text}{reused}; storage {run.synset.storage_bytes} bytes; "
        f"run {run.run_id} in {out_folder}",
        highlight=False,
    )


def run(
    plugin: PluginOpt = "random",
    protocol: ProtocolOpt = None,
    config: ConfigOpt = None,
    config_file: ConfigFileOpt = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    out_dir: OutOpt = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    fresh: FreshOpt = False,
    restart: RestartOpt = False,
    students: StudentsOpt = None,
    parallel: ParallelOpt = "jobs",
    deterministic: DeterministicOpt = False,
    benchmark_cudnn: BenchmarkCudnnOpt = False,
    log: LogOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Synthesize with a method plugin, evaluate under the protocol, record the result.

    Rerunning an interrupted command continues it (finished evaluations are kept, an unfinished
    one resumes from its last epoch checkpoint) unless --restart is given."""
    from rd3_harness import runner, trackers

    s = _runtime(out_dir, device, download, data_root, restart, students, parallel, deterministic, benchmark_cudnn)
    for name, tracker in trackers.make(log or [], s.out):
        plugins().add(name, tracker)
    _in_world(
        s,
        as_json,
        lambda world: runner.run(
            plugins(),
            plugin,
            protocol,
            settings=s,
            config=_config(config, config_file),
            seeds=parse_seeds(seeds),
            reuse=not fresh,
            observers=plugins().observers(),
        ),
    )


def _in_world(s, as_json: bool, work) -> None:
    """Run `work(world)` in the torchrun world (a world of one without torchrun), with progress
    bars on rank 0, and print its outcome there; the world is shut down however it ends."""
    from rd3_harness import distributed

    world = distributed.init_from_env(s.torch_device, s.parallel)
    try:
        with rich_progress(err) if world.main else contextlib.nullcontext():
            outcome = work(world)
    except BaseException:
        distributed.shutdown(wait=False)
        raise
    distributed.shutdown()
    if world.main:
        print_run(outcome, s.out, as_json)


def synthesize(
    plugin: PluginOpt,
    protocol: ProtocolOpt = None,
    config: ConfigOpt = None,
    config_file: ConfigFileOpt = None,
    device: DeviceOpt = None,
    out_dir: OutOpt = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    fresh: FreshOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Only synthesize: save the set (manifest.json + images.safetensors + grid.png)."""
    from rd3_harness import runner
    from rd3_harness.workspace import open_workspace

    s = runtime_settings(out_dir, device, download, data_root)
    with rich_progress(err):
        ws = open_workspace(registries(), protocol, s)
        result = runner.synthesize(plugins(), ws, plugin, _config(config, config_file), reuse=not fresh)
    if as_json:
        print_json({"folder": str(result.folder), "reused": result.reused, "manifest": result.manifest})
    else:
        cost = result.manifest.get("synthesis", {})
        out.print(str(result.folder), markup=False, highlight=False)
        err.print(
            f"{result.manifest['count']} images, sha256 {result.manifest['sha256'][:12]}, "
            f"time-to-synthesize {cost.get('wall_s', float('nan')):.1f} s{' (cached)' if result.reused else ''}",
            highlight=False,
        )


def evaluate(
    synset: Annotated[Path, typer.Argument(help="Synthetic set: an rd3h folder (manifest.json) or an ImageFolder.")],
    protocol: ProtocolOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Method name to record (default: the manifest's, or 'external').")
    ] = None,
    seeds: SeedsOpt = None,
    device: DeviceOpt = None,
    out_dir: OutOpt = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    restart: RestartOpt = False,
    students: StudentsOpt = None,
    parallel: ParallelOpt = "jobs",
    deterministic: DeterministicOpt = False,
    benchmark_cudnn: BenchmarkCudnnOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate a synthetic set made elsewhere under the protocol and record it (under torchrun,
    as `run` does: rank 0 imports the set and writes the run, the ranks share the jobs)."""
    if not synset.is_dir():
        raise UsageError(f"{synset}: not a folder")
    s = _runtime(out_dir, device, download, data_root, restart, students, parallel, deterministic, benchmark_cudnn)
    _in_world(s, as_json, lambda world: _evaluate_folder(synset, protocol, name, seeds, s, world))


def _evaluate_folder(synset: Path, protocol, name: str | None, seeds: str | None, s, world):
    from rd3_harness import runner
    from rd3_harness.data.synset import import_image_folder, is_image_folder, load_synset, save_synset
    from rd3_harness.results.store import Store
    from rd3_harness.workspace import open_workspace

    ws = open_workspace(registries(), protocol, s, parse_seeds(seeds))
    p = ws.protocol
    runner.evaluated_students(p, s.students)  # an unknown --students name fails before the import
    if (synset / "manifest.json").is_file():
        data, manifest = load_synset(synset)
        folder = synset
    elif is_image_folder(synset):
        folder = s.out / "synsets" / f"imported-{synset.resolve().name}"
        if world.main:  # one rank imports; the others read what it saved
            data = import_image_folder(
                synset,
                num_classes=ws.info.num_classes,
                ipc=p.ipc,
                channels=ws.info.channels,
                resolution=p.dataset.resolution,
                normalize=lambda x: ws.test.normalize(x.to(ws.test.device)).cpu(),
            )
            save_synset(
                folder,
                data,
                {
                    "method": name or "external",
                    "dataset": p.dataset.name,
                    "ipc": p.ipc,
                    "num_classes": ws.info.num_classes,
                    "source": str(synset.resolve()),
                },
                normalization=p.dataset.normalization,
                dtype=p.evaluation.storage_dtype,
            )
        world.broadcast(None)  # a barrier: the imported set is saved
        data, manifest = load_synset(folder)
    else:
        raise UsageError(f"{synset}: neither an rd3h synthetic set (manifest.json) nor an ImageFolder")
    synth, plugin = runner.given_set(data, manifest, folder, name)
    return runner.evaluate(ws, synth, plugin=plugin, store=Store.in_folder(s.out))


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(synthesize)
    app.command()(evaluate)
