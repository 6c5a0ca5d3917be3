"""G-VBSM on the smoke protocol: real statistics, multi-teacher recovery, and the protocol check."""

import copy
import subprocess
import sys

import pytest
import rd3_plugin_gvbsm.recovery
import rd3_plugin_gvbsm.statistics
import torch
from rd3_plugin_gvbsm.statistics import hooked_layers, real_stats

from rd3_harness import UsageError
from rd3_harness.testing import Protocol, synthesize_smoke

FAST = dict(iterations=60, lr=0.25, jitter=4, stats_images=50)

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_gvbsm as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model().recipe(28)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


def test_objective_falls_below_half(smoke_workspace):
    out = synthesize_smoke(smoke_workspace, "gvbsm", **FAST)
    s, meta = out.synset, out.synset.meta
    assert s.images.shape == (20, 1, 28, 28) and torch.isfinite(s.images).all()
    assert meta["teachers"] == 2 and len(meta["objective"]) == 60
    first, last = sum(meta["objective"][:2]) / 2, sum(meta["objective"][-2:]) / 2  # one step per teacher
    assert last < 0.5 * first, meta["objective"]
    assert meta["ce"][-1] < meta["ce"][0]


def test_real_statistics_match_the_data_and_are_cached(smoke_workspace, tmp_path, monkeypatch):
    ws = smoke_workspace
    teacher, real = ws.teacher(ws.protocol.synthesis_teachers[1]).model, ws.train
    bn = next(i for i, (_, m) in enumerate(hooked_layers(teacher)) if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = hooked_layers(teacher)[bn][1].running_mean.clone()
    kwargs = dict(num_classes=10, patch=4, images_per_class=30, cache_dir=tmp_path, dataset="fashion-mnist")
    stats = real_stats(teacher, real, **kwargs)
    # the first convolution sees the images themselves: its targets are plain pixel statistics
    first = torch.cat([real.class_indices(c)[:30] for c in range(10)])
    x = real.get(first)
    mean, var, patch_mean, _ = stats.target(0)
    assert torch.allclose(mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(var, x.var((0, 2, 3), unbiased=False), atol=1e-4)
    assert patch_mean.shape == (49,)  # 28 x 28 in 4 x 4 patches
    assert torch.allclose(patch_mean.mean(), mean, atol=1e-5)  # equal patches average to the pixel mean
    shirt = x[:30]
    class_mean, class_var = stats.class_target(0, torch.tensor([0, 0]))[:2]
    assert torch.allclose(class_mean, shirt.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(class_var, shirt.var((2, 3), unbiased=False).mean(0), atol=1e-4)
    assert torch.equal(stats.target(bn)[0], running_mean)
    # cached by the teacher's weights: the same teacher loads the file, other weights miss it
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    with monkeypatch.context() as m:
        m.setattr(rd3_plugin_gvbsm.statistics, "compute_real_stats", lambda *a, **k: pytest.fail("cache not used"))
        again = real_stats(teacher, real, **kwargs)
    assert all(torch.equal(again.tensors[k], v) for k, v in stats.tensors.items())
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        other.features[0].weight.mul_(2)
    real_stats(other, real, **kwargs)
    assert len(list(tmp_path.iterdir())) == 2


def test_protocol_without_synthesis_teachers_is_refused(smoke_workspace):
    ws = copy.copy(smoke_workspace)
    data = ws.protocol.model_dump(mode="json")
    data["synthesis_teachers"] = []
    ws.protocol = Protocol.model_validate(data)
    with pytest.raises(UsageError, match="synthesis_teachers"):
        synthesize_smoke(ws, "gvbsm", iterations=1)


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_gvbsm
    import rd3_plugin_gvbsm.recovery

    # the lazy names are the recovery's functions, also after the submodule was imported directly
    assert rd3_plugin_gvbsm.recover is rd3_plugin_gvbsm.recovery.recover
    assert rd3_plugin_gvbsm.synthesis_teachers is rd3_plugin_gvbsm.recovery.synthesis_teachers


def test_crop_pads_with_black_pixels(smoke_workspace, monkeypatch):
    """The teachers were trained with black padding (Fashion-MNIST's background): the recovery's
    pad crop must pad with black in pixel space, not with 0 in model space (grey)."""
    made = []

    class Recording(rd3_plugin_gvbsm.recovery.Augmenter):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(rd3_plugin_gvbsm.recovery, "Augmenter", Recording)
    synthesize_smoke(smoke_workspace, "gvbsm", iterations=1, stats_images=10)
    (augment,) = made
    real = smoke_workspace.train
    white = real.normalize(torch.ones(64, 1, 28, 28))
    pixels = real.denormalize(augment.apply(white, augment.draw(64, torch.Generator().manual_seed(0))))
    padded = pixels < 0.5  # every image pixel is white: anything else came from the padding
    assert padded.any()
    assert torch.allclose(pixels[padded], torch.zeros(()), atol=1e-5), pixels[padded].unique()


def test_cpu_preset_runs_the_cifar_scripts_budget():
    """Branch_CIFAR_10/recover/recover.sh: 4000 iterations at lr 0.05; 28 px runs the same budget."""
    from rd3_plugin_gvbsm import Config

    cpu, cifar = Config().recipe(28), Config().recipe(32)
    assert (cpu.iterations, cpu.lr, cpu.batch_size) == (cifar.iterations, cifar.lr, cifar.batch_size)
