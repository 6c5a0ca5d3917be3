"""SRe2L on the smoke protocol (Fashion-MNIST, IPC 2, a BatchNorm teacher)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from rd3_plugin_sre2l import Config, resolve
from rd3_plugin_sre2l.bn import BNStatistics
from rd3_plugin_sre2l.recovery import bn_teacher, cosine_lr, layout
from torch import nn

from rd3_harness import UsageError
from rd3_harness.testing import synthesize_smoke

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_sre2l as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


@pytest.fixture(scope="module")
def recovered(smoke_workspace):
    return synthesize_smoke(smoke_workspace, "sre2l", iterations=30)


def test_output_is_valid_and_inside_pixel_range(recovered, smoke_workspace):
    s = recovered.synset
    assert s.images.shape == (20, 1, 28, 28)
    assert torch.equal(torch.bincount(s.labels, minlength=10), torch.full((10,), 2))
    pixels = smoke_workspace.test.denormalize(s.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert recovered.manifest["synthesis"]["wall_s"] > 0


def test_objective_falls_below_half(recovered):
    meta = recovered.synset.meta
    objective = meta["objective"]
    assert meta["objective_steps"][0] == 0 and meta["objective_steps"][-1] == 29
    assert objective[-1] < 0.5 * objective[0]
    assert meta["objective_bn"][-1] < meta["objective_bn"][0]
    r_bn = meta["recipe"]["r_bn"]
    assert math.isclose(objective[0], meta["objective_ce"][0] + r_bn * meta["objective_bn"][0], rel_tol=1e-4)


def test_teacher_classifies_recovered_images(recovered, smoke_workspace):
    teacher = smoke_workspace.teacher(smoke_workspace.protocol.teacher).model
    with torch.no_grad():
        predicted = teacher(recovered.synset.images).argmax(1)
    assert (predicted == recovered.synset.labels).float().mean() >= 0.9


def test_teacher_is_left_untouched(smoke_workspace):
    teacher = smoke_workspace.teacher(smoke_workspace.protocol.teacher).model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in teacher.parameters()]
    synthesize_smoke(smoke_workspace, "sre2l", iterations=2)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, teacher.parameters()))
    assert not teacher.training and not any(m._forward_hooks for m in teacher.modules())


def test_bn_term_matches_definition():
    torch.manual_seed(0)
    first, second = nn.BatchNorm2d(3).eval(), nn.BatchNorm2d(3).eval()
    first.running_mean.uniform_(-1, 1)
    first.running_var.uniform_(0.5, 2)
    x = torch.randn(8, 3, 5, 5)
    with BNStatistics(nn.Sequential(first, second), first_multiplier=10.0) as stats:
        first(x)  # the second layer is not reached: asking for the loss must fail
        with pytest.raises(RuntimeError, match="not reached"):
            stats.loss()
        y = first(x)
        second(y)
        terms = [
            (bn.running_var - z.var((0, 2, 3), unbiased=False)).norm() + (bn.running_mean - z.mean((0, 2, 3))).norm()
            for bn, z in ((first, x), (second, y))
        ]
        assert torch.allclose(stats.loss(), 10 * terms[0] + terms[1])
    assert not first._forward_hooks and not second._forward_hooks


def test_layout_is_one_batch_per_ipc_index():
    """SRe2L's recover_cifar.py optimizes, per IPC index, one image of each class (in chunks of
    batch_size classes): never two images of one class in a batch."""
    batches = layout(num_classes=10, ipc=10, batch_size=40)
    assert len(batches) == 10 and all(torch.equal(b, torch.arange(10)) for b in batches)
    wide = layout(num_classes=250, ipc=2, batch_size=100)
    assert [len(b) for b in wide] == [100, 100, 50] * 2 and torch.equal(wide[0], torch.arange(100))


def test_recovery_batches_hold_one_image_per_class(smoke_workspace):
    s = synthesize_smoke(smoke_workspace, "sre2l", iterations=2).synset  # 2 images per class
    assert s.meta["batches"] == 2
    assert torch.equal(s.labels.cpu(), torch.arange(10).repeat_interleave(2))


def test_presets_follow_resolution_and_overrides():
    assert resolve(Config(), (1, 28, 28)).preset == "cifar" and not resolve(Config(), (3, 32, 32)).crop
    tiny = resolve(Config(), (3, 64, 64))
    assert (tiny.preset, tiny.lr, tiny.r_bn, tiny.iterations, tiny.crop) == ("tiny", 0.1, 1.0, 4000, True)
    assert resolve(Config(), (3, 224, 224)).jitter == 32
    assert resolve(Config(preset="imagenet", lr=0.5), (1, 28, 28)).lr == 0.5
    assert cosine_lr(0.25, 0, 100) == 0.25 and math.isclose(cosine_lr(0.25, 50, 100), 0.125)


def test_teacher_without_batchnorm_is_refused():
    class Ctx:
        teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    with pytest.raises(UsageError, match="no BatchNorm"):
        bn_teacher(Ctx(), "sre2l")


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_sre2l
    from rd3_plugin_sre2l.recovery import recover

    assert rd3_plugin_sre2l.recover is recover  # the lazy name is the recovery's function
