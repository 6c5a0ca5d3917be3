"""One run: resolve the protocol, data and teachers; synthesize with the selected plugin (or reuse
its cached set); evaluate every student x seed; record everything in the store."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rd3_harness import distributed
from rd3_harness.data.real import RealData
from rd3_harness.data.registry import DatasetInfo, open_dataset
from rd3_harness.data.synset import load_synset, save_synset
from rd3_harness.errors import PluginFailure, Rd3Error, UsageError
from rd3_harness.plugins import get_plugins
from rd3_harness.posteval.checkpoint import Checkpoints
from rd3_harness.posteval.trainer import Engine, StudentResult
from rd3_harness.protocol.io import protocol_hash, sha256_of
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.protocol.schema import HardLabels, Protocol
from rd3_harness.results.record import (
    PluginRef,
    Run,
    RunRecord,
    SynsetRef,
    SynthesisCost,
    environment,
    nan_to_none,
    now,
    summarize_records,
)
from rd3_harness.results.store import Store
from rd3_harness.settings import Settings
from rd3_harness.synthesis import MethodInfo, SynthesisContext, SyntheticSet, model_maker, parse_config
from rd3_harness.teachers import LoadedTeacher, get_teacher


def with_seeds(protocol: Protocol, seeds: list[int] | None) -> Protocol:
    """The protocol with other evaluation seeds (a different protocol: its hash changes)."""
    if not seeds:
        return protocol
    data = protocol.model_dump(mode="json")
    data["evaluation"]["seeds"] = list(seeds)
    return Protocol.model_validate(data)


@dataclass
class Workspace:
    """A protocol with its data opened and teachers loaded on demand (cached per run)."""

    protocol: Protocol
    source: str
    settings: Settings
    info: DatasetInfo = field(init=False)
    train: RealData = field(init=False)
    test: RealData = field(init=False)
    _teachers: dict[str, LoadedTeacher] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        ds = self.protocol.dataset
        self.info, train, test = open_dataset(ds.name, self.settings)
        common = dict(
            num_classes=self.info.num_classes,
            resolution=ds.resolution,
            mean=ds.normalization.mean,
            std=ds.normalization.std,
            device=self.settings.torch_device,
            workers=self.settings.workers,
        )
        self.train = RealData(train, **common)
        self.test = RealData(test, test=True, **common)

    @property
    def hash(self) -> str:
        return protocol_hash(self.protocol)

    def teacher(self, spec) -> LoadedTeacher:
        key = sha256_of(spec.model_dump(mode="json"))
        if key not in self._teachers:
            self._teachers[key] = get_teacher(spec, self.protocol.dataset, self.settings, self.train, self.test)
        return self._teachers[key]

    def label_teachers(self) -> list[LoadedTeacher]:
        labels = self.protocol.evaluation.labels
        if isinstance(labels, HardLabels) or getattr(labels, "source", "teacher") == "method":
            return []
        return [self.teacher(t) for t in (labels.teachers or (self.protocol.teacher,))]

    def fill(self) -> torch.Tensor:
        """A black pixel in model-input space (padding value)."""
        return self.test.normalize(torch.zeros(1, self.test.image_shape[0], 1, 1, device=self.test.device)).flatten()


def code_digest(module_name: str) -> str:
    """sha256 of a plugin's Python sources (its package folder, or its one file): a code change
    without a version bump must not reuse an old synthetic set."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return ""
    origin = Path(spec.origin)
    files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(origin.parent).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def synthesis_key(method: str, version: str, config: dict[str, Any], protocol: Protocol, code: str = "") -> str:
    """What decides a synthetic set: the method, its version, code and config, and the protocol's
    dataset, IPC, teachers and synthesis seed (not its evaluation settings)."""
    p = protocol.model_dump(mode="json")
    return sha256_of(
        {
            "method": method,
            "version": version,
            "code": code,
            "config": config,
            **{k: p[k] for k in ("dataset", "ipc", "teacher", "synthesis_teachers", "synthesis_seed")},
        }
    )


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
    ws: Workspace, method: str, overrides: dict[str, Any] | None = None, *, reuse: bool = True
) -> Synthesized:
    """Run the selected plugin's `synthesize` (or reuse a verified cached set) and save it."""
    plugins = get_plugins()
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
        except UsageError:
            pass  # a damaged cache entry is made again
    p = ws.protocol
    device = ws.settings.torch_device
    gen = torch.Generator().manual_seed(p.synthesis_seed)
    shape = ws.test.image_shape

    workdir = folder / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = SynthesisContext(
        ipc=p.ipc,
        num_classes=ws.info.num_classes,
        image_shape=shape,
        config=config,
        real_data=ws.train if info.needs_real_data else None,
        generator=gen,
        seed=p.synthesis_seed,
        device=device,
        workdir=workdir,
        cache_dir=ws.settings.home / "cache" / method,
        dataset=p.dataset.name,
        method=method,
        make_model=model_maker(gen, ws.info.num_classes, shape, device),
        normalize=ws.test.normalize,
        denormalize=ws.test.denormalize,
        load_teacher=(lambda: ws.teacher(p.teacher).model) if info.needs_teacher else (lambda: None),
        load_teachers=(lambda: tuple(ws.teacher(t).model for t in p.synthesis_teachers))
        if info.needs_teacher
        else tuple,
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
        "config_hash": sha256_of(config_json),
        "synthesis_key": key,
        "code_sha256": code,
        "dataset": p.dataset.name,
        "ipc": p.ipc,
        "num_classes": ws.info.num_classes,
        "normalization": p.dataset.normalization.model_dump(mode="json"),
        "synthesis": {**ctx.cost, "seed": p.synthesis_seed, "device": str(device)},
        "teacher_sha256": ws.teacher(p.teacher).sha256 if info.needs_teacher else None,
    }
    manifest = save_synset(folder, synset, manifest_info, denormalize=lambda x: ws.test.denormalize(x.to(device)).cpu())
    return Synthesized(synset, manifest, folder, reused=False)


