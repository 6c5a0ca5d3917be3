"""The post-evaluation engine on real Fashion-MNIST images with the smoke teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rd3_harness.protocol.schema import Cosine, KLLoss, MSECELoss, MultiStep, Protocol, SoftCELoss
from rd3_harness.training.losses import Targets, compute_loss
from rd3_harness.training.optim import lr_multiplier
from rd3_harness.training.trainer import Engine


def variant(protocol: Protocol, **evaluation) -> Protocol:
    data = protocol.model_dump(mode="json")
    data["evaluation"].update(evaluation)
    return Protocol.model_validate(data)


@pytest.fixture(scope="module")
def setup(smoke_workspace):
    ws = smoke_workspace
    idx = torch.cat([ws.train.sample_indices(c, 2, torch.Generator().manual_seed(c)) for c in range(10)])
    teacher = ws.teacher(ws.protocol.teacher).model
    test = ws.test.subset(torch.arange(0, 10_000, 10))  # 1000 test images keep the tests fast
    return ws, ws.train.get(idx), ws.train.labels[idx], teacher, test


def engine(setup, protocol, **kw) -> Engine:
    ws, images, labels, teacher, test = setup
    teachers = [] if protocol.evaluation.labels.kind == "hard" else [teacher]
    models = ws.registries.models
    return Engine(
        protocol, images, labels, teachers, test, models=models, device=torch.device("cpu"), fill=ws.fill(), **kw
    )


def test_schedules_follow_their_formulas():
    assert lr_multiplier(Cosine(zeta=1), 0, 100) == 1.0
    assert lr_multiplier(Cosine(zeta=1), 50, 100) == pytest.approx(0.5)
    assert lr_multiplier(Cosine(zeta=1), 100, 100) == pytest.approx(0.0)
    assert lr_multiplier(Cosine(zeta=2), 100, 100) == pytest.approx(0.5)
    e = 37
    assert lr_multiplier(Cosine(zeta=1.5), e, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * e / 150)))
    assert lr_multiplier(Cosine(warmup_epochs=4), 0, 100) == pytest.approx(0.2)
    assert lr_multiplier(Cosine(warmup_epochs=4), 4, 100) == 1.0
    assert [lr_multiplier(MultiStep(milestones=(80, 90), gamma=0.5), e, 100) for e in (79, 80, 95)] == [1, 0.5, 0.25]


def test_losses_match_their_definitions():
    torch.manual_seed(0)
    s, t = torch.randn(6, 10), torch.randn(6, 10)
    y = torch.randint(0, 10, (6,))
    perm = torch.randperm(6)
    online = Targets(y, y[perm], 0.7, logits=t)
    kl = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    assert compute_loss(KLLoss(temperature=4), s, online) == pytest.approx(kl.item())
    assert compute_loss(KLLoss(temperature=4, t_squared=True), s, online) == pytest.approx(16 * kl.item())
    sce = -(F.softmax(t / 2, 1) * F.log_softmax(s / 2, 1)).sum(1).mean()
    assert compute_loss(SoftCELoss(temperature=2), s, online) == pytest.approx(sce.item())
    mse = F.mse_loss(s, t) + 0.1 * F.cross_entropy(s, y)
    assert compute_loss(MSECELoss(gamma=0.1), s, online) == pytest.approx(mse.item())
    static = Targets(y, y[perm], 0.7, static_a=t, static_b=t[perm])
    mixed = 0.7 * F.softmax(t, 1) + 0.3 * F.softmax(t[perm], 1)
    expected = F.kl_div(F.log_softmax(s, 1), mixed, reduction="batchmean")
    assert compute_loss(KLLoss(), s, static) == pytest.approx(expected.item())


def test_same_seed_same_accuracy_and_different_seed_differs(setup, smoke_protocol):
    p = variant(smoke_protocol, epochs=6, seeds=[0, 1])
    a, b = engine(setup, p).run(), engine(setup, p).run()
    assert [(r.top1, r.final_loss) for r in a] == [(r.top1, r.final_loss) for r in b]
    assert a[0].final_loss != a[1].final_loss


def test_teacher_reuse_one_pass_per_batch_and_same_numbers(setup, smoke_protocol):
    students = [{"architecture": a} for a in ("convnet_d1_w32_bn", "convnet_d1_w32_none", "convnet_d2_w32_in")]
    p = variant(smoke_protocol, epochs=3, students=students)
    shared = engine(setup, p, teacher_reuse=True)
    together = shared.run()
    separate = engine(setup, p, teacher_reuse=False)
    alone = separate.run()
    steps = together[0].steps
    assert shared.teacher.calls == steps  # one teacher pass per batch for 3 students
    assert separate.teacher.calls == 3 * steps
    assert [(r.student, r.top1, r.final_loss) for r in together] == [(r.student, r.top1, r.final_loss) for r in alone]


def test_fkd_replays_one_stream_and_stores_fp16(setup, smoke_protocol):
    p = variant(smoke_protocol, epochs=4, seeds=[0, 1], labels={"kind": "fkd", "seed": 42})
    e = engine(setup, p)
    results = e.run()
    steps_per_epoch = math.ceil(20 / 10)
    assert e.teacher.calls == 4 * steps_per_epoch  # precomputed once, replayed for both seeds
    assert e.provider.storage_bytes == 4 * 20 * 10 * 2
    assert {r.seed for r in results} == {0, 1}


def test_best_of_run_is_flagged_and_is_the_max(setup, smoke_protocol):
    p = variant(smoke_protocol, epochs=8, report={"mode": "best", "every": 2, "last_fraction": 0.5})
    (r,) = engine(setup, p).run()
    assert r.test_set_selection
    assert [c[0] for c in r.checks] == [4, 6]
    assert r.top1 == max([c[1] for c in r.checks] + [r.final_top1])


def test_student_ema_changes_the_evaluated_weights(setup, smoke_protocol):
    plain = engine(setup, variant(smoke_protocol, epochs=4)).run()[0]
    ema = engine(setup, variant(smoke_protocol, epochs=4, student_ema=0.9)).run()[0]
    assert plain.final_loss == ema.final_loss  # same training...
    assert plain.top1 != ema.top1  # ...different evaluated weights
