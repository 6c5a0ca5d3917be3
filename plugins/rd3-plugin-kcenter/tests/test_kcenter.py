"""k-center greedy on the smoke protocol: real images that cover each class in embedding space."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from rd3_plugin_kcenter.selection import k_center_greedy

from rd3_harness import UsageError, embed_real
from rd3_harness.testing import synthesize_smoke

POOL = 300

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_kcenter as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


@pytest.fixture(scope="module")
def selected(smoke_workspace):
    return synthesize_smoke(smoke_workspace, "kcenter", pool=POOL)


def test_selects_real_images_of_each_class(selected, smoke_workspace):
    s, real = selected.synset, smoke_workspace.train
    indices = torch.tensor(s.meta["indices"])
    assert len(indices.unique()) == len(indices) == 20
    assert torch.equal(real.labels[indices], s.labels.cpu())
    assert torch.equal(real.get(indices), s.images)


def covering_radius(features: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    return torch.cdist(features, features[centers]).min(1).values.max()


def test_greedy_rule_and_coverage_on_real_embeddings(smoke_workspace):
    real, gen = smoke_workspace.train, torch.Generator().manual_seed(0)
    teacher = smoke_workspace.teacher(smoke_workspace.protocol.teacher).model
    for c in range(3):
        features = embed_real(teacher, real, real.sample_indices(c, POOL, gen))
        chosen = k_center_greedy(features, 10, gen)
        assert len(chosen.unique()) == 10
        for j in range(1, 10):  # each pick is the point farthest from its nearest earlier pick
            nearest = torch.cdist(features, features[chosen[:j]]).min(1).values
            assert torch.isclose(nearest[chosen[j]], nearest.max())
        draws = [torch.randperm(POOL, generator=gen)[:10] for _ in range(20)]
        radius = covering_radius(features, chosen)
        assert radius < min(covering_radius(features, d) for d in draws)


def test_start_follows_the_generator_and_duplicates_are_never_repicked():
    features = torch.cat([torch.zeros(3, 2), torch.ones(2, 2)])  # only two distinct points
    starts = {int(k_center_greedy(features, 1, torch.Generator().manual_seed(s))[0]) for s in range(20)}
    assert len(starts) > 1
    chosen = k_center_greedy(features, 5, torch.Generator().manual_seed(0))
    assert sorted(chosen.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot select"):
        k_center_greedy(features, 6, torch.Generator())


def test_pool_below_ipc_is_refused(smoke_workspace):
    with pytest.raises(UsageError, match="raise pool"):
        synthesize_smoke(smoke_workspace, "kcenter", pool=1)


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
