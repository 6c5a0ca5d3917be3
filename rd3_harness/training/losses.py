"""Losses between a student's logits and a batch's targets."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rd3_harness.protocol.schema import CELoss, KLLoss, MSECELoss, SoftCELoss


@dataclass
class Targets:
    """What a batch is trained towards. `hard_a`/`hard_b`/`lam` describe the mixed hard labels;
    `logits` are teacher logits on the actual (augmented, mixed) input; static soft labels give
    per-image logits `static_a`/`static_b` that are mixed with `lam`."""

    hard_a: torch.Tensor
    hard_b: torch.Tensor
    lam: float
    logits: torch.Tensor | None = None
    static_a: torch.Tensor | None = None
    static_b: torch.Tensor | None = None
    _probs: dict[float, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    """Soft targets by temperature, computed once per batch for all the students that share it."""

    def shard(self, part: slice) -> Targets:
        """The targets of a contiguous part of the batch (a rank's share)."""

        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[part]

        return Targets(
            self.hard_a[part], self.hard_b[part], self.lam, cut(self.logits), cut(self.static_a), cut(self.static_b)
        )

    def soft_probs(self, temperature: float) -> torch.Tensor:
        if temperature not in self._probs:
            if self.logits is not None:
                probs = F.softmax(self.logits.float() / temperature, dim=1)
            else:
                pa = F.softmax(self.static_a.float() / temperature, dim=1)
                pb = F.softmax(self.static_b.float() / temperature, dim=1)
                probs = self.lam * pa + (1 - self.lam) * pb
            self._probs[temperature] = probs
        return self._probs[temperature]

    def soft_logits(self) -> torch.Tensor:
        if self.logits is not None:
            return self.logits.float()
        return self.lam * self.static_a.float() + (1 - self.lam) * self.static_b.float()


def hard_ce(out: torch.Tensor, t: Targets) -> torch.Tensor:
    loss = F.cross_entropy(out, t.hard_a)
    if t.lam < 1:
        loss = t.lam * loss + (1 - t.lam) * F.cross_entropy(out, t.hard_b)
    return loss


def compute_loss(spec: CELoss | KLLoss | SoftCELoss | MSECELoss, out: torch.Tensor, t: Targets) -> torch.Tensor:
    out = out.float()
    if isinstance(spec, CELoss):
        return hard_ce(out, t)
    if isinstance(spec, KLLoss):
        tau = spec.temperature
        loss = F.kl_div(F.log_softmax(out / tau, dim=1), t.soft_probs(tau), reduction="batchmean")
        return loss * tau * tau if spec.t_squared else loss
    if isinstance(spec, SoftCELoss):
        tau = spec.temperature
        return -(t.soft_probs(tau) * F.log_softmax(out / tau, dim=1)).sum(1).mean()
    return F.mse_loss(out, t.soft_logits()) + spec.gamma * F.cross_entropy(out, t.hard_a)
