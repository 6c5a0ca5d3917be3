"""Architectures by name, timm-style: `list_models(known, pattern)` and `create_model(known, name, ...)`,
where `known` is `Registries.models`.

Names resolve in this order: architectures registered by plugins (`register_models`; the core
registers the ConvNet family and CIFAR-stem ResNets), `timm:NAME` through `timm.create_model`,
then any torchvision classifier by its builder name. Input channels and class count follow the
dataset; weights are always freshly initialised (teachers load theirs separately). Importing this
package does not import torch; building a model does.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from rd3_harness.errors import UsageError
from rd3_harness.registry import ModelEntry

if TYPE_CHECKING:
    import torch
    from torch import nn

TORCHVISION_NAMES = Path(__file__).with_name("torchvision_classifiers.txt")
TORCHVISION_NAMES_VERSION = "0.29.1"
"""The torchvision release whose classifier names `torchvision_classifiers.txt` lists (a test
checks the list against the installed torchvision)."""


@functools.cache
def torchvision_classifiers() -> tuple[str, ...]:
    """Builder names of torchvision's classifiers; read from the shipped list when the installed
    torchvision is the release it was made from, so that name checks need no torch import."""
    try:
        installed = importlib.metadata.version("torchvision").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed == TORCHVISION_NAMES_VERSION:
        return tuple(TORCHVISION_NAMES.read_text().split())
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def list_models(known: Mapping[str, ModelEntry], pattern: str = "*") -> list[str]:
    """Registered names and torchvision classifiers matching a shell pattern (timm:NAME not listed:
    any name of `timm.list_models()` works)."""
    names = set(known) | set(torchvision_classifiers())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def describe(known: Mapping[str, ModelEntry], name: str) -> str:
    entry = known.get(name)
    if entry is not None:
        return entry.description
    return "torchvision classifier" if name in torchvision_classifiers() else ""


def is_known(known: Mapping[str, ModelEntry], name: str) -> bool:
    return name in known or name.startswith("timm:") or name in torchvision_classifiers()


def create_model(
    known: Mapping[str, ModelEntry], name: str, *, num_classes: int, in_channels: int = 3, resolution: int = 224
) -> nn.Module:
    """Build a freshly initialised model for a dataset (seed the global RNG first for
    reproducible weights)."""
    entry = known.get(name)
    if entry is not None:
        return entry.factory(num_classes=num_classes, in_channels=in_channels, resolution=resolution)
    if name.startswith("timm:"):
        return _timm(name[5:], num_classes, in_channels, resolution)
    if name in torchvision_classifiers():
        return _torchvision(name, num_classes, in_channels, resolution)
    close = fnmatch.filter(list_models(known), f"*{name.split('_')[0]}*")[:8]
    hint = f" Similar: {', '.join(close)}." if close else ""
    raise UsageError(f"unknown architecture {name!r}.{hint} See `rd3h models list`.")


def _torchvision(name: str, num_classes: int, in_channels: int, resolution: int) -> nn.Module:
    import torchvision

    kwargs = {"image_size": resolution} if name.startswith("vit_") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels == 3:
        return model
    from rd3_harness.models.layers import ChannelRepeat

    return ChannelRepeat(model)


def _timm(name: str, num_classes: int, in_channels: int, resolution: int) -> nn.Module:
    import timm

    if name not in timm.list_models():
        raise UsageError(f"unknown timm architecture {name!r}; see timm.list_models()")
    kwargs = {"num_classes": num_classes, "in_chans": in_channels}
    try:
        return timm.create_model(name, pretrained=False, img_size=resolution, **kwargs)
    except TypeError:  # convolutional models take no img_size
        return timm.create_model(name, pretrained=False, **kwargs)


def last_linear(model: nn.Module) -> nn.Linear:
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UsageError(f"{type(model).__name__} has no linear classifier to take features from")
    return linears[-1]


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate-layer features: the input of the model's last linear layer, flattened."""
    captured: list[torch.Tensor] = []
    handle = last_linear(model).register_forward_hook(lambda m, args, out: captured.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


def embed_real(model: nn.Module, real_data, indices: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Penultimate-layer features [n, d] (float32) of the real images at `indices` (a `RealData`),
    computed in batches on the data's device."""
    import torch

    with torch.no_grad():
        return torch.cat([embed(model, real_data.get(chunk)).float() for chunk in indices.split(batch_size)])


def has_batchnorm(model: nn.Module) -> bool:
    from torch import nn

    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


__all__ = [
    "ModelEntry",
    "create_model",
    "describe",
    "embed",
    "embed_real",
    "has_batchnorm",
    "is_known",
    "last_linear",
    "list_models",
]
