"""Run under torchrun with gloo: every rank normalises its uneven share of one batch through
BatchNorm layers made whole-batch; rank 0 writes to argv[1] the largest difference from one process
over the whole batch, per layer, in outputs, input gradients, parameter gradients and running
statistics after two training steps (tests/test_batchnorm.py)."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d
from torch import nn

from rd3_harness.training.batchnorm import whole_batch_norm

LAYERS = {
    "BatchNorm2d": lambda: nn.BatchNorm2d(4),
    "BatchNorm2d cumulative": lambda: nn.BatchNorm2d(4, momentum=None),
    "BatchNorm2d no affine": lambda: nn.BatchNorm2d(4, affine=False),
    "BatchNorm1d": lambda: nn.BatchNorm1d(4),
    "timm BatchNormAct2d": lambda: BatchNormAct2d(4, act_layer=nn.ReLU),
}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    n = 7  # 4 + 3 images: uneven shares
    start, stop = (0, 4) if rank == 0 else (4, n)
    report = {}
    for name, make in LAYERS.items():
        torch.manual_seed(0)
        one = make()
        with torch.no_grad():
            for p in one.parameters():
                p.uniform_(0.5, 1.5)
        ranks = whole_batch_norm(copy.deepcopy(one))
        diffs = {"output": 0.0, "input_grad": 0.0, "param_grad": 0.0, "running": 0.0}
        for _ in range(2):  # two steps: running statistics updated twice
            shape = (n, 4, 3, 3) if "2d" in name else (n, 4)
            x = (torch.randn(shape) * 3 + 10).requires_grad_()  # offset: a naive E[x^2] - E[x]^2 would lose digits
            r = torch.randn(shape)
            y_one = one(x)
            (y_one * r).sum().backward()
            mine = x.detach()[start:stop].clone().requires_grad_()
            y = ranks(mine)
            (y * r[start:stop]).sum().backward()
            ys, grads = [None] * size, [None] * size
            dist.all_gather_object(ys, y.detach())
            dist.all_gather_object(grads, mine.grad)
            diffs["output"] = max(diffs["output"], (torch.cat(ys) - y_one.detach()).abs().max().item())
            diffs["input_grad"] = max(diffs["input_grad"], (torch.cat(grads) - x.grad).abs().max().item())
            for p_one, p in zip(one.parameters(), ranks.parameters()):
                dist.all_reduce(p.grad)  # a sum loss: the whole batch's gradient is the ranks' sum
                diffs["param_grad"] = max(diffs["param_grad"], (p.grad - p_one.grad).abs().max().item())
                p.grad, p_one.grad = None, None
        for key, buffer in one.state_dict().items():
            got = ranks.state_dict()[key]
            diffs["running"] = max(diffs["running"], (got.double() - buffer.double()).abs().max().item())
        report[name] = diffs
    if rank == 0:
        with open(out, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
