"""One run: synthesize with the selected plugin (or reuse its cached set), evaluate every
student x seed, record everything in the store, and continue an unfinished run of the same command."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd3_harness import distributed
from rd3_harness.contract import MethodInfo, SyntheticSet
from rd3_harness.data.synset import as_stored, load_synset, save_synset, stored_dtype
from rd3_harness.errors import PluginFailure, Rd3Error, UsageError
from rd3_harness.hashing import sha256_of
from rd3_harness.observers import NONE, Observers
from rd3_harness.plugins import Plugins
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.record import (
    PluginRef,
    Run,
    RunRecord,
    SynsetRef,
    SynthesisCost,
    now,
    process_identity,
    record_of,
    summarize_records,
)
from rd3_harness.results.store import Store
from rd3_harness.settings import Settings
from rd3_harness.synthesis import code_digest, config_hash, parse_config, synthesis_key
from rd3_harness.training.checkpoint import Checkpoints
from rd3_harness.training.numerics import set_determinism
from rd3_harness.training.trainer import Engine, StudentResult
from rd3_harness.workspace import Workspace, open_workspace

log = logging.getLogger(__name__)


@dataclass
class Synthesized:
    synset: SyntheticSet
    manifest: dict[str, Any]
    folder: Path
    reused: bool

    @property
    def config_hash(self) -> str:
        """The method config's hash (sets made elsewhere may lack it in their manifest)."""
        m = self.manifest
        return m["config_hash"] if "config_hash" in m else sha256_of(m.get("config", {}))


def given_set(
    synset: SyntheticSet, manifest: dict[str, Any], folder: Path, name: str | None = None
) -> tuple[Synthesized, PluginRef]:
    """A set made elsewhere (an rd3h folder, or an imported ImageFolder) as the input of `evaluate`,
    with the plugin it names (`name` overrides the manifest's method)."""
    method = name or manifest.get("method", "external")
    plugin = PluginRef(name=method, version=str(manifest.get("plugin_version", "external")))
    return Synthesized(synset, manifest, folder, reused=True), plugin


def synthesize(
    plugins: Plugins, ws: Workspace, method: str, overrides: dict[str, Any] | None = None, *, reuse: bool = True
) -> Synthesized:
    """Run the selected plugin's `synthesize` (or reuse a verified cached set) and save it."""
    record = plugins.method(method)
    info: MethodInfo = record.method
    config = parse_config(info, overrides or {})
    config_json = config.model_dump(mode="json")
    code = code_digest(record.module)
    key = synthesis_key(method, record.version, config_json, ws.protocol, code)
    folder = ws.settings.out / "synsets" / f"{method}-{key[:12]}"
    if reuse and (folder / "manifest.json").is_file():
        try:
            synset, manifest = load_synset(folder)
            if manifest.get("synthesis_key") == key:
                return Synthesized(synset, manifest, folder, reused=True)
        except UsageError as exc:
            log.warning("cached synthetic set is truncated or damaged (%s); synthesizing it again", exc)
    p = ws.protocol
    device = ws.settings.torch_device
    ctx = ws.context(
        method,
        config,
        workdir=folder / "work",
        real_data=ws.train if info.needs_real_data else None,
        teacher=info.needs_teacher,
    )
    try:
        synset = plugins.synthesize_caller(method)(ctx=ctx)
    except Rd3Error:
        raise
    except (Exception, KeyboardInterrupt) as exc:
        kind = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        raise PluginFailure(f"plugin {method!r} failed during synthesize: {kind}") from exc
    manifest_info = {
        "method": method,
        "plugin_version": record.version,
        "config": config_json,
        "config_hash": config_hash(config),
        "synthesis_key": key,
        "code_sha256": code,
        "dataset": p.dataset.name,
        "ipc": p.ipc,
        "num_classes": ws.info.num_classes,
        "synthesis": {**ctx.cost, "seed": p.synthesis_seed, "device": str(device)},
        "teacher_sha256": ws.teacher(p.teacher).sha256 if info.needs_teacher else None,
    }
    stored, manifest = save_synset(
        folder, synset, manifest_info, normalization=p.dataset.normalization, dtype=p.evaluation.storage_dtype
    )
    return Synthesized(stored, manifest, folder, reused=False)  # evaluated as stored, not as returned


@dataclass
class RunOutcome:
    run: Run
    records: list[RunRecord]


def run_key(
    protocol_hash: str, plugin: PluginRef, config_hash: str, synset_sha256: str, students: tuple[str, ...] | None = None
) -> str:
    parts = [protocol_hash, plugin.name, plugin.version, config_hash, synset_sha256]
    return sha256_of(parts if students is None else [*parts, sorted(students)])


