"""The file index of ImageFolder trees, cached: one walk (`walk_image_folder`), saved under
RD3_HOME/index and reused while no folder of the tree changed. Under torchrun, rank 0 walks and
writes; the other ranks wait for it and read what it wrote.

A cached index is reused when every folder it walked still has the modification time it had:
adding, removing or renaming a file or folder anywhere below changes its parent folder's. A file
rewritten in place under the same name changes no folder; delete RD3_HOME/index to rescan."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import NamedTuple

from rd3_harness import distributed
from rd3_harness.data.readers import FolderTree, walk_image_folder
from rd3_harness.errors import UsageError
from rd3_harness.files import atomic_write

log = logging.getLogger(__name__)
FORMAT = "rd3-index/1"
RECENT_NS = 2_000_000_000
"""Folders changed this shortly before a walk are not trusted to show a later change (filesystems
with whole-second times, such as Lustre): such an index is used but not saved."""

_home: ContextVar[Path | None] = ContextVar("rd3_index_home", default=None)


class FolderIndex(NamedTuple):
    tree: FolderTree
    digest: str
    """sha256 of the classes and every file's path, label, size and modification time."""


@contextlib.contextmanager
def cached_under(folder: Path | None) -> Iterator[None]:
    """Index folders opened in this block are cached in `folder` (None: not cached)."""
    token = _home.set(folder)
    try:
        yield
    finally:
        _home.reset(token)


def index_file(home: Path, folder: Path, classes: list[str] | None) -> Path:
    key = json.dumps([os.path.realpath(folder), classes])
    return home / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _encode(index: FolderIndex, classes: list[str] | None) -> bytes:
    tree = {**vars(index.tree), "root": str(index.tree.root)}
    body = json.dumps({"classes_given": classes, "digest": index.digest, "tree": tree}).encode()
    head = json.dumps({"format": FORMAT, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
    return head + b"\n" + body


def _decode(data: bytes, folder: Path, classes: list[str] | None) -> FolderIndex | None:
    """The index in `data`, or None when it is torn, truncated or for another folder."""
    head, _, body = data.partition(b"\n")
    try:
        meta = json.loads(head)
        if meta.get("format") != FORMAT or meta.get("bytes") != len(body):
            return None
        if meta.get("sha256") != hashlib.sha256(body).hexdigest():
            return None
        doc = json.loads(body)
        tree = FolderTree(**{**doc["tree"], "root": folder})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if doc.get("classes_given") != classes or os.path.realpath(doc["tree"]["root"]) != os.path.realpath(folder):
        return None
    return FolderIndex(tree, doc["digest"])


def _unchanged(tree: FolderTree) -> bool:
    for rel, mtime in tree.folders.items():
        try:
            if os.stat(tree.root / rel).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def _read(path: Path, folder: Path, classes: list[str] | None) -> FolderIndex | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    index = _decode(data, folder, classes)
    if index is None:
        log.warning("%s: torn or unreadable file index of %s, discarded; rescanning", path, folder)
        path.unlink(missing_ok=True)
    return index


def _lookup_or_walk(home: Path, folder: Path, classes: list[str] | None) -> FolderIndex:
    path = index_file(home, folder, classes)
    cached = _read(path, folder, classes)
    if cached is not None and _unchanged(cached.tree):
        return cached
    started = time.time_ns()
    tree = walk_image_folder(folder, classes)
    index = FolderIndex(tree, tree.digest())
    if max(tree.folders.values()) < started - RECENT_NS:
        atomic_write(path, lambda p: p.write_bytes(_encode(index, classes)))
    return index


def index_folder(folder: Path, classes: list[str] | None = None, home: Path | None = None) -> FolderIndex:
    """The tree of `folder` (see `walk_image_folder`), from the index cached in `home` (default:
    the one `cached_under` set; none: walk every time) when no folder in it changed. Entries that
    are not images are warned about, every time."""
    home = home or _home.get()
    world = distributed.world()
    if home is None:
        tree = walk_image_folder(folder, classes)
        index = FolderIndex(tree, tree.digest())
    elif not world.distributed:
        index = _lookup_or_walk(home, folder, classes)
    elif world.main:
        try:
            index = _lookup_or_walk(home, folder, classes)
        except UsageError as exc:
            world.broadcast(("error", str(exc)))
            raise
        world.broadcast(("ok", index.digest))
    else:
        status, value = world.broadcast(None)
        if status == "error":
            raise UsageError(value)
        index = _read(index_file(home, folder, classes), folder, classes)
        if index is None or index.digest != value:  # RD3_HOME not shared with rank 0, or not saved
            index = _lookup_or_walk(home, folder, classes)
    index.tree.warn_skipped()
    return index
