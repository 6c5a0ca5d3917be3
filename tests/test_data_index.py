"""Image-folder datasets: the `imagefolder:PATH` spec, the file index and its cache, and the
edge cases of a folder tree (non-image files, empty or misnamed class folders), through the CLI."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import data_pipeline
import pytest
import torch
import yaml
from PIL import Image
from torchrun import launcher
from typer.testing import CliRunner

from rd3_harness.cli import app

runner = CliRunner()
SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def make_image_folder(root: Path, per_class: tuple[int, int] = (8, 4), classes=("cat", "dog", "fox")) -> Path:
    """train/ and val/ class folders of small noisy images, one dominant colour per class, half
    PNG and half JPEG, some of them in a nested sub-folder."""
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class, strict=True):
        for c, name in enumerate(classes):
            for i in range(n):
                folder = root / split / name / ("extra" if i % 3 == 2 else "")
                folder.mkdir(parents=True, exist_ok=True)
                base = torch.tensor(COLOURS[c % len(COLOURS)], dtype=torch.float32).view(3, 1, 1)
                pixels = (base + 40 * torch.randn(3, 20, 24, generator=g)).clamp(0, 255).to(torch.uint8)
                img = Image.fromarray(pixels.permute(1, 2, 0).numpy())
                img.save(folder / f"{name}_{i:02d}.{'png' if i % 2 else 'jpg'}")
    return root


def folder_protocol(tmp_path: Path, dataset: str, **evaluation) -> Path:
    """The smoke protocol on an image folder at 16 px (teacher on the few images there are)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["name"] = "test/imagefolder"
    data["dataset"] = {
        "name": dataset,
        "resolution": 16,
        "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    }
    for teacher in (data["teacher"], *data["synthesis_teachers"]):
        teacher["recipe"]["images_per_class"] = 8
    data["evaluation"].update(evaluation)
    path = tmp_path / "imagefolder.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """CLI environment: private home, data root and output folder, CPU."""
    for name, sub in (("RD3_HOME", "home"), ("RD3_DATA_ROOT", "data"), ("RD3_OUT", "out")):
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    monkeypatch.setenv("RD3_WORKERS", "0")
    return tmp_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def refused(result, message: str) -> None:
    """The command stopped on bad input: exit 2, the message, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output, result.output


def test_imagefolder_dataset_runs_end_to_end_without_a_plugin(env):
    root = make_image_folder(env / "data" / "tiny")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    protocol = folder_protocol(env, "imagefolder:tiny", epochs=10, labels={"kind": "hard"}, loss={"kind": "ce"})
    valid = invoke("protocol", "validate", "--json", str(protocol))
    assert valid.exit_code == 0, valid.output
    assert json.loads(valid.stdout)[0]["notes"] == []
    result = invoke("run", "--plugin", "random", "-p", str(protocol), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    (record,) = doc["records"]
    assert doc["run"]["protocol"]["dataset"]["name"] == "imagefolder:tiny"
    assert doc["run"]["synset"]["count"] == 3 * 2
    assert record["top1"] > 0.9  # the classes differ by colour: far above chance (1/3)
    stderr = " ".join(result.stderr.split())
    assert stderr.count("non-image entry skipped") == 1 and "are read): cat/notes.txt" in stderr


def test_imagefolder_path_may_be_absolute(env):
    from rd3_harness.data.datasets import open_dataset
    from rd3_harness.settings import Settings

    root = make_image_folder(env / "elsewhere" / "set", per_class=(3, 2))
    info, train, test = open_dataset({}, f"imagefolder:{root}", Settings(), resolution=16)
    assert (info.num_classes, info.channels, info.resolution) == (3, 3, 16)
    assert len(train) == 9 and len(test) == 6
    assert train.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert train.pixels(torch.tensor([0, 8]), 16).shape == (2, 3, 16, 16)


def test_missing_imagefolder_is_a_note_for_validate_and_an_error_for_run(env):
    protocol = folder_protocol(env, "imagefolder:not-there")
    valid = invoke("protocol", "validate", str(protocol))
    assert valid.exit_code == 0, valid.output
    assert "note" in valid.stderr and "not-there not found (under the data root" in valid.stderr
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "not-there not found")


def test_imagefolder_without_a_name_or_with_grey_normalization_is_invalid(env):
    for name, mean, expected in (
        ("imagefolder:", [0.5, 0.5, 0.5], "names no folder"),
        ("imagefolder:x", [0.5], "1 values for a 3-channel dataset"),
    ):
        path = folder_protocol(env, name)
        data = yaml.safe_load(path.read_text())
        data["dataset"]["normalization"] = {"mean": mean, "std": [0.25] * len(mean)}
        path.write_text(yaml.safe_dump(data))
        refused(invoke("protocol", "validate", str(path)), expected)


# ---------------------------------------------------------------- the file index


def backdate(root: Path) -> None:
    """Folder times an hour ago, as for a dataset unpacked earlier (a just-changed folder's index
    is used but not saved)."""
    past = time.time() - 3600
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


def awkward_tree(root: Path) -> Path:
    """Names whose path order differs from their text order, upper-case and hidden images, deep
    folders, a link inside the tree, a link to a folder, and files that are not images."""
    for rel in (
        "b/a.jpg",
        "b/a/b.jpg",
        "b/a-b.PNG",
        "b/a/c/d/e.jpeg",
        "b/.hidden.jpg",
        "b/z/x.webp",
        "a/10.jpg",
        "a/9.jpg",
        "a/sub dir/ü.bmp",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "a" / "link.jpg").symlink_to(root / "b" / "a.jpg")
    (root / "b" / "linked-folder").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "notes.txt").write_text("not an image")
    return root