def evaluated_students(protocol: Protocol, students: tuple[str, ...] | None) -> list[str]:
    """The protocol's students, narrowed to `--students` (every name must be one of them)."""
    names = [s.architecture for s in protocol.evaluation.students]
    if students is None:
        return names
    unknown = [s for s in students if s not in names]
    if unknown:
        raise UsageError(
            f"--students {','.join(unknown)}: not a student of {protocol.name}; its students are {', '.join(names)}"
        )
    return [n for n in names if n in students]


def _check_fits(ws: Workspace, synth: Synthesized) -> None:
    p, m = ws.protocol, synth.manifest
    if m.get("num_classes", ws.info.num_classes) != ws.info.num_classes or m.get("ipc", p.ipc) != p.ipc:
        raise UsageError(
            f"{synth.folder}: made for IPC {m.get('ipc')} / {m.get('num_classes')} classes; "
            f"the protocol needs IPC {p.ipc} / {ws.info.num_classes} classes"
        )
    if tuple(synth.synset.images.shape[1:]) != ws.test.image_shape:
        raise UsageError(
            f"{synth.folder}: images are {tuple(synth.synset.images.shape[1:])}, "
            f"the protocol needs {ws.test.image_shape}"
        )


def evaluation_input(ws: Workspace, synth: Synthesized) -> SyntheticSet:
    """What the students are trained on: the set as stored, quantized to 8-bit pixels first when
    the protocol stores uint8 but the set holds float32 (format 1, or made under `float32`)."""
    p, m = ws.protocol, synth.manifest
    if p.evaluation.storage_dtype == "uint8" and stored_dtype(m) != "uint8":
        log.warning(
            "%s: stored as float32; evaluated as uint8 pixels, as the protocol's evaluation.storage_dtype says",
            synth.folder,
        )
        return as_stored(synth.synset, "uint8", m.get("normalization") or p.dataset.normalization)
    return synth.synset


def _new_run(ws: Workspace, synth: Synthesized, plugin: PluginRef, key: str, source: str | None) -> Run:
    m = synth.manifest
    cost = m.get("synthesis") or {}
    return Run.start(
        ws.protocol,
        ws.hash,
        source or ws.source,
        plugin,
        m.get("config", {}),
        device=ws.settings.torch_device,
        settings=ws.settings.as_record(),
        method_config_hash=synth.config_hash,
        synset=SynsetRef(
            sha256=m["sha256"],
            path=str(synth.folder),
            count=m["count"],
            storage_bytes=m["storage_bytes"],
            storage_dtype=stored_dtype(m),
            pixel_bytes=m["pixel_bytes"],
            reused=synth.reused,
        ),
        synthesis=SynthesisCost(**{k: cost[k] for k in ("wall_s", "cpu_s", "peak_memory_bytes", "memory_kind")})
        if "wall_s" in cost
        else None,
        teacher=ws.teacher(ws.protocol.teacher).as_record(),
        run_key=key,
    )


