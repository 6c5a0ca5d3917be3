"""Explicit seeds: every random stream is derived from named parts, never from global state."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the parts (stable across processes and platforms)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from the parts."""
    return torch.Generator().manual_seed(derive_seed(*parts))
