"""k-center greedy on embeddings."""

from __future__ import annotations

import torch


def k_center_greedy(features: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `k` distinct rows: one drawn at random with `generator`, then repeatedly the row
    farthest (Euclidean) from its nearest chosen center."""
    if k > len(features):
        raise ValueError(f"cannot select {k} of {len(features)} points")
    first = int(torch.randint(len(features), (), generator=generator))
    nearest = torch.linalg.vector_norm(features - features[first], dim=1)
    nearest[first] = -1.0
    chosen = [first]
    for _ in range(k - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, torch.linalg.vector_norm(features - features[i], dim=1))
        nearest[chosen] = -1.0
    return torch.tensor(chosen, dtype=torch.int64)
