"""The types of the plugin contract: `MethodInfo` (what a method is), `SynthesisContext` (what it
gets) and `SyntheticSet` (what it returns). Part of the public API (`rd3_harness`)."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rd3_harness.hashing import weights_digest
from rd3_harness.progress import Task, progress

if TYPE_CHECKING:
    import torch
    from torch import nn

    from rd3_harness.data.real import RealData


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
    loading or training teachers and other shared assets is reported apart and not counted; see
    `asset_time`)."""
    _fingerprints: dict[int, tuple[nn.Module, str]] = field(default_factory=dict, repr=False)
    _asset_kinds: set[str] = field(default_factory=set, repr=False)

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
        with self.asset_time("teacher_load"):
            models = loader()
            for model in models:
                if model is not None:
                    self._fingerprints[id(model)] = (model, weights_digest(model))
        return models

    @contextlib.contextmanager
    def asset_time(self, kind: str) -> Iterator[None]:
        """Time spent inside this block is preparing an asset that runs share (a teacher, a trained
        generative model), not the method's own work: it is recorded as `{kind}_wall_s` and
        `{kind}_cpu_s` in the run's synthesis cost and left out of time-to-synthesize."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.cost[f"{kind}_wall_s"] = self.cost.get(f"{kind}_wall_s", 0.0) + time.perf_counter() - wall
            self.cost[f"{kind}_cpu_s"] = self.cost.get(f"{kind}_cpu_s", 0.0) + time.process_time() - cpu
            self._asset_kinds.add(kind)

    def asset_seconds(self) -> tuple[float, float]:
        """Wall and CPU seconds spent in `asset_time` blocks so far."""
        kinds = self._asset_kinds
        return (
            sum(self.cost.get(f"{k}_wall_s", 0.0) for k in kinds),
            sum(self.cost.get(f"{k}_cpu_s", 0.0) for k in kinds),
        )

    def changed_teachers(self) -> list[str]:
        """Class names of loaded teachers whose weights differ from when they were loaded."""
        return [type(m).__name__ for m, digest in self._fingerprints.values() if weights_digest(m) != digest]

    def progress(self, total: int | None, description: str) -> Task:
        """A progress bar the CLI renders; use as a context manager and call `advance()`."""
        return progress(total, description)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp model-input images to the range of valid pixels [0, 1]."""
        import torch

        lo = self.normalize(torch.zeros(1, self.image_shape[0], 1, 1, device=x.device, dtype=x.dtype))
        hi = self.normalize(torch.ones(1, self.image_shape[0], 1, 1, device=x.device, dtype=x.dtype))
        return torch.maximum(torch.minimum(x, hi), lo)
