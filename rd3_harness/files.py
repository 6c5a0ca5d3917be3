"""File helpers shared by the caches and stores: checksums and durable atomic writes."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) contents and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _temporary_prefix(path: Path) -> str:
    """`.<name>.<host>.`: the start of this host's temporaries of `path` (the writer's pid follows)."""
    return f".{path.name}.{socket.gethostname()}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files that killed writers of `path` on this host left behind
    (`.<name>.<host>.<pid>.tmp` with no such process); other hosts' files are left alone."""
    prefix = _temporary_prefix(path)
    for tmp in path.parent.glob(f"{prefix}*.tmp"):
        pid = tmp.name[len(prefix) : -len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file in the same folder, fsync it, rename, fsync the folder:
    readers never see half a file, and a power cut leaves the old file or the whole new one. The
    temporaries of writers killed before their rename are removed on the next write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}.tmp")
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
