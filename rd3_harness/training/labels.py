"""Soft-label providers: hard labels, static soft labels, epoch-wise online teachers (one or a
hybrid of several) and FKD-style replay of precomputed logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from rd3_harness.errors import UsageError
from rd3_harness.protocol.schema import FKDLabels, HardLabels, OnlineSoftLabels, StaticSoftLabels
from rd3_harness.training.augment import AugmentParams
from rd3_harness.training.losses import Targets


def combine_logits(logits: Sequence[torch.Tensor], how: str) -> torch.Tensor:
    """Mean of several teachers' logits; `norm_mean` first rescales each teacher's batch logits to
    the mean Frobenius norm (G-VBSM)."""
    if len(logits) == 1:
        return logits[0]
    if how == "norm_mean":
        norms = torch.stack([t.norm() for t in logits])
        target = norms.mean()
        logits = [t * (target / n.clamp(min=1e-12)) for t, n in zip(logits, norms)]
    return torch.stack(list(logits)).mean(0)


class TeacherEnsemble:
    """Teachers as one labeller: eval mode, inference mode, protocol precision. Counts forward
    passes (`calls`) so reuse across students can be checked."""

    def __init__(self, models: Sequence[nn.Module], combine: str, precision: str, channels_last: bool):
        self.models, self.combine, self.precision, self.channels_last = list(models), combine, precision, channels_last
        self.calls = 0
        for m in self.models:
            m.eval()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = [m(x).float() for m in self.models]
        return combine_logits(out, self.combine)


class LabelProvider:
    """Gives the targets of each batch. `stream_seed`, when set, fixes the batch stream (FKD)."""

    stream_seed: int | None = None
    storage_bytes: int = 0

    def prepare(self, images: torch.Tensor, replay: Callable | None = None) -> None:
        """Called once per run with the synthetic images (and, for FKD, the batch stream)."""

    def targets(
        self,
        epoch: int,
        batch: int,
        idx: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        p: AugmentParams,
        part: slice = slice(None),
    ) -> Targets:
        """Targets for `x[part]`, where batch `batch` of `epoch` holds images `idx` with labels `y`,
        augmented and mixed into `x` with parameters `p` (`part`: this rank's share)."""
        return hard_targets(y, p).shard(part)


def hard_targets(y: torch.Tensor, p: AugmentParams, **soft: torch.Tensor) -> Targets:
    perm = None if p.mix_perm is None else p.mix_perm.to(y.device)
    return Targets(y, y if perm is None else y[perm], p.mix_lam, **soft)


class HardProvider(LabelProvider):
    pass


class StaticProvider(LabelProvider):
    def __init__(self, teacher: TeacherEnsemble | None, method_soft_labels: torch.Tensor | None):
        self.teacher, self.method_soft = teacher, method_soft_labels
        self.logits: torch.Tensor | None = None

    def prepare(self, images: torch.Tensor, replay: Callable | None = None) -> None:
        if self.teacher is None:
            if self.method_soft is None:
                raise UsageError("the protocol asks for the method's soft labels, but the synthetic set has none")
            self.logits = self.method_soft.to(images.device).float()
        else:
            self.logits = torch.cat([self.teacher(chunk) for chunk in images.split(256)])
        self.storage_bytes = self.logits.numel() * 4

    def targets(self, epoch, batch, idx, x, y, p, part=slice(None)) -> Targets:
        a = self.logits[idx.to(self.logits.device)]
        b = a if p.mix_perm is None else a[p.mix_perm.to(a.device)]
        return hard_targets(y, p, static_a=a, static_b=b).shard(part)


class OnlineProvider(LabelProvider):
    def __init__(self, teacher: TeacherEnsemble):
        self.teacher = teacher

    def targets(self, epoch, batch, idx, x, y, p, part=slice(None)) -> Targets:
        local = hard_targets(y, p).shard(part)
        local.logits = self.teacher(x[part])  # the teacher sees only this rank's share
        return local


class FKDProvider(LabelProvider):
    """Precomputes the teacher logits of every batch of every epoch of the fixed stream (drawn
    with the protocol's FKD seed), stores them in fp16 or fp32, and replays them."""

    def __init__(self, teacher: TeacherEnsemble, seed: int, dtype: str):
        self.teacher, self.stream_seed = teacher, seed
        self.dtype = torch.float16 if dtype == "fp16" else torch.float32
        self.store: dict[tuple[int, int], torch.Tensor] = {}

    def prepare(self, images: torch.Tensor, replay: Callable | None = None) -> None:
        if self.store:
            return
        for epoch, batch, x in replay():
            self.store[(epoch, batch)] = self.teacher(x).to(self.dtype)
        self.storage_bytes = sum(t.numel() * t.element_size() for t in self.store.values())

    def targets(self, epoch, batch, idx, x, y, p, part=slice(None)) -> Targets:
        return hard_targets(y, p, logits=self.store[(epoch, batch)]).shard(part)


def make_provider(
    spec: HardLabels | StaticSoftLabels | OnlineSoftLabels | FKDLabels,
    teacher: TeacherEnsemble | None,
    method_soft_labels: torch.Tensor | None = None,
) -> LabelProvider:
    if isinstance(spec, HardLabels):
        return HardProvider()
    if isinstance(spec, StaticSoftLabels):
        return StaticProvider(teacher if spec.source == "teacher" else None, method_soft_labels)
    if isinstance(spec, OnlineSoftLabels):
        return OnlineProvider(teacher)
    return FKDProvider(teacher, spec.seed, spec.dtype)