def test_walk_gives_the_old_scans_files_labels_and_order(tmp_path, caplog):
    from rd3_harness.data.readers import scan_image_folder

    old_scan = data_pipeline.old_scan_image_folder
    tree = awkward_tree(tmp_path / "t")
    with caplog.at_level(logging.WARNING):
        new = scan_image_folder(tree)
    old = old_scan(tree)
    assert new == old
    assert [p.relative_to(tree).as_posix() for p in new[0]][:3] == ["a/10.jpg", "a/9.jpg", "a/link.jpg"]
    assert new[0][-1].relative_to(tree).as_posix() == "b/z/x.webp"
    (line,) = [r.getMessage() for r in caplog.records if "non-image" in r.getMessage()]
    assert "2 non-image entries skipped" in line and "a/notes.txt" in line and "b/linked-folder" in line
    assert new[0] == old_scan(tree, ["a", "b"])[0] and scan_image_folder(tree, ["b", "a"]) == old_scan(tree, ["b", "a"])


def test_links_leaving_the_root_are_refused_for_files_and_class_folders(tmp_path):
    from rd3_harness.data.readers import scan_image_folder
    from rd3_harness.errors import UsageError

    outside = tmp_path / "outside"
    (outside / "k").mkdir(parents=True)
    (outside / "k" / "x.png").write_bytes(b"x")
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "ok.png").write_bytes(b"x")
    (root / "b").symlink_to(outside / "k", target_is_directory=True)
    with pytest.raises(UsageError, match="leads outside"):
        scan_image_folder(root)
    (root / "b").unlink()
    (root / "b").mkdir()
    (root / "b" / "x.png").symlink_to(outside / "k" / "x.png")
    with pytest.raises(UsageError, match="leads outside"):
        scan_image_folder(root)


