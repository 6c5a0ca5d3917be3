"""Whole-batch BatchNorm for `--parallel data`: two gloo ranks with uneven or empty shares compute
what one process computes over the whole batch; without a process group nothing changes."""

from __future__ import annotations

import copy
import json
import pickle

import gpu_check
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from rd3_harness.training.batchnorm import whole_batch_norm


def test_two_ranks_normalise_with_the_whole_batch(tmp_path):
    # benchmarks/whole_batch_ranks.py under torchrun, 2 gloo ranks, as gpu_check runs it on a GPU
    result = gpu_check.whole_batch_norm_check(tmp_path / "report.json", "cpu")
    assert result["returncode"] == 0, result.get("stderr_tail")
    assert result["cases"] == 14  # 7 layers (torch's and timm's, channels_last, no affine, ...) x 2 splits
    assert result["within_tolerance"]
    for case, diffs in json.loads((tmp_path / "report.json").read_text()).items():
        assert max(diffs.values()) < 2e-5, (case, diffs)  # float32 rounding; per-rank statistics: 0.8-4.5


def test_without_a_process_group_layers_are_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), BatchNormAct2d(4, act_layer=nn.ReLU))
    plain = copy.deepcopy(model)
    whole_batch_norm(model)
    whole_batch_norm(model)  # converting twice is converting once
    assert [type(m).__name__ for m in model[1:]] == ["WholeBatchBatchNorm2d", "WholeBatchBatchNormAct2d"]
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[2], BatchNormAct2d)
    assert model.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, 1, 8, 8)
    y = model(x)
    assert torch.equal(y, plain(x))  # training mode, one process: the layers' own forward
    assert (y >= 0).all() and (y == 0).any()  # timm's activation is kept
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    ema = copy.deepcopy(model).eval()
    assert torch.equal(ema(x), copy.deepcopy(plain).eval()(x))
    again = pickle.loads(pickle.dumps(model))  # torch.save(model) works too
    assert type(again[1]) is type(model[1]) and torch.equal(again.eval()(x), model.eval()(x))
