"""Built-in architectures: the ConvNet family and CIFAR-stem ResNets. Registering them imports
no torch; building one does."""

from __future__ import annotations

from collections.abc import Callable

from rd3_harness.hookspecs import hookimpl


def convnet_factory(depth: int, width: int, norm: str) -> Callable:
    def factory(**kwargs):
        from rd3_harness.models.convnet import convnet_factory as build

        return build(depth, width, norm)(**kwargs)

    return factory


def resnet_cifar_factory(arch: str) -> Callable:
    def factory(**kwargs):
        from rd3_harness.models.resnet_cifar import resnet_cifar_factory as build

        return build(arch)(**kwargs)

    return factory


DEPTHS = range(1, 7)
WIDTHS = (32, 64, 128, 256)


@hookimpl
def register_models(register):
    register("convnet", convnet_factory(3, 128, "in"), description="ConvNet-D3-W128, instance norm (DD standard)")
    register("convnet_bn", convnet_factory(3, 128, "bn"), description="ConvNet-D3-W128, batch norm (RDED conv3)")
    for depth in DEPTHS:
        for width in WIDTHS:
            for norm, label in (("in", "instance"), ("bn", "batch"), ("none", "no")):
                register(
                    f"convnet_d{depth}_w{width}_{norm}",
                    convnet_factory(depth, width, norm),
                    description=f"ConvNet depth {depth}, width {width}, {label} norm, avg-pool",
                )
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
        register(
            f"{arch}_cifar",
            resnet_cifar_factory(arch),
            description=f"torchvision {arch} with CIFAR stem (3x3 stride-1 conv1, no max-pool)",
        )
