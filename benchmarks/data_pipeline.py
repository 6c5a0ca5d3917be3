"""Data pipeline speed for image-folder datasets.

scan: the file index of an ImageFolder tree of N empty files (nested class folders, like an
      ImageNet train split), by
        (a) the old scan (kept below as the baseline: `Path.rglob` and two `Path.resolve()` per file),
        (b) the new walk, cold (one `os.scandir` per folder; the index written under a home folder),
        (c) the new index, warm (the cached index read back and its folders' times checked).
decode: the decoded-pixel cache's build with 1 and 2 DataLoader workers against the old serial
      path (`FolderSplit.pixels`, a decode loop in the main process), a full pass over the built
      cache, and the teacher's full-image loader, on generated JPEG folders (96 px files, and
      500 x 375 px files resized to 224 px for the ImageNet-1K projection).
Run: `python benchmarks/data_pipeline.py [--only scan|decode] [--files N] [--classes C] [--repeat R]
     [--images-per-class K] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
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


def _imagenet_sized(root: Path, per_class: int) -> Path:
    """JPEGs of ImageNet's average size (500 x 375): Fashion-MNIST images upscaled, colourised."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from rd3_harness.data.readers import read_idx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from jpeg_folders import CLASSES, FMNIST, _colourise

    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz").long()
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(CLASSES):
        (root / "val" / name).mkdir(parents=True, exist_ok=True)
        picked = images[torch.nonzero(labels == c).flatten()[:per_class]]
        rgb = F.interpolate(_colourise(picked, 375, g).float(), size=(375, 500), mode="bilinear")
        for i, x in enumerate(rgb.round().clamp(0, 255).to(torch.uint8)):
            Image.fromarray(x.permute(1, 2, 0).numpy()).save(root / "val" / name / f"{i:05d}.jpg", quality=90)
    return root


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_decode(images_per_class: int = 100, resolution: int = 64) -> list[dict]:
    """Images/s of the pixel cache's build (1 and 2 DataLoader workers) against the old serial path
    (`FolderSplit.pixels`, a decode loop in the main process), of a full pass over the built cache,
    and of the teacher's full-image loader (random-resized crop of the file, flip, 2 workers), on
    generated JPEG folders: 96 px files (the tests' dataset) at `resolution`, and files of
    ImageNet's average size (500 x 375) at 224 px, which the ImageNet projection uses."""
    import torch

    from rd3_harness.data.cache import cached_pixels
    from rd3_harness.data.readers import scan_image_folder
    from rd3_harness.data.real import FolderSplit, RealData
    from rd3_harness.protocol.schema import Augmentation, RandomResizedCrop, TeacherRecipe
    from rd3_harness.seeding import generator
    from rd3_harness.teachers import full_image_batches

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from jpeg_folders import make_jpeg_folder

    work = Path(tempfile.mkdtemp(prefix="rd3-bench-decode-"))
    recipe = TeacherRecipe(
        epochs=1,
        batch_size=64,
        optimizer={"kind": "sgd", "lr": 0.1},
        augmentation=Augmentation(random_resized_crop=RandomResizedCrop(), horizontal_flip=True),
    )
    rows = []
    try:
        for files, size, root in (
            ("96 px", resolution, make_jpeg_folder(work / "small", 1, images_per_class)),
            ("500x375 px", 224, _imagenet_sized(work / "large", max(1, images_per_class // 4))),
        ):
            found, labels, _ = scan_image_folder(root / "val")
            split = FolderSplit(found, labels, 3)
            n = len(split)

            timed = {}
            start, cpu = time.perf_counter(), _cpu_s()
            split.pixels(torch.arange(n), size, test=True)
            timed["old serial decode loop (main process)"] = time.perf_counter() - start, _cpu_s() - cpu
            for workers in (1, 2):
                start, cpu = time.perf_counter(), _cpu_s()
                cached_pixels(split, size, test=True, folder=work / f"pixels-{size}-{workers}", workers=workers)
                name = f"cache build, {workers} worker{'s' if workers > 1 else ''}"
                timed[name] = time.perf_counter() - start, _cpu_s() - cpu
            real = RealData(
                split,
                num_classes=10,
                resolution=size,
                mean=(0.5,) * 3,
                std=(0.5,) * 3,
                test=True,
                workers=2,
                cache=work / f"pixels-{size}-2",
            )
            start, cpu = time.perf_counter(), _cpu_s()
            sum(len(x) for x, _ in real.batches(500))
            timed["full pass over the cache (memory-mapped)"] = time.perf_counter() - start, _cpu_s() - cpu
            start, cpu = time.perf_counter(), _cpu_s()
            sum(len(x) for x, _ in full_image_batches(real, recipe, 0, generator("bench", 0)))
            name = "teacher loader: crop of the full image + flip, 2 workers"
            timed[name] = time.perf_counter() - start, _cpu_s() - cpu
            rows += [
                {
                    "files": files,
                    "to": f"{size} px",
                    "images": n,
                    "path": path,
                    "images_s": n / seconds,
                    "images_per_cpu_s": n / cpu_s,
                }
                for path, (seconds, cpu_s) in timed.items()
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def imagenet_projection(rows: list[dict], cores: int = 32) -> dict:
    """Minutes to build ImageNet-1K's caches at 224 px on `cores` workers, from the cache build's
    images per CPU-second on 500 x 375 files with 1 worker (a shared machine's wall clock says
    little; decoding scales with workers while the disk keeps up), and the serial path's time for
    one pass over the validation split, also per CPU-second."""
    large = {r["path"]: r for r in rows if r["files"] == "500x375 px"}
    one = large["cache build, 1 worker"]["images_per_cpu_s"]
    serial = large["old serial decode loop (main process)"]["images_per_cpu_s"]
    return {
        "cores": cores,
        "per_worker_images_s": one,
        "train_min": 1_281_167 / (one * cores) / 60,
        "val_min": 50_000 / (one * cores) / 60,
        "serial_val_pass_min": 50_000 / serial / 60,
        "train_cache_gb": 1_281_167 * 3 * 224 * 224 / 1e9,
        "val_cache_gb": 50_000 * 3 * 224 * 224 / 1e9,
    }


def print_decode(rows: list[dict], projection: dict) -> None:
    print(f"{'files':>11} {'to':>7} {'images':>7}  {'path':58}{'images/s':>10}{'per CPU-s':>10}")
    for r in rows:
        print(
            f"{r['files']:>11} {r['to']:>7} {r['images']:>7}  {r['path']:58}"
            f"{r['images_s']:>10.0f}{r['images_per_cpu_s']:>10.0f}"
        )
    p = projection
    print(
        f"ImageNet-1K at 224 px on {p['cores']} workers ({p['per_worker_images_s']:.0f} images per CPU-second): "
        f"train cache {p['train_min']:.1f} min ({p['train_cache_gb']:.0f} GB), val {p['val_min']:.1f} min "
        f"({p['val_cache_gb']:.1f} GB); one serial pass over val: {p['serial_val_pass_min']:.0f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images-per-class", type=int, default=100, help="decode: validation JPEGs per class")
    parser.add_argument("--only", choices=("scan", "decode"), help="run one of the two benchmarks")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {}
    if args.only != "decode":
        result["scan"] = bench_scan(args.files, args.classes, args.repeat)
    if args.only != "scan":
        result["decode"] = bench_decode(args.images_per_class)
        result["imagenet_projection"] = imagenet_projection(result["decode"])
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "decode" in result:
        print_decode(result["decode"], result["imagenet_projection"])
    if "scan" not in result:
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
