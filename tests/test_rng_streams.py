"""Every student draws from its own global-RNG streams, saved in checkpoints: with stochastic
depth (torchvision's StochasticDepth, as in Swin-T) lockstep == one by one and resumed ==
uninterrupted, on real Fashion-MNIST images."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from rd3_harness.protocol.schema import Protocol
from rd3_harness.registry import ModelEntry
from rd3_harness.training import trainer
from rd3_harness.training.checkpoint import Checkpoints
from rd3_harness.training.trainer import Engine


class _Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.drop = StochasticDepth(0.5, "row")

    def forward(self, x):
        return x + self.drop(self.body(x))


def _sd_net(width: int):
    def factory(num_classes: int, in_channels: int, resolution: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            _Residual(width),
            _Residual(width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    return factory


@pytest.fixture(scope="module")
def setup(smoke_workspace):
    ws = smoke_workspace
    idx = torch.cat([ws.train.sample_indices(c, 2, torch.Generator().manual_seed(c)) for c in range(10)])
    data = ws.protocol.model_dump(mode="json")
    data["evaluation"].update(epochs=4, seeds=[0], students=[{"architecture": "sd_a"}, {"architecture": "sd_b"}])
    models = {**ws.registries.models, "sd_a": ModelEntry("sd_a", _sd_net(8)), "sd_b": ModelEntry("sd_b", _sd_net(12))}
    return ws, Protocol.model_validate(data), models, ws.train.get(idx), ws.train.labels[idx]


def _engine(setup, **kw) -> Engine:
    ws, protocol, models, images, labels = setup
    teacher = ws.teacher(ws.protocol.teacher).model
    test = ws.test.subset(torch.arange(0, 10_000, 20))
    return Engine(protocol, images, labels, [teacher], test, models=models, device=torch.device("cpu"), **kw)


def _numbers(results) -> dict:
    return {r.student: (r.final_top1, r.final_loss) for r in results}


def test_stochastic_depth_lockstep_equals_one_by_one(setup):
    lockstep = _numbers(_engine(setup).run())
    torch.manual_seed(1234)  # whatever the global generator holds, the students' streams are their own
    alone = _numbers(_engine(setup, teacher_reuse=False).run())
    assert lockstep == alone


def test_stochastic_depth_resumed_equals_uninterrupted(setup, tmp_path, monkeypatch):
    uninterrupted = _numbers(_engine(setup).run())
    epoch = trainer.BatchStream.epoch

    def dies_at_epoch_3(self, e):
        if e == 3:
            raise KeyboardInterrupt
        return epoch(self, e)

    monkeypatch.setattr(trainer.BatchStream, "epoch", dies_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _engine(setup, checkpoints=Checkpoints(tmp_path, every=2)).run()
    monkeypatch.setattr(trainer.BatchStream, "epoch", epoch)
    torch.manual_seed(99)
    resumed = _engine(setup, checkpoints=Checkpoints(tmp_path, every=2)).run()
    assert {r.resumed_from_epoch for r in resumed} == {2}
    assert _numbers(resumed) == uninterrupted


def test_tf32_protocol_validates_and_trains_on_the_cpu(setup):
    ws, protocol, models, images, labels = setup
    data = protocol.model_dump(mode="json")
    data["evaluation"].update(precision="tf32", epochs=2, students=[{"architecture": "convnet_d1_w32_bn"}])
    tf32 = Protocol.model_validate(data)
    data["evaluation"]["precision"] = "fp32"
    fp32 = Protocol.model_validate(data)
    assert tf32.evaluation.precision == "tf32"
    runs = [_numbers(_engine((ws, p, models, images, labels)).run()) for p in (tf32, fp32)]
    assert runs[0] == runs[1]  # on the CPU tf32 is float32
