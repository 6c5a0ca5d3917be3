"""Runtime settings (`Settings`): everything that must not change a result (folders, device,
workers, checkpointing), kept out of the protocol and recorded beside each run.

Precedence: explicit arguments (CLI options) over environment variables over defaults. No torch
at import.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rd3_harness.errors import UsageError

if TYPE_CHECKING:
    import torch


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _default_home() -> Path:
    return _env_path("RD3_HOME", Path("~/.cache/rd3").expanduser())


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=_default_home)
    """Cache for teachers and other reusable artifacts (RD3_HOME, default ~/.cache/rd3)."""
    data_root: Path | None = None
    """Where datasets are looked for (RD3_DATA_ROOT, default RD3_HOME/data)."""
    out: Path = field(default_factory=lambda: _env_path("RD3_OUT", Path("rd3-results")))
    """Output folder: results store and synthetic sets (--out or RD3_OUT, default ./rd3-results)."""
    device: str = field(default_factory=lambda: os.environ.get("RD3_DEVICE", "auto"))
    workers: int = field(default_factory=lambda: int(os.environ.get("RD3_WORKERS") or _cpu_count()))
    """DataLoader workers that decode folder and shard datasets (RD3_WORKERS, default the CPU count)."""
    data_cache: bool = field(default_factory=lambda: os.environ.get("RD3_DATA_CACHE", "on").lower() != "off")
    """Decode folder and shard splits once into the pixel cache under RD3_HOME/cache/pixels
    (RD3_DATA_CACHE=off: decode on every access, the uncached path)."""
    channels_last: bool | None = None
    """Memory format; None lets the engine choose (on for convolutional students)."""
    download: bool = False
    teacher_reuse: bool = True
    """Compute teacher logits once per batch for all students that share it."""
    checkpoint_every: int = field(default_factory=lambda: int(os.environ.get("RD3_CHECKPOINT_EVERY", "10")))
    """Save a training checkpoint every N epochs (RD3_CHECKPOINT_EVERY; 0 = never)."""
    resume: bool = True
    """Continue an unfinished run of the same command instead of starting a new one."""
    parallel: str = "jobs"
    """Under torchrun: `jobs` (each rank runs whole (student, seed) evaluations) or `data` (DDP)."""
    deterministic: bool = False
    """Deterministic algorithms, the cuBLAS workspace setting, cudnn.benchmark off."""
    benchmark_cudnn: bool = False
    """cuDNN autotuning (faster convolutions, not repeatable on CUDA)."""
    students: tuple[str, ...] | None = None
    """Evaluate only these students of the protocol (same hash); None: all."""

    def __post_init__(self) -> None:
        if self.data_root is None:
            object.__setattr__(self, "data_root", _env_path("RD3_DATA_ROOT", self.home / "data"))

    @property
    def pixel_cache(self) -> Path | None:
        """Folder of the decoded-pixel cache; None when RD3_DATA_CACHE=off."""
        return self.home / "cache" / "pixels" if self.data_cache else None

    @property
    def torch_device(self) -> torch.device:
        import torch

        name = self.device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(name)
        except RuntimeError:
            raise UsageError(f"--device {self.device!r}: use cpu, cuda, cuda:N or auto") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {self.device}: CUDA is not available on this machine")
        if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))  # one GPU per torchrun process
        return device

    def with_(self, **changes: Any) -> Settings:
        """A copy with the given non-None values changed."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_record(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
