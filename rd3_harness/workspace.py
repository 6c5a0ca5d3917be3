"""A workspace: one protocol with its registries, data and teachers, opened for a run (or for the
plugin kit). Builds the synthesis context a plugin is given."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from rd3_harness.contract import SynthesisContext
from rd3_harness.data.datasets import open_dataset
from rd3_harness.data.real import RealData
from rd3_harness.hashing import sha256_of
from rd3_harness.protocol.io import protocol_hash
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.protocol.preflight import check_protocol, physical_memory_bytes
from rd3_harness.protocol.schema import HardLabels, Protocol
from rd3_harness.registry import DatasetInfo, Registries
from rd3_harness.settings import Settings
from rd3_harness.synthesis import build_context
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
    """A protocol with its data opened and teachers loaded on demand (cached per workspace)."""

    protocol: Protocol
    source: str
    settings: Settings
    registries: Registries
    info: DatasetInfo = field(init=False)
    train: RealData = field(init=False)
    test: RealData = field(init=False)
    _teachers: dict[str, LoadedTeacher] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        ds = self.protocol.dataset
        self.info, train, test = open_dataset(
            self.registries.datasets, ds.name, self.settings, resolution=ds.resolution
        )
        common = dict(
            num_classes=self.info.num_classes,
            resolution=ds.resolution,
            mean=ds.normalization.mean,
            std=ds.normalization.std,
            device=self.settings.torch_device,
            workers=self.settings.workers,
            cache=self.settings.pixel_cache,
        )
        self.train = RealData(train, **common)
        self.test = RealData(test, test=True, **common)
        check_protocol(
            self.protocol,
            native_resolution=self.info.resolution,
            channels=self.info.channels,
            class_sizes=torch.bincount(train.labels, minlength=self.info.num_classes).tolist(),
            memory_bytes=physical_memory_bytes(),
        )

    @property
    def hash(self) -> str:
        return protocol_hash(self.protocol)

    def teacher(self, spec) -> LoadedTeacher:
        key = sha256_of(spec.model_dump(mode="json"))
        if key not in self._teachers:
            self._teachers[key] = get_teacher(
                self.registries.models, spec, self.protocol.dataset, self.settings, self.train, self.test
            )
        return self._teachers[key]

    def label_teachers(self) -> list[LoadedTeacher]:
        labels = self.protocol.evaluation.labels
        if isinstance(labels, HardLabels) or getattr(labels, "source", "teacher") == "method":
            return []
        return [self.teacher(t) for t in (labels.teachers or (self.protocol.teacher,))]

    def fill(self) -> torch.Tensor:
        """A black pixel in model-input space (padding value)."""
        return self.test.normalize(torch.zeros(1, self.test.image_shape[0], 1, 1, device=self.test.device)).flatten()

    def context(
        self,
        method: str,
        config: BaseModel,
        *,
        workdir: Path,
        real_data: RealData | None,
        teacher: bool,
        cache_dir: Path | None = None,
        place: Callable[[nn.Module], nn.Module] | None = None,
        device: torch.device | None = None,
        seed: int | None = None,
    ) -> SynthesisContext:
        """The context a plugin is given: `real_data` as `ctx.real_data`, the protocol's teachers
        loaded on first access when `teacher` is true. `place(model)` may move teachers elsewhere
        (the plugin kit's device probe)."""
        p = self.protocol
        put = place or (lambda model: model)
        return build_context(
            p,
            models=self.registries.models,
            num_classes=self.info.num_classes,
            image_shape=self.test.image_shape,
            config=config,
            method=method,
            real_data=real_data,
            device=device or self.settings.torch_device,
            workdir=workdir,
            cache_dir=cache_dir or self.settings.home / "cache" / method,
            load_teacher=(lambda: put(self.teacher(p.teacher).model)) if teacher else (lambda: None),
            load_teachers=(lambda: tuple(put(self.teacher(t).model) for t in p.synthesis_teachers))
            if teacher
            else tuple,
            seed=seed,
        )


def open_workspace(
    registries: Registries,
    protocol_ref: str | os.PathLike | None,
    settings: Settings,
    seeds: list[int] | None = None,
) -> Workspace:
    """Resolve a protocol (name or path), apply `seeds`, open its dataset."""
    protocol, path = resolve_protocol(registries, protocol_ref)
    return Workspace(with_seeds(protocol, seeds), str(path), settings, registries)
