"""The plugin kit's fixtures and helpers: the real-data slice, the teacher, hand-made contexts, the
config checks and the meta-device probe."""

from __future__ import annotations

import pytest
import torch
from pydantic import BaseModel, field_serializer, model_validator

from rd3_harness.testing import SMOKE_IMAGES_PER_CLASS, config_problems


class Steps(BaseModel, frozen=True, extra="forbid"):
    steps: int = 3


def test_smoke_real_data_is_a_slice_of_the_training_set(smoke_real_data, smoke_workspace):
    assert len(smoke_real_data) == 10 * SMOKE_IMAGES_PER_CLASS
    first = smoke_workspace.train.class_indices(3)[:SMOKE_IMAGES_PER_CLASS]
    assert torch.equal(smoke_real_data.get(smoke_real_data.class_indices(3)), smoke_workspace.train.get(first))


def test_smoke_teacher_is_the_protocols_teacher(smoke_teacher, smoke_workspace, smoke_real_data):
    assert not smoke_teacher.training
    assert smoke_teacher is smoke_workspace.teacher(smoke_workspace.protocol.teacher).model
    x = smoke_real_data.get(torch.arange(0, 1000, 50))
    with torch.no_grad():
        assert smoke_teacher(x).shape == (20, 10)


def test_smoke_context_gives_what_the_runner_gives(smoke_context, smoke_real_data, smoke_teacher):
    ctx = smoke_context(Steps(steps=5))
    weights = ctx.make_model("convnet_d1_w32_bn").state_dict()["classifier.weight"]
    assert torch.equal(
        weights, smoke_context(Steps()).make_model("convnet_d1_w32_bn").state_dict()["classifier.weight"]
    )
    assert (ctx.ipc, ctx.num_classes, ctx.image_shape, ctx.seed, ctx.config.steps) == (2, 10, (1, 28, 28), 0, 5)
    assert ctx.real_data is smoke_real_data and ctx.teacher is smoke_teacher
    assert ctx.workdir.is_dir() and ctx.device == torch.device("cpu")
    pixels = torch.rand(2, 1, 28, 28, generator=ctx.generator)
    assert torch.allclose(ctx.denormalize(ctx.normalize(pixels)), pixels, atol=1e-6)
    bare = smoke_context(Steps(), real_data=False, teacher=False, seed=7)
    assert (bare.real_data, bare.teacher, bare.teachers, bare.seed) == (None, None, (), 7)


def test_context_on_another_device_moves_data_and_teacher(smoke_context):
    ctx = smoke_context(Steps(), device="meta")
    assert ctx.real_data.sample(0, 2, generator=ctx.generator).device.type == "meta"
    assert next(ctx.teacher.parameters()).device.type == "meta"
    assert ctx.make_model("convnet_d1_w32_bn")(torch.zeros(2, 1, 28, 28, device="meta")).shape == (2, 10)


def test_config_checks_look_at_behaviour_not_flags():
    class Strips(BaseModel, frozen=True, extra="forbid"):
        steps: int = 1

        @model_validator(mode="before")
        @classmethod
        def _drop_unknown(cls, data):
            return {k: v for k, v in data.items() if k in cls.model_fields}

    class Lossy(BaseModel, frozen=True, extra="forbid"):
        size: float = 0.5

        @field_serializer("size")
        def _percent(self, value: float) -> str:
            return f"{100 * value}%"

    assert config_problems(Steps, Steps()) == []
    assert config_problems(Strips, Strips()) == [
        "config: Strips accepts an unknown key (a typo in a protocol would pass silently); "
        "declare it as `class Config(BaseModel, frozen=True, extra='forbid')`"
    ]
    assert "({'size': '50.0%'}) does not validate back to the same config" in config_problems(Lossy, Lossy())[0]


def test_meta_probe_reads_zeros_and_stops_endless_loops():
    from rd3_harness.kit.conformance import _deadline, _MetaProbe, _ProbeTimeout

    x = torch.ones(2, 3, device="meta")
    with _MetaProbe():
        assert (float(x.sum()), x.sum().item(), bool(x.any()), f"{x.sum():.2f}") == (0.0, 0.0, False, "0.00")
        assert x.tolist() == [[0.0] * 3] * 2 and x.cpu().device.type == "cpu" and x.to("cpu").shape == (2, 3)
        assert x.to(torch.float16).device.type == "meta"
    with pytest.raises(_ProbeTimeout), _deadline(0.2), _MetaProbe():
        while not bool(x.all()):  # always False on meta: the deadline ends it
            pass
