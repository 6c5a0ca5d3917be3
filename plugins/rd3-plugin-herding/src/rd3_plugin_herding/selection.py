"""Herding on embeddings."""

from __future__ import annotations

import torch


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of `k` distinct rows chosen greedily so the running mean of the selection tracks the
    mean mu: step j takes argmin over unselected x of ||(j + 1) mu - sum(selected) - x||."""
    if k > len(features):
        raise ValueError(f"cannot select {k} of {len(features)} points")
    mu = features.mean(0)
    total = torch.zeros_like(mu)
    taken = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    chosen = []
    for j in range(k):
        distance = torch.linalg.vector_norm(features - ((j + 1) * mu - total), dim=1)
        i = int(distance.masked_fill(taken, float("inf")).argmin())
        chosen.append(i)
        taken[i] = True
        total += features[i]
    return torch.tensor(chosen, dtype=torch.int64)
