"""`rd3h sweep` with submitit's local executor: 2 plugins x 2 tiny protocols (a generated
10-class image folder, so each task costs little more than its process start) land 4 complete
runs in one store; a rerun submits nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from rd3_harness.plugins import get_plugins
from rd3_harness.results.store import Store
from rd3_harness.settings import Settings
from rd3_harness.workspace import open_workspace

SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"


def _image_folder(root: Path) -> None:
    """An `imagenette`-shaped ImageFolder: 10 classes of 16 px images, one colour per class plus
    noise; 12 training and 4 test images per class."""
    g = torch.Generator().manual_seed(0)
    colours = torch.rand(10, 1, 1, 3, generator=g)
    for split, n in (("train", 12), ("val", 4)):
        for c in range(10):
            folder = root / "imagenette2" / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = 0.7 * colours[c] + 0.3 * torch.rand(16, 16, 3, generator=g)
                Image.fromarray((255 * pixels).byte().numpy()).save(folder / f"{i}.png")


def _tiny_protocol(path: Path, epochs: int) -> str:
    data = yaml.safe_load(SMOKE.read_text())
    data["dataset"] = {"name": "imagenette", "resolution": 16, "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    for teacher in (data["teacher"], *data["synthesis_teachers"]):
        teacher["recipe"]["images_per_class"] = 12
    data["evaluation"]["epochs"] = epochs
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_sweep_lands_every_run_once_with_the_local_executor(tmp_path):
    pytest.importorskip("submitit")
    settings = Settings(home=tmp_path / "home", data_root=tmp_path / "data", device="cpu", workers=0)
    _image_folder(settings.data_root)
    protocols = [_tiny_protocol(tmp_path / f"p{epochs}.yaml", epochs) for epochs in (2, 3)]
    open_workspace(get_plugins().registries, protocols[0], settings).label_teachers()  # tasks share the cache
    env = {
        **os.environ,
        "RD3_HOME": str(settings.home),
        "RD3_DATA_ROOT": str(settings.data_root),
        "RD3_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rd3_harness", "sweep", "--plugins", "random,herding"]
    cmd += [arg for p in protocols for arg in ("-p", p)] + ["--executor", "local", "-o", str(out), "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["submitted"] == 4
    store = Store.in_folder(out)
    runs = store.runs()
    assert len(runs) == 4 and {r.status for r in runs} == {"complete"}
    assert len({(r.plugin.name, r.protocol_hash) for r in runs}) == 4  # every cell of the grid once
    assert len({r.protocol_hash for r in runs}) == 2 and {r.plugin.name for r in runs} == {"random", "herding"}
    assert all(len(store.records(r.run_id)) == 1 for r in runs)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"tasks": 4, "skipped": 4, "submitted": 0, "job_ids": []}
    assert len(store.runs()) == 4
