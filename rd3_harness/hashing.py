"""Content hashes: canonical JSON and its sha256 (protocols, configs, cache keys) and the digest of
a model's weights. No torch at import."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def canonical_json(data: Any) -> str:
    """Sorted keys, no whitespace, UTF-8: the form every hash in rd3-harness is taken of."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def short_hash(digest: str) -> str:
    return digest[:12]


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer of a model, in order."""
    import torch

    h = hashlib.sha256()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        h.update(name.encode())
        if not t.is_meta:  # meta tensors (the plugin kit's device probe) hold no values
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
