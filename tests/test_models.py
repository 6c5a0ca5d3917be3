"""The model registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rd3_harness.errors import UsageError
from rd3_harness.models import create_model, embed, has_batchnorm, list_models
from rd3_harness.plugins import get_plugins


@pytest.mark.parametrize(("resolution", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_convnet_family_shapes(resolution, channels):
    for name in ("convnet", "convnet_bn", "convnet_d4_w32_in", "convnet_d1_w64_none"):
        model = create_model(
            get_plugins().registries.models, name, num_classes=7, in_channels=channels, resolution=resolution
        )
        assert model(torch.randn(2, channels, resolution, resolution)).shape == (2, 7)
    assert has_batchnorm(create_model(get_plugins().registries.models, "convnet_bn", num_classes=10))
    gn = create_model(get_plugins().registries.models, "convnet", num_classes=10)
    assert not has_batchnorm(gn) and isinstance(gn.features[1], nn.GroupNorm) and gn.features[1].num_groups == 128


def test_cifar_resnet_stem():
    model = create_model(
        get_plugins().registries.models, "resnet18_cifar", num_classes=10, in_channels=1, resolution=28
    )
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_and_timm_by_name():
    tv = create_model(
        get_plugins().registries.models, "mobilenet_v3_small", num_classes=10, in_channels=1, resolution=32
    )
    assert tv(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    tm = create_model(get_plugins().registries.models, "timm:resnet10t", num_classes=5, in_channels=3, resolution=32)
    assert tm(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert "resnet50" in list_models(get_plugins().registries.models, "resnet*") and "convnet_d3_w64_bn" in list_models(
        get_plugins().registries.models, "convnet*"
    )


def test_unknown_names_are_clear_errors():
    with pytest.raises(UsageError, match="unknown architecture 'resnet9'.*rd3h models list"):
        create_model(get_plugins().registries.models, "resnet9", num_classes=10)
    with pytest.raises(UsageError, match="unknown timm architecture"):
        create_model(get_plugins().registries.models, "timm:not_a_model", num_classes=10)


def test_embed_returns_penultimate_features():
    model = create_model(
        get_plugins().registries.models, "convnet_d2_w32_bn", num_classes=10, in_channels=1, resolution=28
    ).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        feats = embed(model, x)
        assert feats.shape == (3, 32 * 8 * 8)
        assert torch.allclose(model.classifier(feats), model(x))


def test_shipped_torchvision_names_match_the_installed_torchvision():
    import importlib.metadata

    import torchvision

    from rd3_harness.models import TORCHVISION_NAMES, TORCHVISION_NAMES_VERSION

    installed = importlib.metadata.version("torchvision").split("+")[0]
    if installed != TORCHVISION_NAMES_VERSION:
        pytest.skip(f"the list is for torchvision {TORCHVISION_NAMES_VERSION}; {installed} is asked directly")
    assert TORCHVISION_NAMES.read_text().split() == sorted(torchvision.models.list_models(module=torchvision.models))
