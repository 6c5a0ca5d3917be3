"""Herding on the smoke protocol: real images whose embedding mean tracks the class mean."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from rd3_plugin_herding.selection import herding

from rd3_harness import UsageError, embed_real
from rd3_harness.testing import synthesize_smoke

POOL = 300

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_herding as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


@pytest.fixture(scope="module")
def selected(smoke_workspace):
    return synthesize_smoke(smoke_workspace, "herding", pool=POOL)


def test_selects_real_images_of_each_class(selected, smoke_workspace):
    s, real = selected.synset, smoke_workspace.train
    indices = torch.tensor(s.meta["indices"])
    assert len(indices.unique()) == len(indices) == 20
    assert torch.equal(real.labels[indices], s.labels.cpu())
    assert torch.equal(real.get(indices), s.images)


def test_plugin_selection_mean_is_closer_to_class_mean_than_random(selected, smoke_workspace, smoke_teacher):
    real, gen = smoke_workspace.train, torch.Generator().manual_seed(1)
    s = selected.synset
    chosen = embed_real(smoke_teacher, real, torch.tensor(s.meta["indices"]))
    for c in range(10):
        sample = real.sample_indices(c, POOL, gen)  # an independent estimate of the class mean
        features = embed_real(smoke_teacher, real, sample)
        mu = features.mean(0)
        herded = torch.linalg.vector_norm(chosen[s.labels == c].mean(0) - mu)
        draws = torch.stack([torch.randperm(len(sample), generator=gen)[:2] for _ in range(50)])
        random = torch.linalg.vector_norm(features[draws].mean(1) - mu, dim=1)
        assert herded < random.median(), (c, float(herded), float(random.median()))


def test_selected_mean_is_closer_to_class_mean_than_random(smoke_workspace, smoke_teacher):
    real, gen = smoke_workspace.train, torch.Generator().manual_seed(0)
    for c in range(3):
        pool = real.sample_indices(c, POOL, gen)
        features = embed_real(smoke_teacher, real, pool)
        mu = features.mean(0)
        for k in (2, 10):
            herded = torch.linalg.vector_norm(features[herding(features, k)].mean(0) - mu)
            draws = torch.stack([torch.randperm(POOL, generator=gen)[:k] for _ in range(50)])
            random = torch.linalg.vector_norm(features[draws].mean(1) - mu, dim=1)
            assert herded < random.min(), (c, k, float(herded), float(random.min()))


def test_first_pick_is_nearest_to_mean_and_picks_are_distinct():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(50, 4, generator=gen)
    features[7] = features.mean(0) + 0.01 * features[3]  # almost exactly the mean
    chosen = herding(features, 50)
    assert chosen[0] == 7 and len(chosen.unique()) == 50
    with pytest.raises(ValueError, match="cannot select"):
        herding(features, 51)


def test_pool_below_ipc_is_refused(smoke_workspace):
    with pytest.raises(UsageError, match="raise pool"):
        synthesize_smoke(smoke_workspace, "herding", pool=1)


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