def test_index_is_cached_and_noticed_changing_anywhere_below(tmp_path, monkeypatch):
    from rd3_harness.data import index as index_module

    walks = []
    walk = index_module.walk_image_folder
    monkeypatch.setattr(index_module, "walk_image_folder", lambda *a: walks.append(1) or walk(*a))
    root, home = awkward_tree(tmp_path / "t"), tmp_path / "home"
    backdate(root)
    first = index_module.index_folder(root, home=home)
    again = index_module.index_folder(root, home=home)
    assert len(walks) == 1 and again.tree == first.tree and again.digest == first.digest
    deep = root / "b" / "a" / "c" / "d"
    changes = [  # (change, a file it adds or None, a file it takes away or None)
        (lambda: (deep / "new.jpg").write_bytes(b"x"), "b/a/c/d/new.jpg", None),  # four folders down
        (lambda: (deep / "new.jpg").rename(deep / "renamed.jpg"), "b/a/c/d/renamed.jpg", "b/a/c/d/new.jpg"),
        (lambda: (deep / "renamed.jpg").unlink(), None, "b/a/c/d/renamed.jpg"),
        (lambda: (root / "b" / "a" / "c").rename(root / "b" / "a" / "c2"), "b/a/c2/d/e.jpeg", "b/a/c/d/e.jpeg"),
        (lambda: (root / "c").mkdir() or (root / "c" / "x.png").write_bytes(b"x"), "c/x.png", None),  # a class
    ]
    for n, (change, added, removed) in enumerate(changes, start=2):
        change()
        seen = index_module.index_folder(root, home=home)
        assert len(walks) == n, f"change {n - 1} was not noticed"
        assert seen.tree == walk(root)
        assert (added is None or added in seen.tree.files) and removed not in seen.tree.files
        backdate(root)
    index_module.index_folder(root, home=home)  # folders unchanged since: from the index
    index_module.index_folder(root, home=home)
    assert len(walks) == len(changes) + 2


def test_a_torn_index_is_discarded_with_one_warning(tmp_path, caplog):
    from rd3_harness.data.index import index_file, index_folder

    root, home = awkward_tree(tmp_path / "t"), tmp_path / "home"
    backdate(root)
    first = index_folder(root, home=home)
    path = index_file(home, root, None)
    path.write_bytes(path.read_bytes()[:-20])
    with caplog.at_level(logging.WARNING):
        again = index_folder(root, home=home)
    torn = [r.getMessage() for r in caplog.records if "torn or unreadable" in r.getMessage()]
    assert len(torn) == 1 and str(path) in torn[0]
    assert again.tree == first.tree and index_folder(root, home=home).digest == first.digest


@pytest.mark.parametrize("rank0_fails", [False, True])
def test_a_rank_other_than_0_reads_what_rank_0_wrote(tmp_path, monkeypatch, rank0_fails):
    from rd3_harness import distributed
    from rd3_harness.data import index as index_module
    from rd3_harness.errors import UsageError

    root, home = awkward_tree(tmp_path / "t"), tmp_path / "home"
    backdate(root)
    sent = []
    monkeypatch.setattr(distributed, "world", lambda: FakeWorld(0, sent))
    if rank0_fails:
        (root / "empty").mkdir()
        with pytest.raises(UsageError, match="holds no images"):
            index_module.index_folder(root, home=home)
    else:
        written = index_module.index_folder(root, home=home)
    walks = []
    walk = index_module.walk_image_folder
    monkeypatch.setattr(index_module, "walk_image_folder", lambda *a: walks.append(1) or walk(*a))
    monkeypatch.setattr(distributed, "world", lambda: FakeWorld(1, sent))
    if rank0_fails:
        with pytest.raises(UsageError, match="holds no images"):
            index_module.index_folder(root, home=home)
    else:
        assert index_module.index_folder(root, home=home) == written
    assert walks == []


class FakeWorld:
    """Rank `rank` of two; rank 0's broadcasts are kept in `sent` for the other rank to receive."""

    distributed = True

    def __init__(self, rank: int, sent: list):
        self.rank, self.sent, self.main = rank, sent, rank == 0

    def broadcast(self, value):
        if self.main:
            self.sent.append(value)
            return value
        return self.sent.pop(0)


