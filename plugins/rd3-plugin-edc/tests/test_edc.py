"""EDC on the smoke protocol: real-image start, falling objective, RDED initialization."""

import subprocess
import sys

import torch

from rd3_harness.testing import synthesize_smoke

FAST = dict(stats_images=50)

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_edc as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model(init="rded").recipe(28)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


def test_starts_from_real_images_of_the_class(smoke_workspace):
    ws = smoke_workspace
    # one step at a negligible learning rate leaves the starting images visible
    s = synthesize_smoke(ws, "edc", iterations=1, lr=1e-7, **FAST).synset
    assert s.meta["init"] == "real"
    index = torch.tensor(s.meta["init_indices"])
    assert torch.equal(ws.train.labels[index].to(s.labels.device), s.labels)
    real = ws.train.get(index)
    mirrored = torch.tensor(s.meta["init_mirrored"]).view(-1, 1, 1, 1)
    assert mirrored.any() and not mirrored.all()
    expected = torch.where(mirrored, real.flip(3), real)
    assert torch.allclose(s.images, expected, atol=1e-5)


def test_objective_falls_below_half(smoke_workspace):
    s = synthesize_smoke(smoke_workspace, "edc", iterations=60, **FAST).synset
    trace = s.meta["objective"]
    first, last = sum(trace[:2]) / 2, sum(trace[-2:]) / 2  # one step per teacher
    assert last < 0.5 * first, trace
    assert s.images.shape == (20, 1, 28, 28) and torch.isfinite(s.images).all()


def test_rded_initialization_and_flatness(smoke_workspace):
    def run(flatness_weight):
        return synthesize_smoke(
            smoke_workspace,
            "edc",
            init="rded",
            rded={"candidates": 20},
            iterations=3,
            flatness_weight=flatness_weight,
            **FAST,
        ).synset

    s = run(1.0)
    assert s.meta["init"] == "rded" and s.meta["rded"]["factor"] == 1
    assert len(s.meta["rded"]["crops"]) == len(s.images)
    assert torch.isfinite(s.images).all()
    # the flatness term is 0 at the first step (the EMA equals the images) and counts after it
    plain = run(0.0).meta["objective"]
    assert s.meta["objective"][0] == plain[0] and s.meta["objective"][1:] != plain[1:]


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_edc
    import rd3_plugin_edc.initialization

    assert rd3_plugin_edc.initial_images is rd3_plugin_edc.initialization.initial_images


def test_cpu_preset_runs_the_cifar_scripts_budget():
    """EDC's Branch_CIFAR_100/recover/recover.sh runs 2000 iterations; 28 px runs the same budget."""
    from rd3_plugin_edc import Config

    cpu, cifar = Config().recipe(28), Config().recipe(32)
    assert (cpu.iterations, cpu.lr, cpu.batch_size) == (cifar.iterations, cifar.lr, cifar.batch_size)
