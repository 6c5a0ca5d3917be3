"""Whole-batch BatchNorm against one process, run under torchrun with 2 ranks and gloo:
`python -m torch.distributed.run --nproc_per_node 2 benchmarks/whole_batch_ranks.py REPORT [DEVICE]`.

Every rank normalises its share of one batch (uneven shares, then all on rank 0 and none on rank 1)
through BatchNorm layers made whole-batch, on DEVICE (default cpu; on one GPU both ranks share it,
gloo carrying the CUDA tensors); rank 0 writes to REPORT the largest difference from one process
over the whole batch, per case, in outputs, input gradients, parameter gradients and buffers after
two training steps. Used by tests/test_batchnorm.py and benchmarks/gpu_check.py."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist
from timm.layers import BatchNormAct2d
from torch import nn

from rd3_harness.training.batchnorm import whole_batch_norm

LAYERS = {  # name: (layer, input shape after the batch dimension, channels_last input)
    "BatchNorm2d": (lambda: nn.BatchNorm2d(4), (4, 3, 3), False),
    "BatchNorm2d channels_last": (lambda: nn.BatchNorm2d(4), (4, 3, 3), True),
    "BatchNorm2d cumulative": (lambda: nn.BatchNorm2d(4, momentum=None), (4, 3, 3), False),
    "BatchNorm2d no affine": (lambda: nn.BatchNorm2d(4, affine=False), (4, 3, 3), False),
    "BatchNorm2d no running statistics": (lambda: nn.BatchNorm2d(4, track_running_stats=False), (4, 3, 3), False),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4), (4,), False),
    "timm BatchNormAct2d": (lambda: BatchNormAct2d(4, act_layer=nn.ReLU), (4, 3, 3), False),
}
N = 7
SHARES = {"uneven": [(0, 4), (4, N)], "one empty": [(0, N), (N, N)]}


def main(out: str, device: str = "cpu") -> None:
    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    report = {}
    for (name, (make, shape, channels_last)), (split, shares) in (
        (layer, share) for layer in LAYERS.items() for share in SHARES.items()
    ):
        start, stop = shares[rank]
        torch.manual_seed(0)
        one = make().to(device)
        with torch.no_grad():
            for p in one.parameters():
                p.uniform_(0.5, 1.5)
        ranks = whole_batch_norm(copy.deepcopy(one))
        diffs = {"output": 0.0, "input_grad": 0.0, "param_grad": 0.0, "buffers": 0.0}
        for _ in range(2):  # two steps: running statistics updated twice
            x = torch.randn(N, *shape, device=device) * 3 + 10  # offset: naive E[x^2] - E[x]^2 loses digits
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            r = torch.randn(N, *shape, device=device)
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
            diffs["buffers"] = max(diffs["buffers"], (got.double() - buffer.double()).abs().max().item())
        report[f"{name}, {split}"] = diffs
    if rank == 0:
        with open(out, "w") as f:
            json.dump(report, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