@pytest.mark.slow
def test_one_rank_walks_under_torchrun(tmp_path):
    root = awkward_tree(tmp_path / "t")
    backdate(root)
    script = tmp_path / "ranks.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys, torch
            from pathlib import Path
            from rd3_harness import distributed
            from rd3_harness.data import index
            world = distributed.init_from_env(torch.device("cpu"))
            walks = []
            walk = index.walk_image_folder
            index.walk_image_folder = lambda *a: walks.append(1) or walk(*a)
            found = index.index_folder(Path({str(root)!r}), home=Path({str(tmp_path / "home")!r}))
            print(json.dumps({{"rank": world.rank, "walks": len(walks), "digest": found.digest}}))
            distributed.shutdown()
            """
        )
    )
    cmd = [sys.executable, *launcher(2)]
    done = subprocess.run(
        [*cmd, str(script)], capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = sorted(
        (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"]
    )
    assert [r["walks"] for r in ranks] == [1, 0] and ranks[0]["digest"] == ranks[1]["digest"]


# ---------------------------------------------------------------- bad folders, through the CLI


def _rename(folder: Path, names: dict[str, str]) -> None:
    for old, new in names.items():
        (folder / old).rename(folder / new)


def test_an_empty_class_folder_is_refused_naming_it(env):
    root = make_image_folder(env / "data" / "tiny", per_class=(3, 2))
    for split in ("train", "val"):
        (root / split / "emu").mkdir()
    (root / "val" / "emu" / "e.png").write_bytes((root / "val" / "cat" / "cat_01.png").read_bytes())
    protocol = folder_protocol(env, "imagefolder:tiny")
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "class folder 'emu' holds no images")


def test_val_class_folders_that_are_not_trains_are_refused(env):
    root = make_image_folder(env / "data" / "tiny", per_class=(3, 2))
    _rename(root / "val", {"fox": "wolf"})
    protocol = folder_protocol(env, "imagefolder:tiny")
    note = invoke("protocol", "validate", str(protocol))
    assert note.exit_code == 0 and "class folders differ" in note.stderr, note.output
    refused(
        invoke("evaluate", str(root / "train"), "-p", str(protocol)),
        "class folders differ from the training split's (missing: ['fox'], unexpected: ['wolf'])",
    )


def test_class_folders_whose_text_and_number_orders_differ_are_refused(env):
    root = make_image_folder(env / "data" / "tiny", per_class=(3, 2), classes=("class1", "class2", "class10"))
    protocol = folder_protocol(env, "imagefolder:tiny")
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "sort differently as text and by their numbers")
    _rename(root / "train", {"class1": "class01", "class2": "class02"})
    _rename(root / "val", {"class1": "class01", "class2": "class02"})
    synset = make_image_folder(env / "made-elsewhere", per_class=(2, 0), classes=("c1", "c2", "c10")) / "train"
    refused(
        invoke("evaluate", str(synset), "-p", str(protocol)),
        "'c10' comes before 'c2' as text); zero-pad the numbers",
    )


def test_numbered_class_folders_are_classes_in_numeric_order(env):
    from rd3_harness.data.datasets import open_dataset
    from rd3_harness.settings import Settings

    names = [str(i) for i in range(11)]
    make_image_folder(env / "data" / "numbered", per_class=(1, 1), classes=names)
    info, train, _ = open_dataset({}, "imagefolder:numbered", Settings(), resolution=8)
    assert info.num_classes == 11
    assert [f.parent.name for f in train.files] == names and train.labels.tolist() == list(range(11))


# ---------------------------------------------------------------- webdataset tar shards


def write_shards(folder: Path, images: Path, split: str, per_shard: int) -> list[Path]:
    """The images of a class-folder split as webdataset shards (key.<ext> + key.cls + key.json)."""
    from rd3_harness.data.readers import scan_image_folder

    files, labels, _ = scan_image_folder(images)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(files), per_shard):
        shard = folder / f"{split}-{len(shards):04d}.tar"
        with tarfile.open(shard, "w") as tar:
            for i in range(start, min(start + per_shard, len(files))):
                key = f"sample{i:06d}"
                tar.add(files[i], arcname=f"{key}{files[i].suffix}")
                for ext, text in (("cls", str(labels[i])), ("json", "{}")):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(text)
                    tar.addfile(info, io.BytesIO(text.encode()))
        shards.append(shard)
    return shards


def test_shards_are_read_in_place_like_the_folder_they_came_from(env):
    from rd3_harness.data.datasets import open_dataset
    from rd3_harness.data.readers import decode_image, scan_image_folder
    from rd3_harness.errors import UsageError
    from rd3_harness.settings import Settings

    images = make_image_folder(env / "images", per_class=(4, 2))
    for split, per_shard in (("train", 5), ("val", 100)):
        write_shards(env / "data" / "wds", images / split, "validation" if split == "val" else split, per_shard)
    settings = Settings()
    info, train, test = open_dataset({}, "shards:wds", settings, resolution=16)
    files, labels, _ = scan_image_folder(images / "train")
    assert (info.num_classes, len(train), len(test)) == (3, 12, 6) and train.labels.tolist() == labels
    assert len(train.index.shards) == 3  # 12 samples, 5 per shard
    for i in (0, 6, 11):
        assert torch.equal(train.decode(i), decode_image(files[i], 3))
    assert train.pixels(torch.tensor([0, 11]), 16, test=True).shape == (2, 3, 16, 16)
    part = train.subset(torch.tensor([11, 0]))
    assert part.labels.tolist() == [labels[11], labels[0]] and torch.equal(part.decode(0), train.decode(11))
    assert part.cache_key not in (None, train.cache_key)
    key = train.cache_key
    assert open_dataset({}, "shards:wds", settings, resolution=16)[1].cache_key == key
    shard = env / "data" / "wds" / "train-0001.tar"
    os.utime(shard, (time.time() + 5, time.time() + 5))
    assert open_dataset({}, "shards:wds", settings, resolution=16)[1].cache_key != key
    with tarfile.open(shard, "a") as tar:  # a sample without its label
        tar.add(files[0], arcname="orphan.jpg")
    with pytest.raises(UsageError, match="sample 'orphan' has no label"):
        open_dataset({}, "shards:wds", settings, resolution=16)


def test_missing_or_compressed_shards_are_refused_through_the_cli(env):
    protocol = folder_protocol(env, "shards:wds")
    (env / "data" / "wds").mkdir(parents=True)
    note = invoke("protocol", "validate", str(protocol))
    assert note.exit_code == 0 and "has no train shards (*train*.tar)" in " ".join(note.stderr.split()), note.output
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "has no train shards")
    for split in ("train", "val"):
        with tarfile.open(env / "data" / "wds" / f"{split}-0000.tar", "w:gz") as tar:
            tar.add(SMOKE, arcname="x.cls")
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "compressed shards cannot be read in place")


def test_an_image_linked_from_outside_the_folder_is_refused_through_the_cli(env):
    root = make_image_folder(env / "data" / "tiny", per_class=(3, 2))
    outside = make_image_folder(env / "outside", per_class=(1, 0)) / "train" / "cat" / "cat_00.jpg"
    (root / "train" / "dog" / "borrowed.jpg").symlink_to(outside)
    protocol = folder_protocol(env, "imagefolder:tiny")
    refused(invoke("run", "--plugin", "random", "-p", str(protocol)), "leads outside")


def test_pixel_cache_keys_follow_the_index(tmp_path, monkeypatch):
    """The pixel cache is keyed by the file index: another file below a class changes the key,
    so no stale pixels are served; an unchanged folder keeps it."""
    from rd3_harness.data.datasets import load_image_folders

    monkeypatch.setenv("RD3_HOME", str(tmp_path / "home"))
    root = make_image_folder(tmp_path / "data")
    backdate(root)
    train, test = load_image_folders(root)
    assert train.cache_key != test.cache_key
    assert load_image_folders(root)[0].cache_key == train.cache_key
    Image.new("RGB", (20, 24), (9, 9, 9)).save(root / "train" / "dog" / "new.png")
    changed, same_test = load_image_folders(root)
    assert changed.cache_key != train.cache_key
    assert same_test.cache_key == test.cache_key
