"""LPLD's recovery on the smoke protocol: class-wise BatchNorm statistics."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from rd3_plugin_lpld import ClassBNStatistics, class_layout
from rd3_plugin_lpld.statistics import compute_class_statistics
from rd3_plugin_sre2l.bn import batchnorm_layers
from torch import nn

from rd3_harness.testing import progress, synthesize_smoke

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_lpld as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


@pytest.fixture(scope="module")
def recovered(smoke_workspace):
    return synthesize_smoke(smoke_workspace, "lpld", iterations=30, stats_pool=100)


def test_output_is_valid_and_objective_falls(recovered, smoke_workspace):
    s = recovered.synset
    assert s.images.shape == (20, 1, 28, 28)
    assert torch.equal(torch.bincount(s.labels, minlength=10), torch.full((10,), 2))
    pixels = smoke_workspace.test.denormalize(s.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert s.meta["objective"][-1] < 0.5 * s.meta["objective"][0]
    assert s.meta["batches"] == 1 and not s.meta["class_statistics_cached"]


def test_class_statistics_are_cached(recovered, smoke_workspace):
    again = synthesize_smoke(smoke_workspace, "lpld", iterations=2, stats_pool=100).synset.meta
    assert again["class_statistics_cached"]
    assert again["objective"][0] == pytest.approx(recovered.synset.meta["objective"][0], rel=1e-6)


def test_class_statistics_match_direct_computation(smoke_workspace):
    real = smoke_workspace.train
    teacher = smoke_workspace.teacher(smoke_workspace.protocol.teacher).model
    pools = [real.class_indices(c)[:30] for c in range(3)]
    stats = compute_class_statistics(teacher, real, pools, torch.device("cpu"), progress)
    first = batchnorm_layers(teacher)[0]
    seen = []
    handle = first.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        for pool in pools:
            teacher(real.get(pool))
    handle.remove()
    for c, x in enumerate(seen):
        assert torch.allclose(stats[0][0][c], x.mean((0, 2, 3)), atol=1e-4)
        assert torch.allclose(stats[0][1][c], x.var((0, 2, 3), unbiased=False), atol=1e-4)


def test_mixed_batch_term_equals_mean_of_one_class_batches():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4).eval()
    stats = [(torch.randn(3, 4), torch.rand(3, 4) + 0.5)]
    x, labels = torch.randn(6, 4, 5, 5), torch.tensor([2, 0, 2, 0, 2, 0])
    matcher = ClassBNStatistics(nn.Sequential(bn), stats, first_multiplier=1.0)
    matcher.select(labels)
    mixed = matcher.term(0, bn, x)
    separate = [
        (stats[0][1][c] - x[labels == c].var((0, 2, 3), unbiased=False)).norm()
        + (stats[0][0][c] - x[labels == c].mean((0, 2, 3))).norm()
        for c in (0, 2)
    ]
    assert torch.allclose(mixed, torch.stack(separate).mean())


def test_batches_hold_whole_classes():
    batches = class_layout(num_classes=10, ipc=10, batch_size=30)
    assert [len(b) for b in batches] == [30, 30, 30, 10]
    assert torch.equal(batches[0], torch.arange(3).repeat_interleave(10))
    assert [b.tolist() for b in class_layout(2, 5, 2)] == [[0, 0], [0, 0], [0], [1, 1], [1, 1], [1]]


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_lpld
    import rd3_plugin_lpld.statistics

    assert rd3_plugin_lpld.ClassBNStatistics is rd3_plugin_lpld.statistics.ClassBNStatistics
