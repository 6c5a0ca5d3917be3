"""Named numerics: what the protocol's precision means on each device, and the runtime
determinism switches (`--deterministic`, `--benchmark-cudnn`)."""

from __future__ import annotations

import os

import torch

from rd3_harness.errors import UsageError


def set_precision(precision: str) -> None:
    """`fp32`: strict float32 (no TF32 in matmuls or cuDNN convolutions); `tf32`: TF32 in both;
    `bf16`: bfloat16 autocast over strict float32. On the CPU `tf32` is float32."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def set_determinism(deterministic: bool, benchmark_cudnn: bool) -> None:
    """Deterministic algorithms (and the cuBLAS workspace they need) or cuDNN autotuning; neither
    by default."""
    if deterministic and benchmark_cudnn:
        raise UsageError("--deterministic and --benchmark-cudnn exclude each other: choose one")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = benchmark_cudnn
