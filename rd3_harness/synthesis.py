"""The objects of the plugin API: `MethodInfo`, `SynthesisContext`, `SyntheticSet`, and the core's
checks on what a plugin returns."""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from rd3_harness.data.real import RealData
from rd3_harness.errors import PluginFailure, UsageError
from rd3_harness.progress import Task, progress


@dataclass(frozen=True)
class MethodInfo:
    """What a method plugin is: returned by its `method_info` hook."""

    name: str
    summary: str
    config_model: type[BaseModel]
    needs_teacher: bool = False
    needs_real_data: bool = True
    paper: str | None = None
    citation: str | None = None

    def problems(self) -> list[str]:
        """What is wrong with this description (empty when it is complete)."""
        out = []
        if not self.summary.strip():
            out.append("summary is empty")
        if not (isinstance(self.config_model, type) and issubclass(self.config_model, BaseModel)):
            out.append("config_model must be a pydantic BaseModel subclass")
            return out
        config = self.config_model.model_config
        if not config.get("frozen"):
            out.append("config_model must be frozen: class Config(BaseModel, frozen=True, extra='forbid')")
        if config.get("extra") != "forbid":
            out.append("config_model must forbid unknown keys: extra='forbid'")
        try:
            self.config_model()
        except Exception as exc:  # noqa: BLE001 - any failure means defaults are incomplete
            out.append(f"config_model() must work with defaults alone: {exc}")
        return out


@dataclass
class SyntheticSet:
    """A plugin's output: images in model-input (normalized) space, one int64 label each."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class SynthesisContext:
    """Everything a plugin may use to synthesize. Use `generator` for randomness and `device`
    for placement; never global RNG state."""

    ipc: int
    num_classes: int
    image_shape: tuple[int, int, int]
    config: BaseModel
    real_data: RealData | None
    generator: torch.Generator
    seed: int
    device: torch.device
    workdir: Path
    """Scratch folder of this synthesis."""
    cache_dir: Path
    """A folder this method may keep across runs (e.g. real-data statistics of a teacher); key
    what you store by what it depends on."""
    dataset: str
    method: str
    make_model: Callable[[str], nn.Module]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    denormalize: Callable[[torch.Tensor], torch.Tensor]
    load_teacher: Callable[[], nn.Module | None] = field(default=lambda: None, repr=False)
    load_teachers: Callable[[], tuple[nn.Module, ...]] = field(default=tuple, repr=False)
    cost: dict[str, float] = field(default_factory=dict)
    """Filled by the core: wall and CPU seconds and peak memory of the `synthesize` call (time spent
    loading or training teachers is reported apart and not counted)."""
    _fingerprints: dict[int, tuple[nn.Module, str]] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def teacher(self) -> nn.Module | None:
        """The protocol's teacher, eval mode, on `device` (None unless `needs_teacher`)."""
        (teacher,) = self._load(lambda: (self.load_teacher(),))
        return teacher

    @functools.cached_property
    def teachers(self) -> tuple[nn.Module, ...]:
        """The protocol's `synthesis_teachers` (loaded on first access; empty if it lists none)."""
        return self._load(self.load_teachers)

    def _load(self, loader: Callable[[], tuple]) -> tuple:
        """Load teachers outside time-to-synthesize (training one is not the method's cost) and
        fingerprint their weights, which a method must not change."""
        wall, cpu = time.perf_counter(), time.process_time()
        models = loader()
        for model in models:
            if model is not None:
                self._fingerprints[id(model)] = (model, weights_digest(model))
        self.cost["teacher_load_wall_s"] = self.cost.get("teacher_load_wall_s", 0.0) + time.perf_counter() - wall
        self.cost["teacher_load_cpu_s"] = self.cost.get("teacher_load_cpu_s", 0.0) + time.process_time() - cpu
        return models

    def changed_teachers(self) -> list[str]:
        """Class names of loaded teachers whose weights differ from when they were loaded."""
        return [type(m).__name__ for m, digest in self._fingerprints.values() if weights_digest(m) != digest]

    def progress(self, total: int | None, description: str) -> Task:
        """A progress bar the CLI renders; use as a context manager and call `advance()`."""
        return progress(total, description)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp model-input images to the range of valid pixels [0, 1]."""
        lo = self.normalize(torch.zeros(1, self.image_shape[0], 1, 1, device=x.device, dtype=x.dtype))
        hi = self.normalize(torch.ones(1, self.image_shape[0], 1, 1, device=x.device, dtype=x.dtype))
        return torch.maximum(torch.minimum(x, hi), lo)


def model_maker(
    generator: torch.Generator, num_classes: int, image_shape: tuple[int, int, int], device: torch.device
) -> Callable[[str], nn.Module]:
    """`ctx.make_model`: a fresh model by registry name, initialised from a seed drawn from `generator`."""
    from rd3_harness.models import create_model

    def make_model(name: str) -> nn.Module:
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        model = create_model(name, num_classes=num_classes, in_channels=image_shape[0], resolution=image_shape[1])
        return model.to(device)

    return make_model


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer of a model, in order."""
    h = hashlib.sha256()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        h.update(name.encode())
        if not t.is_meta:  # meta tensors (the plugin kit's device probe) hold no values
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def parse_config(info: MethodInfo, overrides: dict[str, Any]) -> BaseModel:
    """Validate a method's config; errors name the key and the plugin."""
    from pydantic import ValidationError

    try:
        return info.config_model(**overrides)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '<config>'}: {e['msg']}" for e in exc.errors(include_url=False)]
        fields = ", ".join(info.config_model.model_fields) or "none"
        raise UsageError(f"invalid config for {info.name} (its keys: {fields}):\n" + "\n".join(lines)) from None


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