def evaluate(
    ws: Workspace,
    synth: Synthesized,
    *,
    plugin: PluginRef,
    store: Store,
    source: str | None = None,
    observers: Observers = NONE,
) -> RunOutcome:
    """Evaluate a synthetic set under the workspace's protocol and record it.

    When an earlier attempt of the same command (same protocol hash, method, config, synthetic
    set and `--students`) was interrupted or failed, it is continued: finished (student, seed)
    evaluations are kept, an unfinished one resumes from its last epoch checkpoint.

    Under torchrun in job-parallel mode each rank takes a contiguous share of the unfinished jobs
    and commits each record as it finishes (one transaction per record, keyed by run, student and
    seed: a crash of any rank loses only its unfinished jobs); rank 0 writes the run document.
    """
    p, settings = ws.protocol, ws.settings
    device = settings.torch_device
    set_determinism(settings.deterministic, settings.benchmark_cudnn)
    students = evaluated_students(p, settings.students)
    _check_fits(ws, synth)
    m = synth.manifest
    key = run_key(ws.hash, plugin, synth.config_hash, m["sha256"], settings.students)
    world = distributed.world()
    previous = store.resumable(key) if settings.resume and world.main else None
    if previous is not None:
        run = previous.model_copy(update={"status": "running", "error": None, "attempt": previous.attempt + 1})
        records = store.records(run.run_id)
    else:
        run, records = _new_run(ws, synth, plugin, key, source), []
    run.pid, run.host, run.process = os.getpid(), socket.gethostname(), process_identity(os.getpid())
    run.students = students
    done = {(r.student, r.seed) for r in records}
    run_id, done = world.broadcast((run.run_id, done))  # rank 0 decides; all ranks follow
    run.run_id = run_id
    if world.main:
        store.put_run(run)
    observers = observers if world.main else NONE
    observers.notify("run_started", run=run, protocol=p)
    folder = settings.out / "checkpoints" / run.run_id
    started = time.perf_counter()
    error: BaseException | None = None
    try:
        teachers = ws.label_teachers()
        run.label_teachers = [t.as_record() for t in teachers]
        synset = evaluation_input(ws, synth)
        engine = Engine(
            p,
            synset.images,
            synset.labels,
            [t.model for t in teachers],
            ws.test,
            models=ws.registries.models,
            device=device,
            fill=ws.fill(),
            soft_labels=synset.soft_labels,
            teacher_reuse=settings.teacher_reuse,
            channels_last=settings.channels_last,
            checkpoints=Checkpoints(folder, settings.checkpoint_every),
            world=world,
            on_epoch=(
                (
                    lambda student, seed, epoch, metrics: observers.notify(
                        "epoch_finished", run=run, student=student, seed=seed, epoch=epoch, metrics=metrics
                    )
                )
                if observers.wants("epoch_finished")
                else None
            ),
        )
        todo = [j for j in engine.jobs() if j[0] in students and j not in done]
        mine = todo if world.data_parallel else todo[world.shard(len(todo))]
        writes = world.main or not world.data_parallel

        def keep(result: StudentResult) -> None:
            record = record_of(run, result, str(device))
            store.put_record(record)
            records.append(record)
            observers.notify("evaluation_finished", run=run, record=record)

        engine.run(on_result=keep if writes else None, jobs=mine)
        run.synset.label_storage_bytes = engine.provider.storage_bytes
    except (Exception, KeyboardInterrupt) as exc:
        error = exc
    failures = [f for f in world.gather(None if error is None else _describe(error)) if f is not None]
    if world.distributed and world.main:
        records = store.records(run.run_id)
    if failures:
        run.status, run.error, run.finished = "failed", failures[0], now()
        run.summary = summarize_records(records)
        if world.main:
            store.put_run(run)
        observers.notify("run_finished", run=run, records=records)
        if isinstance(error, Rd3Error):
            raise error
        what = failures[0] if error is None else _describe(error)
        raise Rd3Error(f"evaluation of run {run.run_id} failed: {what} (rerun the same command to continue)") from error
    run.evaluation_wall_s = (run.evaluation_wall_s or 0.0) + time.perf_counter() - started
    run.status, run.finished, run.summary = "complete", now(), summarize_records(records)
    if world.main:
        store.put_run(run)
        shutil.rmtree(folder, ignore_errors=True)
    observers.notify("run_finished", run=run, records=records)
    return RunOutcome(run, records)


def _describe(exc: BaseException) -> str:
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"


def run(
    plugins: Plugins,
    method: str,
    protocol_ref: str | os.PathLike | None = None,
    *,
    settings: Settings,
    config: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    reuse: bool = True,
    observers: Observers = NONE,
) -> RunOutcome:
    """`rd3h run`: synthesize with the plugin, evaluate under the protocol, record."""
    record = plugins.method(method)  # fail fast on an unknown name
    ws = open_workspace(plugins.registries, protocol_ref, settings, seeds)
    evaluated_students(ws.protocol, settings.students)  # and on an unknown --students name
    plugin = PluginRef(name=method, version=record.version, distribution=record.distribution)
    store = Store.in_folder(settings.out)
    world = distributed.world()
    if world.main:  # rank 0 trains teachers and synthesizes; the other ranks then read the caches
        ok = False
        try:
            ws.label_teachers()
            synth = synthesize(plugins, ws, method, config, reuse=reuse)
            ok = True
        except PluginFailure as exc:
            store.put_run(_failed_run(ws, plugin, config or {}, str(exc)))
            raise
        finally:
            world.broadcast(ok)
    elif not world.broadcast(None):
        raise Rd3Error("rank 0 failed before the evaluation; see its message")
    else:
        synth = synthesize(plugins, ws, method, config, reuse=True)
    return evaluate(ws, synth, plugin=plugin, store=store, observers=observers)


def _failed_run(ws: Workspace, plugin: PluginRef, config: dict[str, Any], error: str) -> Run:
    return Run.start(
        ws.protocol,
        ws.hash,
        ws.source,
        plugin,
        config,
        device=ws.settings.torch_device,
        settings=ws.settings.as_record(),
        status="failed",
        finished=now(),
        error=error,
    )
