"""DWA on the smoke protocol: the directed adjustment of the teacher and the recovery around it."""

import contextlib
import subprocess
import sys

import rd3_plugin_dwa.synthesis
import torch
import torch.nn.functional as F
from rd3_plugin_dwa import directed_adjustment

from rd3_harness.testing import synthesize_smoke

LIGHT = """
import sys
import pluggy
from rd3_harness import hookimpl
import rd3_plugin_dwa as plugin
pluggy.PluginManager(hookimpl.project_name).register(plugin)
plugin.method_info().config_model().values(28)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
assert not heavy, heavy[:5]
"""


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _distance(model, state):
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p - state[k]) for k, p in model.named_parameters()])
    )


def test_adjustment_has_the_configured_norm_and_is_undone_exactly(smoke_workspace):
    ws = smoke_workspace
    teacher, real = ws.teacher(ws.protocol.teacher).model, ws.train
    index = torch.cat([real.sample_indices(c, 5, torch.Generator().manual_seed(c)) for c in range(10)])
    x, y = real.get(index), real.labels[index]
    before, flags = _state(teacher), [p.requires_grad for p in teacher.parameters()]
    with torch.no_grad():
        loss_before = F.cross_entropy(teacher(x), y)
    with directed_adjustment(teacher, x, y, rho=0.05, steps=1) as norm:
        assert abs(_distance(teacher, before) - 0.05) < 1e-5
        assert abs(norm - 0.05) < 1e-5
        with torch.no_grad():
            assert F.cross_entropy(teacher(x), y) > loss_before  # moved up the loss on the real subset
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert [p.requires_grad for p in teacher.parameters()] == flags
    with directed_adjustment(teacher, x, y, rho=0.05, steps=4) as norm:
        assert 0.05 / 4 < norm <= 0.05 + 1e-6
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_recovery_restores_the_teacher_after_every_batch(smoke_workspace):
    ws = smoke_workspace
    teacher = ws.teacher(ws.protocol.teacher).model
    before = _state(teacher)
    # batches of 10 (one image per class): two adjusted batches, each from the original weights
    s = synthesize_smoke(ws, "dwa", iterations=40, batch_size=10, rho=0.05, steps=1).synset
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert len(s.meta["adjustment_norm"]) == 2
    assert all(abs(n - 0.05) < 1e-5 for n in s.meta["adjustment_norm"])
    assert s.images.shape == (20, 1, 28, 28) and torch.isfinite(s.images).all()
    assert torch.equal(ws.train.labels[torch.tensor(s.meta["init_indices"])], s.labels.cpu())
    trace = s.meta["objective"]
    assert trace[-1] < 0.5 * trace[0], trace


def test_entry_point_module_imports_no_torch():
    """`rd3h plugins` and `rd3h protocol validate` load the module: torch only comes with synthesis."""
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import rd3_plugin_dwa.adjust

    assert directed_adjustment is rd3_plugin_dwa.adjust.directed_adjustment


def test_each_ipc_index_gets_its_own_adjustment_on_one_image_per_class(smoke_workspace, monkeypatch):
    """The reference reloads the teacher per IPC index and adjusts it on that index's batch (one
    real image per class, first shifted view): the adjustments differ between IPC indices and
    each starts from the original weights."""
    ws = smoke_workspace
    teacher = ws.teacher(ws.protocol.teacher).model
    original, calls = _state(teacher), []
    adjust = rd3_plugin_dwa.synthesis.directed_adjustment

    @contextlib.contextmanager
    def recording(model, x, y, rho, steps):
        before = _state(model)
        with adjust(model, x, y, rho, steps) as norm:
            calls.append(dict(before=before, adjusted=_state(model), x=x.clone(), y=y.clone()))
            yield norm

    monkeypatch.setattr(rd3_plugin_dwa.synthesis, "directed_adjustment", recording)
    s = synthesize_smoke(ws, "dwa", iterations=2).synset  # the smoke protocol: 2 images per class
    assert len(calls) == 2
    for call in calls:
        assert torch.equal(call["y"].cpu(), torch.arange(10))  # one image per class
        assert all(torch.equal(v, original[k]) for k, v in call["before"].items())  # restored before each
    assert not torch.equal(calls[0]["adjusted"]["features.0.weight"], calls[1]["adjusted"]["features.0.weight"])
    assert all(torch.equal(v, original[k]) for k, v in teacher.state_dict().items())
    # the adjustment sees the first view: IPC index i's real images, cyclically shifted by 0..jitter
    init = ws.train.get(torch.tensor(s.meta["init_indices"])).view(2, 10, 1, 28, 28)
    for i, call in enumerate(calls):
        shifts = [(a, b) for a in range(5) for b in range(5)]
        assert any(torch.equal(call["x"].cpu(), torch.roll(init[i], sh, dims=(2, 3))) for sh in shifts)
