"""BatchNorm over the data-parallel world's whole batch, on every device and backend.

Under `--parallel data` each rank holds a share of the protocol's batch; the protocol's number is
defined with BatchNorm statistics of the whole batch, as one process computes them. torch's
SyncBatchNorm gives them on CUDA only (it refuses the CPU, where the gloo tests run) and replaces
BatchNorm subclasses by a plain layer (timm's BatchNormAct2d would lose its activation). Here every
BatchNorm layer keeps its class and its own forward; while it trains, its `F.batch_norm` call
normalises with the statistics of all ranks' inputs: one all-gather of (count, mean, squared
deviations) per layer forward, merged exactly (Chan et al.), and one all-reduce of the two
gradient sums per layer backward.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

_SIGNATURE = inspect.signature(F.batch_norm)


def whole_batch_norm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm layer of `model` (in place) use the whole batch's statistics in training
    mode whenever a process group of several ranks exists; evaluation mode is unchanged, and each
    layer stays an instance of its class (same parameters, buffers and state-dict keys)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _WholeBatch):
            module.__class__ = _whole_batch_class(type(module))
    return model


class _WholeBatch:
    """Marks a BatchNorm class made by `_whole_batch_class`."""


@functools.cache
def _whole_batch_class(cls: type) -> type:
    """The whole-batch subclass of `cls`, registered in this module under a name unique to `cls`
    so that converted models pickle (`torch.save(model)`)."""

    def forward(self, *args, **kwargs):
        synced = self.training and dist.is_initialized() and dist.get_world_size() > 1
        with _WholeBatchStatistics() if synced else contextlib.nullcontext():
            return cls.forward(self, *args, **kwargs)

    unique = "_WholeBatch_" + f"{cls.__module__}.{cls.__qualname__}".replace(".", "_")
    made = type(f"WholeBatch{cls.__name__}", (cls, _WholeBatch), {"forward": forward, "__module__": __name__})
    made.__qualname__ = unique
    globals()[unique] = made
    return made


class _WholeBatchStatistics(TorchFunctionMode):
    """Active only inside one BatchNorm layer's forward: its training-mode `F.batch_norm` call goes
    to the whole-batch version; every other call runs as it is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.batch_norm:
            return func(*args, **kwargs)
        call = _SIGNATURE.bind(*args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        if not a["training"]:
            return func(*args, **kwargs)
        return _WholeBatchNorm.apply(
            a["input"], a["weight"], a["bias"], a["running_mean"], a["running_var"], a["momentum"], a["eps"]
        )


class _WholeBatchNorm(torch.autograd.Function):
    """Training-mode batch norm with every rank's statistics, built from torch's fused BatchNorm
    kernels (local statistics, normalisation with given statistics, the local backward pass); at
    least float32 arithmetic, output in the input's dtype (as under autocast)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        channels = x.shape[1]
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        count = xf.numel() // channels
        if count:
            mean, var = torch.batch_norm_update_stats(xf, None, None, 0.0)  # biased variance
        else:  # a rank with an empty share adds nothing
            mean = var = xf.new_zeros(channels)
        local = torch.cat([torch.full((1,), count, dtype=xf.dtype, device=xf.device), mean, var * count])
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, local)
        stats = torch.stack(parts)
        counts, means, squares = stats[:, :1], stats[:, 1 : channels + 1], stats[:, channels + 1 :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (squares.sum(0) + (counts * (means - mean).square()).sum(0)) / total
        if running_mean is not None:
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)
        if running_var is not None:
            unbiased = var * total / (total - 1).clamp(min=1)
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
        w = torch.ones_like(mean) if weight is None else weight.to(mean.dtype)
        y = F.batch_norm(xf, mean, var, w, None if bias is None else bias.to(mean.dtype), False, 0.0, eps)
        ctx.save_for_backward(x, mean, var, w)  # x as it came: a bf16 input is not kept twice
        ctx.count, ctx.total, ctx.eps = count, total, eps
        ctx.param_dtypes = (None if weight is None else weight.dtype, None if bias is None else bias.dtype)
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        """torch's backward over this rank's share (local means of the gradient), then a per-channel
        correction from local to whole-batch means: a (m_g - M_g) + a xhat (m_gx - M_gx), with
        a = weight * invstd, m local and M whole-batch means of g and g * xhat."""
        x, mean, var, w = ctx.saved_tensors
        xf, g = x.to(mean.dtype), grad.to(mean.dtype)
        invstd = torch.rsqrt(var + ctx.eps)
        if ctx.count:
            grad_x, sum_g_xhat, sum_g = torch.ops.aten.native_batch_norm_backward(
                g, xf, w, None, None, mean, invstd, True, ctx.eps, [True, True, True]
            )
        else:
            grad_x, sum_g_xhat, sum_g = torch.zeros_like(xf), torch.zeros_like(mean), torch.zeros_like(mean)
        weight_dtype, bias_dtype = ctx.param_dtypes
        grad_weight = sum_g_xhat.to(weight_dtype) if ctx.needs_input_grad[1] else None
        grad_bias = sum_g.to(bias_dtype) if ctx.needs_input_grad[2] else None
        sums = torch.cat([sum_g, sum_g_xhat])
        local = sums / max(ctx.count, 1)
        dist.all_reduce(sums)  # the whole batch's sums: the statistics depend on every rank's input
        gap_g, gap_g_xhat = (local - sums / ctx.total).split(len(mean))
        if ctx.count:  # the correction is affine in xhat: one fused normalisation kernel
            a = invstd * w
            grad_x += F.batch_norm(xf, mean, var, a * gap_g_xhat, a * gap_g, False, 0.0, ctx.eps)
        return grad_x.to(x.dtype), grad_weight, grad_bias, None, None, None, None
