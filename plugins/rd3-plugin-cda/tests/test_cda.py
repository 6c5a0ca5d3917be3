"""CDA on the smoke protocol: SRe2L recovery under the crop-scale curriculum."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import rd3_plugin_sre2l.recovery
import torch
from pydantic import ValidationError
from rd3_plugin_cda import PRESETS, Config, min_crop_scale
from rd3_plugin_sre2l import resolve

from rd3_harness.testing import synthesize_smoke

ITERATIONS = 30

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_cda as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


@pytest.fixture(scope="module")
def recovered(smoke_workspace):
    """A CDA run that also records the crop-scale range of every step."""
    scales = []
    original = rd3_plugin_sre2l.recovery.random_resized_crop_flip

    def spy(x, scale, generator):
        scales.append(scale)
        return original(x, scale, generator)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rd3_plugin_sre2l.recovery, "random_resized_crop_flip", spy)
        result = synthesize_smoke(smoke_workspace, "cda", iterations=ITERATIONS)
    return result, scales


def test_output_is_valid(recovered, smoke_workspace):
    s = recovered[0].synset
    assert s.images.shape == (20, 1, 28, 28)
    pixels = smoke_workspace.test.denormalize(s.images)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert s.meta["curriculum"] == {"schedule": "cosine", "milestone": 1.0, "final_scale": 0.86}


def test_objective_falls_below_half(recovered):
    objective = recovered[0].synset.meta["objective"]
    assert objective[-1] < 0.5 * objective[0]


def test_recovery_crops_with_the_curriculum(recovered):
    scales = recovered[1]
    assert len(scales) == 2 * ITERATIONS  # one batch per IPC index
    assert scales == [(min_crop_scale(t, ITERATIONS, final=0.86), 1.0) for t in range(ITERATIONS)] * 2


def test_28px_curriculum_stays_in_the_teachers_crop_range(recovered, smoke_workspace, smoke_teacher):
    """The CPU teachers were trained with pad-2 crops (each keeps >= (26/28)^2 of the image) and
    flips: the 28 px curriculum ends there, where the teacher still recognizes real images, and
    not at 0.08, where it does not."""
    lows = [lo for lo, _ in recovered[1]]
    assert min(lows) >= (26 / 28) ** 2 - 0.01 and abs(lows[-1] - 0.86) < 0.01
    real = smoke_workspace.test
    index = torch.arange(0, len(real), max(1, len(real) // 500))
    x, y = real.get(index), real.labels[index]

    def accuracy(scale):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            views = torch.cat([rd3_plugin_sre2l.recovery.random_resized_crop_flip(b, scale, g) for b in x.split(1)])
            return (smoke_teacher(views).argmax(1) == y).float().mean().item()

    whole, final, hardest = accuracy((1.0, 1.0)), accuracy((0.86, 0.86)), accuracy((0.08, 0.08))
    assert final > whole - 0.1 and hardest < final - 0.3, (whole, final, hardest)


@pytest.mark.parametrize("milestone", [1.0, 0.5])
def test_cosine_schedule_follows_formula(milestone):
    T = 200
    for t in range(T):
        expected = 0.08 + 0.92 * 0.5 * (1 + math.cos(math.pi * t / (milestone * T))) if t < milestone * T else 0.08
        assert math.isclose(min_crop_scale(t, T, "cosine", milestone), expected, abs_tol=1e-12)
    assert min_crop_scale(0, T, "cosine", milestone) == 1.0


def test_step_and_linear_schedules():
    T = 100
    assert [min_crop_scale(t, T, "step", 0.3) for t in (0, 29, 30, 99)] == [1.0, 1.0, 0.08, 0.08]
    assert math.isclose(min_crop_scale(25, T, "linear"), 0.08 + 0.92 * 0.75)
    assert min_crop_scale(5, T, "linear", 0.0) == 0.08


def test_presets_and_config():
    tiny = resolve(Config(), (3, 64, 64), PRESETS)
    assert (tiny.lr, tiny.r_bn, tiny.iterations, tiny.crop) == (0.4, 0.05, 4000, True)
    assert resolve(Config(), (1, 28, 28), PRESETS).crop
    with pytest.raises(ValidationError, match="crop"):
        Config(crop=False)
    with pytest.raises(ValidationError):
        Config(milestone=1.5)


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
