"""Synthesis, core side: the context a plugin is given (built here, once), the cache key of a
synthetic set, the config check, and the guard that wraps every `synthesize` call (seeds, times,
validates)."""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from rd3_harness.contract import MethodInfo, SynthesisContext, SyntheticSet
from rd3_harness.cost import measure
from rd3_harness.data.real import RealData
from rd3_harness.errors import PluginFailure, UsageError
from rd3_harness.hashing import sha256_of
from rd3_harness.hookspecs import hookimpl
from rd3_harness.protocol.schema import Protocol
from rd3_harness.registry import ModelEntry


def model_maker(
    models: Mapping[str, ModelEntry],
    generator: torch.Generator,
    num_classes: int,
    image_shape: tuple[int, int, int],
    device: torch.device,
) -> Callable[[str], nn.Module]:
    """`ctx.make_model`: a fresh model by registry name, initialised from a seed drawn from `generator`."""
    from rd3_harness.models import create_model

    def make_model(name: str) -> nn.Module:
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        model = create_model(
            models, name, num_classes=num_classes, in_channels=image_shape[0], resolution=image_shape[1]
        )
        return model.to(device)

    return make_model


def build_context(
    protocol: Protocol,
    *,
    models: Mapping[str, ModelEntry],
    num_classes: int,
    image_shape: tuple[int, int, int],
    config: BaseModel,
    method: str,
    real_data: RealData | None,
    device: torch.device,
    workdir: Path,
    cache_dir: Path,
    load_teacher: Callable[[], nn.Module | None] = lambda: None,
    load_teachers: Callable[[], tuple[nn.Module, ...]] = tuple,
    seed: int | None = None,
) -> SynthesisContext:
    """The `SynthesisContext` of one synthesis: seeded from the protocol's synthesis seed (or `seed`),
    normalizing with the protocol's statistics, making models from the registry."""
    seed = protocol.synthesis_seed if seed is None else seed
    generator = torch.Generator().manual_seed(seed)
    norm = protocol.dataset.normalization
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (norm.mean, norm.std))
    workdir.mkdir(parents=True, exist_ok=True)
    return SynthesisContext(
        ipc=protocol.ipc,
        num_classes=num_classes,
        image_shape=image_shape,
        config=config,
        real_data=real_data,
        generator=generator,
        seed=seed,
        device=device,
        workdir=workdir,
        cache_dir=cache_dir,
        dataset=protocol.dataset.name,
        method=method,
        make_model=model_maker(models, generator, num_classes, image_shape, device),
        normalize=lambda x: (x - mean.to(x)) / std.to(x),
        denormalize=lambda x: x * std.to(x) + mean.to(x),
        load_teacher=load_teacher,
        load_teachers=load_teachers,
    )


def code_digest(module_name: str) -> str:
    """sha256 of a plugin's Python sources (every file of the top-level package its module is in,
    or its one file): a code change without a version bump must not reuse an old synthetic set."""
    try:
        spec = importlib.util.find_spec(module_name.split(".")[0])
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
    """What decides a synthetic set: the method, its version, code and config, the protocol's
    dataset, IPC, teachers and synthesis seed, and how the set is stored (uint8 pixels or float32;
    no other evaluation setting)."""
    p = protocol.model_dump(mode="json")
    return sha256_of(
        {
            "method": method,
            "version": version,
            "code": code,
            "config": config,
            **{k: p[k] for k in ("dataset", "ipc", "teacher", "synthesis_teachers", "synthesis_seed")},
            "storage_dtype": protocol.evaluation.storage_dtype,
        }
    )


def config_hash(config: BaseModel) -> str:
    """A method config's hash, as run records and set manifests carry it."""
    return sha256_of(config.model_dump(mode="json"))


def parse_config(info: MethodInfo, overrides: dict[str, Any]) -> BaseModel:
    """Validate a method's config; errors name the key and the plugin."""
    try:
        return info.config_model(**overrides)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors(include_url=False)]
        fields = ", ".join(info.config_model.model_fields) or "none"
        raise UsageError(f"invalid config for {info.name} (its keys: {fields}):\n" + "\n".join(lines)) from None


@hookimpl(wrapper=True)
def synthesize(ctx: SynthesisContext):
    """The core's wrapper around every `synthesize` call: seeds, times, measures and validates."""
    torch.manual_seed(ctx.seed)  # for code that ignores ctx.generator (model init, dropout)
    with measure(ctx.device) as cost:
        result = yield
    asset_wall, asset_cpu = ctx.asset_seconds()  # teachers and generators are shared, not the method's cost
    cost["wall_s"] -= asset_wall
    cost["cpu_s"] -= asset_cpu
    ctx.cost.update(cost)
    changed = ctx.changed_teachers()
    if changed:
        raise PluginFailure(
            f"plugin {ctx.method!r} changed the weights of the teacher ({', '.join(changed)}) it was given; "
            "the core evaluates with the same teacher: restore it, or work on copy.deepcopy(ctx.teacher)"
        )
    return validate_synthetic_set(result, ctx.method, ctx.ipc, ctx.num_classes, ctx.image_shape)


def validate_synthetic_set(
    result: Any, plugin: str, ipc: int, num_classes: int, shape: tuple[int, ...]
) -> SyntheticSet:
    """The core's checks on a plugin's output; any violation is a PluginFailure naming the plugin."""

    def fail(problem: str) -> PluginFailure:
        return PluginFailure(f"plugin {plugin!r} returned an invalid synthetic set: {problem}")

    if not isinstance(result, SyntheticSet):
        raise fail(f"expected a SyntheticSet, got {type(result).__name__}")
    x, y = result.images, result.labels
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise fail("images and labels must be tensors")
    if not x.is_floating_point():
        raise fail(f"images must be a float tensor, got {x.dtype}")
    if tuple(x.shape[1:]) != tuple(shape) or x.ndim != 4:
        raise fail(f"images have shape {tuple(x.shape)}, expected [N, {', '.join(map(str, shape))}]")
    if y.dtype != torch.int64 or y.ndim != 1:
        raise fail(f"labels must be int64 [N], got {y.dtype} {tuple(y.shape)}")
    if len(y) != len(x):
        raise fail(f"{len(x)} images but {len(y)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise fail(f"labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]")
    counts = torch.bincount(y.cpu(), minlength=num_classes)
    wrong = [(c, int(n)) for c, n in enumerate(counts.tolist()) if n != ipc]
    if wrong:
        detail = ", ".join(f"class {c}: {n}" for c, n in wrong[:5])
        raise fail(f"expected exactly {ipc} images per class ({detail})")
    if not torch.isfinite(x).all():
        raise fail(f"{int((~torch.isfinite(x)).sum())} image values are NaN or infinite")
    s = result.soft_labels
    if s is not None and (tuple(s.shape) != (len(x), num_classes) or not torch.isfinite(s).all()):
        raise fail(f"soft_labels must be finite [N, {num_classes}]")
    return result