@dataclass
class RunOutcome:
    run: Run
    records: list[RunRecord]


def new_run_id(method: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{method}-{secrets.token_hex(3)}"


def run_key(protocol_hash: str, plugin: PluginRef, config_hash: str, synset_sha256: str) -> str:
    return sha256_of([protocol_hash, plugin.name, plugin.version, config_hash, synset_sha256])


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


def _new_run(ws: Workspace, synth: Synthesized, plugin: PluginRef, key: str, source: str | None) -> Run:
    p, m = ws.protocol, synth.manifest
    cost = m.get("synthesis") or {}
    return Run(
        run_id=new_run_id(plugin.name),
        created=now(),
        status="running",
        protocol=p.model_dump(mode="json"),
        protocol_hash=ws.hash,
        protocol_name=p.name,
        protocol_version=p.version,
        protocol_source=source or ws.source,
        plugin=plugin,
        method_config=m.get("config", {}),
        method_config_hash=synth.config_hash,
        synset=SynsetRef(
            sha256=m["sha256"],
            path=str(synth.folder),
            count=m["count"],
            storage_bytes=m["storage_bytes"],
            pixel_bytes=m["pixel_bytes"],
            reused=synth.reused,
        ),
        synthesis=SynthesisCost(**{k: cost[k] for k in ("wall_s", "cpu_s", "peak_memory_bytes", "memory_kind")})
        if "wall_s" in cost
        else None,
        teacher=ws.teacher(p.teacher).as_record(),
        environment=environment(ws.settings.torch_device),
        settings=ws.settings.as_record(),
        run_key=key,
    )


def evaluate(
    ws: Workspace, synth: Synthesized, *, plugin: PluginRef, store: Store, source: str | None = None
) -> RunOutcome:
    """Evaluate a synthetic set under the workspace's protocol and record it.

    When an earlier attempt of the same command (same protocol hash, method, config and synthetic
    set) was interrupted or failed, it is continued: finished (student, seed) evaluations are kept,
    an unfinished one resumes from its last epoch checkpoint.
    """
    p, settings = ws.protocol, ws.settings
    device = settings.torch_device
    _check_fits(ws, synth)
    m = synth.manifest
    key = run_key(ws.hash, plugin, synth.config_hash, m["sha256"])
    world = distributed.world()
    previous = store.resumable(key) if settings.resume and world.main else None
    if previous is not None:
        run = previous.model_copy(update={"status": "running", "error": None, "attempt": previous.attempt + 1})
        records = store.records(run.run_id)
    else:
        run, records = _new_run(ws, synth, plugin, key, source), []
    run.pid, run.host = os.getpid(), socket.gethostname()
    done = {(r.student, r.seed) for r in records}
    run_id, done = world.broadcast((run.run_id, done))  # rank 0 decides; all ranks follow
    run.run_id = run_id
    if world.main:
        store.put_run(run)
    else:
        records = []
    folder = settings.out / "checkpoints" / run.run_id
    started = time.perf_counter()
    try:
        teachers = ws.label_teachers()
        run.label_teachers = [t.as_record() for t in teachers]
        engine = Engine(
            p,
            synth.synset.images,
            synth.synset.labels,
            [t.model for t in teachers],
            ws.test,
            device=device,
            fill=ws.fill(),
            soft_labels=synth.synset.soft_labels,
            teacher_reuse=settings.teacher_reuse,
            channels_last=settings.channels_last,
            checkpoints=Checkpoints(folder, settings.checkpoint_every),
        )

        def keep(result: StudentResult) -> None:
            record = _record(run, result, str(device))
            store.put_record(record)
            records.append(record)

        engine.run(on_result=keep if world.main else None, skip=lambda student, seed: (student, seed) in done)
        run.synset.label_storage_bytes = engine.provider.storage_bytes
    except (Exception, KeyboardInterrupt) as exc:
        run.status, run.error, run.finished = "failed", f"{type(exc).__name__}: {exc}", now()
        run.summary = summarize_records(records)
        if world.main:
            store.put_run(run)
        if isinstance(exc, Rd3Error):
            raise
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        raise Rd3Error(f"evaluation of run {run.run_id} failed: {what} (rerun the same command to continue)") from exc
    run.evaluation_wall_s = (run.evaluation_wall_s or 0.0) + time.perf_counter() - started
    run.status, run.finished, run.summary = "complete", now(), summarize_records(records)
    if world.main:
        store.put_run(run)
        shutil.rmtree(folder, ignore_errors=True)
    return RunOutcome(run, records)


def _record(run: Run, r: StudentResult, device: str) -> RunRecord:
    return RunRecord(
        run_id=run.run_id,
        protocol_hash=run.protocol_hash,
        protocol_name=run.protocol_name,
        method=run.plugin.name,
        plugin_version=run.plugin.version,
        method_config_hash=run.method_config_hash,
        synset_sha256=run.synset.sha256,
        teacher_sha256=(run.teacher or {}).get("sha256"),
        student=r.student,
        seed=r.seed,
        top1=r.top1,
        top5=r.top5,
        final_top1=r.final_top1,
        final_top5=r.final_top5,
        report_mode="best" if r.test_set_selection else "final",
        test_set_selection=r.test_set_selection,
        selected_epoch=r.selected_epoch,
        epochs=r.epochs,
        steps=r.steps,
        images_seen=r.images_seen,
        final_loss=nan_to_none(r.final_loss),
        train_wall_s=r.train_wall_s,
        eval_wall_s=r.eval_wall_s,
        synthesis_wall_s=run.synthesis.wall_s if run.synthesis else 0.0,
        storage_bytes=run.synset.storage_bytes,
        device=device,
        created=now(),
        attempt=run.attempt,
        resumed_from_epoch=r.resumed_from_epoch,
    )


def open_workspace(
    protocol_ref: str | os.PathLike | None, settings: Settings, seeds: list[int] | None = None
) -> Workspace:
    protocol, path = resolve_protocol(protocol_ref)
    return Workspace(with_seeds(protocol, seeds), str(path), settings)


def run(
    method: str,
    protocol_ref: str | os.PathLike | None = None,
    *,
    settings: Settings,
    config: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    reuse: bool = True,
) -> RunOutcome:
    """`rd3h run`: synthesize with the plugin, evaluate under the protocol, record."""
    record = get_plugins().method(method)  # fail fast on an unknown name
    ws = open_workspace(protocol_ref, settings, seeds)
    plugin = PluginRef(name=method, version=record.version, distribution=record.distribution)
    store = Store.in_folder(settings.out)
    world = distributed.world()
    if world.main:  # rank 0 trains teachers and synthesizes; the other ranks then read the caches
        ok = False
        try:
            ws.label_teachers()
            synth = synthesize(ws, method, config, reuse=reuse)
            ok = True
        except PluginFailure as exc:
            store.put_run(_failed_run(ws, plugin, config or {}, str(exc)))
            raise
        finally:
            world.broadcast(ok)
    elif not world.broadcast(None):
        raise Rd3Error("rank 0 failed before the evaluation; see its message")
    else:
        synth = synthesize(ws, method, config, reuse=True)
    return evaluate(ws, synth, plugin=plugin, store=store)


def _failed_run(ws: Workspace, plugin: PluginRef, config: dict[str, Any], error: str) -> Run:
    p = ws.protocol
    return Run(
        run_id=new_run_id(plugin.name),
        created=now(),
        finished=now(),
        status="failed",
        error=error,
        protocol=p.model_dump(mode="json"),
        protocol_hash=ws.hash,
        protocol_name=p.name,
        protocol_version=p.version,
        protocol_source=ws.source,
        plugin=plugin,
        method_config=config,
        method_config_hash=sha256_of(config),
        synset=None,
        synthesis=None,
        teacher=None,
        environment=environment(ws.settings.torch_device),
        settings=ws.settings.as_record(),
    )
