"""Finding protocols by file path or registered name, and the checks that need the registries
(`Registries`, handed in by the caller)."""

from __future__ import annotations

import difflib
from pathlib import Path

from rd3_harness.errors import ProtocolError, UsageError
from rd3_harness.protocol.io import load_protocol
from rd3_harness.protocol.schema import Protocol
from rd3_harness.registry import Registries

DEFAULT_PROTOCOL = "cpu/fmnist-ipc10.v1"


def protocol_path(registries: Registries, ref: str | Path) -> Path:
    """A file path as given, or the file of a registered protocol name (`.yaml` optional)."""
    path = Path(ref)
    if path.is_file():
        return path
    known = registries.protocols
    name = str(ref).removesuffix(".yaml")
    if name in known:
        return known[name]
    close = difflib.get_close_matches(name, list(known), n=5, cutoff=0.4)
    hint = f" Did you mean: {', '.join(close)}?" if close else " See `rd3h protocol list`."
    raise UsageError(f"no protocol file or registered protocol named {str(ref)!r}.{hint}")


def semantic_problems(registries: Registries, protocol: Protocol) -> list[str]:
    """Problems the schema cannot see: unknown datasets or architectures, channel mismatches.
    Reads no data: an `imagefolder:PATH` or `shards:PATH` dataset is valid wherever its folder is."""
    from rd3_harness.data.datasets import IMAGEFOLDER, IMAGEFOLDER_CHANNELS, SHARDS, folder_spec
    from rd3_harness.models import is_known

    problems = []
    known = registries.datasets
    name = protocol.dataset.name
    prefix = folder_spec(name)
    channels = IMAGEFOLDER_CHANNELS if prefix else getattr(known.get(name), "channels", None)
    if prefix and not name.removeprefix(prefix).strip():
        problems.append(f"dataset.name: {name!r} names no folder; write {prefix}PATH")
    elif channels is None:
        problems.append(
            f"dataset.name: unknown dataset {name!r}; registered: {', '.join(sorted(known))} "
            f"(or {IMAGEFOLDER}PATH / {SHARDS}PATH for a folder of class folders / tar shards)"
        )
    elif len(protocol.dataset.normalization.mean) != channels:
        problems.append(
            f"dataset.normalization: {len(protocol.dataset.normalization.mean)} values for a {channels}-channel dataset"
        )
    archs = [("teacher.architecture", protocol.teacher.architecture)]
    archs += [
        (f"synthesis_teachers[{i}].architecture", t.architecture) for i, t in enumerate(protocol.synthesis_teachers)
    ]
    ev = protocol.evaluation
    archs += [(f"evaluation.students[{i}].architecture", s.architecture) for i, s in enumerate(ev.students)]
    labels_teachers = getattr(ev.labels, "teachers", ())
    archs += [(f"evaluation.labels.teachers[{i}].architecture", t.architecture) for i, t in enumerate(labels_teachers)]
    for where, arch in archs:
        if not is_known(registries.models, arch):
            problems.append(f"{where}: unknown architecture {arch!r} (see `rd3h models list`)")
    return problems


def resolve_protocol(
    registries: Registries, ref: str | Path | None = None, *, check: bool = True
) -> tuple[Protocol, Path]:
    """Load, validate and (by default) check a protocol given by path or name."""
    path = protocol_path(registries, ref or DEFAULT_PROTOCOL)
    protocol = load_protocol(path)
    if check:
        problems = semantic_problems(registries, protocol)
        if problems:
            raise ProtocolError(str(path), problems)
    return protocol, path
