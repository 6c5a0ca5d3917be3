"""Checks of a protocol against its dataset before any work starts: values the schema accepts but
that cannot run (or would run for years) are refused with the reason, doubtful ones warned about."""

from __future__ import annotations

import logging
import os

from rd3_harness.errors import UsageError
from rd3_harness.protocol.schema import Protocol, TrainedTeacher

log = logging.getLogger(__name__)
MAX_EPOCHS = 100_000
"""More epochs than any recipe uses (the RD³ standard trains 400, the longest legacy recipe 1,000)."""
MAX_UPSAMPLING = 8


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def check_protocol(
    protocol: Protocol, *, native_resolution: int, channels: int, class_sizes: list[int], memory_bytes: int
) -> None:
    """Refuse (UsageError naming the field) or warn about settings that would fail or never finish."""
    epochs = {"evaluation.epochs": protocol.evaluation.epochs}
    for name, spec in (
        ("teacher", protocol.teacher),
        *((f"synthesis_teachers[{i}]", t) for i, t in enumerate(protocol.synthesis_teachers)),
    ):
        if isinstance(spec, TrainedTeacher):
            epochs[f"{name}.recipe.epochs"] = spec.recipe.epochs
    for field, value in epochs.items():
        if value > MAX_EPOCHS:
            raise UsageError(f"{field}: {value:,} epochs would not finish; at most {MAX_EPOCHS:,} are accepted")
    smallest = min(class_sizes) if class_sizes else 0
    if protocol.ipc > smallest:
        c = class_sizes.index(smallest)
        raise UsageError(
            f"ipc: {protocol.ipc} images per class, but class {c} of {protocol.dataset.name} has only {smallest} "
            f"training images; lower ipc to at most {smallest}"
        )
    r = protocol.dataset.resolution
    synset_bytes = protocol.ipc * len(class_sizes) * channels * r * r * 4
    if memory_bytes and synset_bytes > memory_bytes // 2:
        raise UsageError(
            f"dataset.resolution: {r} px makes the synthetic set alone {synset_bytes / 2**30:.1f} GiB "
            f"(more than half of this machine's {memory_bytes / 2**30:.1f} GiB); lower the resolution or the ipc"
        )
    if r > MAX_UPSAMPLING * native_resolution:
        log.warning(
            "dataset.resolution: %d px is %.0fx the %d px of %s images (upsampled); every step costs %.0fx the pixels",
            r,
            r / native_resolution,
            native_resolution,
            protocol.dataset.name,
            (r / native_resolution) ** 2,
        )
