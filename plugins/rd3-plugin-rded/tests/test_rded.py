"""RDED on the smoke protocol: real crops, selected by the observer, stitched into grids."""

import subprocess
import sys

import torch
import torch.nn.functional as F
from rd3_plugin_rded.crops import best_crops, cells, crop, pad_to

from rd3_harness import resized_crop_boxes
from rd3_harness.testing import synthesize_smoke

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_rded as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


def _ce(teacher, x, label):
    with torch.inference_mode():
        return F.cross_entropy(teacher(x), torch.full((len(x),), label), reduction="none")


def test_crops_are_exact_cuts_of_the_image():
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    boxes = torch.tensor([[0.0, 0.0, 28.0, 28.0], [5.0, 3.0, 14.0, 14.0]])
    out = crop(x, boxes, (14, 14))
    assert torch.equal(out[1], x[1, :, 5:19, 3:17])


def test_crops_equal_torchvision_resized_crop_with_antialiasing(smoke_workspace):
    """As RDED's RandomResizedCrop(antialias=True): crop, then resize; up- and downscaling, boxes at
    the image border and inside it, on real images. Nothing outside a box blends into its edges."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    images = smoke_workspace.train.get(torch.arange(40))
    fixed = [[0, 0, 28, 28], [0, 0, 8, 8], [20, 20, 8, 8], [6, 9, 11, 11], [2, 13, 15, 15], [9, 0, 19, 19]]
    boxes = torch.cat([torch.tensor(fixed, dtype=torch.float64)] * 2)
    boxes = torch.cat([boxes, resized_crop_boxes(28, 28, (0.08, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0))])
    for size in (28, 14, 9):
        out = crop(images, boxes, (size, size))
        for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
            ref = TF.resized_crop(
                images[i], top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True
            )
            assert torch.allclose(out[i], ref, atol=1e-5), (size, (top, left, h, w))


def test_kept_crops_have_lower_teacher_ce_than_rejected(smoke_workspace):
    ws = smoke_workspace
    teacher, real = ws.teacher(ws.protocol.teacher).model, ws.train
    label, n = 3, 8
    index = real.sample_indices(label, 40, torch.Generator().manual_seed(0))
    cand = best_crops(
        teacher, real, index, label, crops=3, factor=2, scale=(0.08, 1.0), generator=torch.Generator().manual_seed(1)
    )
    # recompute every candidate's score independently: crop, zero-pad to full size, teacher CE
    x = crop(real.get(cand.index), cand.boxes, (14, 14))
    ce = _ce(teacher, pad_to(x, 28), label)
    assert torch.allclose(ce, cand.ce, atol=1e-4)
    kept, rejected = cand.lowest(n)
    assert len(kept.ce) == n and len(rejected.ce) == len(index) - n
    assert kept.ce.max() <= rejected.ce.min()
    assert set(cand.index[ce.argsort()[:n]].tolist()) == set(kept.index.tolist())


def test_stitched_images_hold_factor_squared_crops(smoke_workspace):
    ws = smoke_workspace
    out = synthesize_smoke(ws, "rded", factor=2, candidates=30, crops=2)
    s, ipc = out.synset, ws.protocol.ipc
    assert s.images.shape == (10 * ipc, 1, 28, 28)
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(ipc))
    assert s.meta["factor"] == 2
    teacher, real = ws.teacher(ws.protocol.teacher).model, ws.train
    grid = cells(28, 2)
    level = 0.5 / 255 / ws.protocol.dataset.normalization.std[0]  # the set is stored as uint8 pixels
    for image, label, used in zip(s.images, s.labels.tolist(), s.meta["crops"]):
        assert len(used) == 4  # factor^2 crops, one per cell, each cut from its own real image
        for k, (index, top, left, side, ce) in enumerate(used):
            (y, h), (x, w) = grid[k // 2], grid[k % 2]
            source = real.get(torch.tensor([index]))
            box = torch.tensor([[top, left, side, side]], dtype=torch.float64)
            assert torch.allclose(image[:, y : y + h, x : x + w], crop(source, box, (h, w))[0], atol=level + 1e-5)
            assert abs(_ce(teacher, pad_to(crop(source, box, (14, 14)), 28), label).item() - ce) < 1e-4
            assert ce <= s.meta["rejected_ce_min"][label]
    # the best crops of a class go to cell 0 of its images, the worst kept ones to the last cell
    first = [used[0][4] for used in s.meta["crops"][:ipc]]
    last = [used[-1][4] for used in s.meta["crops"][:ipc]]
    assert max(first) <= min(last)


def test_factor_one_keeps_whole_crops(smoke_workspace):
    s = synthesize_smoke(smoke_workspace, "rded", candidates=20).synset
    assert s.meta["factor"] == 1
    assert all(len(used) == 1 for used in s.meta["crops"])
    assert torch.isfinite(s.images).all()


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_rded
    import rd3_plugin_rded.distillation

    assert rd3_plugin_rded.distill is rd3_plugin_rded.distillation.distill
