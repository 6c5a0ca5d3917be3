"""Data pipeline speed for image-folder datasets.

scan: the file index of an ImageFolder tree of N empty files (nested class folders, like an
      ImageNet train split), by
        (a) the old scan (kept below as the baseline: `Path.rglob` and two `Path.resolve()` per file),
        (b) the new walk, cold (one `os.scandir` per folder; the index written under a home folder),
        (c) the new index, warm (the cached index read back and its folders' times checked).
Run: `python benchmarks/data_pipeline.py [--files N] [--classes C] [--repeat R] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rd3_harness.data.index import index_folder
from rd3_harness.data.readers import IMAGE_SUFFIXES
from rd3_harness.errors import UsageError


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def old_scan_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """The scan before the index (rd3-harness 0.x, verbatim but for its name): the baseline, and
    the reference the new walk is tested against."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = found
    elif set(found) != set(classes):
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise UsageError(
            f"{folder}: class folders differ from the training split's "
            f"(missing: {missing[:5]}, unexpected: {extra[:5]})"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in sorted((folder / name).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if not _inside(path, folder):
                raise UsageError(f"{path}: leads outside {folder} (symlink?): refused")
            files.append(path)
            labels.append(index)
    return files, labels, list(classes)


def make_tree(root: Path, files: int, classes: int) -> Path:
    """`files` empty JPEG names in `classes` class folders, each split into 4 sub-folders with a
    nested one, folder times set in the past (as for a dataset unpacked earlier)."""
    per_class = files // classes
    for c in range(classes):
        for i in range(per_class):
            sub = root / f"n{c:08d}" / f"part{i % 4}" / ("deep" if i % 8 >= 4 else "")
            if i < 8:
                sub.mkdir(parents=True, exist_ok=True)
            (sub / f"n{c:08d}_{i}.JPEG").touch()
    past = time.time() - 3600
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))
    return root


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_scan(files: int = 100_000, classes: int = 100, repeat: int = 3) -> dict:
    """Seconds (median of `repeat`) to index `files` empty files: old scan, new cold, new warm."""
    work = Path(tempfile.mkdtemp(prefix="rd3-bench-scan-"))
    try:
        tree = make_tree(work / "train", files, classes)
        home = work / "home"
        old_s, (old_files, old_labels, _) = _timed(lambda: old_scan_image_folder(tree), repeat)

        def cold():
            shutil.rmtree(home, ignore_errors=True)
            return index_folder(tree, home=home)

        cold_s, index = _timed(cold, repeat)
        warm_s, warm = _timed(lambda: index_folder(tree, home=home), repeat)
        assert index.tree.paths() == old_files and index.tree.labels == old_labels, "the walk differs from the old scan"
        assert warm.digest == index.digest
        return {
            "files": len(old_files),
            "folders": len(index.tree.folders),
            "old_scan_s": old_s,
            "cold_s": cold_s,
            "warm_s": warm_s,
            "cold_speedup": old_s / cold_s,
            "warm_speedup": old_s / warm_s,
            "index_bytes": sum(p.stat().st_size for p in home.iterdir()),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"scan": bench_scan(args.files, args.classes, args.repeat)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    scan = result["scan"]
    print(f"file index of {scan['files']:,} empty files in {scan['folders']:,} folders (median of {args.repeat})")
    print(f"{'':24}{'seconds':>10}{'vs old':>10}")
    print(f"{'old scan (rglob+resolve)':24}{scan['old_scan_s']:>10.3f}{1.0:>9.1f}x")
    print(f"{'new walk, cold':24}{scan['cold_s']:>10.3f}{scan['cold_speedup']:>9.1f}x")
    print(f"{'new index, warm':24}{scan['warm_s']:>10.3f}{scan['warm_speedup']:>9.1f}x")
    print(f"index file: {scan['index_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
