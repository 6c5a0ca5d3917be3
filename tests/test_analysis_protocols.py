"""The protocol library: rd3/ (the RD³ standard), legacy/ (each method's original evaluation) and
the CPU transpositions cpu/legacy-*."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol import diff_settings
from rd3_harness.protocol.library import resolve_protocol

runner = CliRunner()
DATASETS = ("cifar10", "cifar100", "tiny-imagenet", "imagenette", "imagewoof", "imagenet-1k")
LEGACY = ("sre2l", "cda", "rded", "gvbsm", "edc", "lpld", "sc-dd", "dwa")


def library(prefix: str) -> list[str]:
    return sorted(n for n in get_plugins().registries.protocols if n.startswith(prefix))


def test_every_library_protocol_validates():
    names = library("rd3/") + library("legacy/") + library("cpu/legacy-")
    assert len(names) >= 12 * 2 + 8
    result = runner.invoke(app, ["protocol", "validate", "--json", *names])
    assert result.exit_code == 0, result.output
    for name in names:
        protocol, path = resolve_protocol(get_plugins().registries, name)
        assert protocol.name == name.removesuffix(".v1") and path.name == name.split("/")[1] + ".yaml"
        assert protocol.description.strip() and protocol.citation


@pytest.mark.parametrize("dataset", DATASETS)
def test_rd3_standard(dataset):
    for ipc in (10, 50):
        p, _ = resolve_protocol(get_plugins().registries, f"rd3/{dataset}-ipc{ipc}.v1")
        ev = p.evaluation
        assert (p.dataset.name, p.ipc, ev.epochs, ev.report.mode) == (dataset, ipc, 400, "final")
        assert ev.labels.kind == "online" and not ev.labels.teachers and ev.loss.kind == "kl"
        assert ev.batch_size == 50 and (ev.optimizer.kind, ev.optimizer.lr) == ("adamw", 1e-3)
        assert ev.schedule.kind == "cosine" and ev.schedule.zeta == 1
        assert ev.augmentation.horizontal_flip and ev.augmentation.mix.kind == "cutmix"
        assert p.teacher.architecture in ("resnet18", "resnet18_cifar") and p.synthesis_teachers
        if dataset == "imagenet-1k":
            assert (p.teacher.kind, p.teacher.weights) == ("torchvision", "IMAGENET1K_V1")
        else:
            assert p.teacher.kind == "trained"
        for s in ev.students:
            resnet = s.architecture.startswith("resnet")
            assert (s.schedule is None) == resnet
            if not resnet:
                assert s.schedule.zeta == 2 and s.optimizer.kind == "adamw"
        assert len(ev.students) == 7


def test_legacy_protocols_keep_each_methods_choices():
    rded, _ = resolve_protocol(get_plugins().registries, "legacy/rded-imagenet-1k-ipc10.v1")
    assert rded.evaluation.report.model_dump() == {"mode": "best", "every": 10, "last_fraction": 0.2}
    assert rded.evaluation.schedule.zeta == 2 and rded.evaluation.batch_size == 100
    sre2l, _ = resolve_protocol(get_plugins().registries, "legacy/sre2l-imagenet-1k-ipc10.v1")
    assert (sre2l.evaluation.labels.kind, sre2l.evaluation.batch_size, sre2l.evaluation.epochs) == ("fkd", 1024, 300)
    gvbsm, _ = resolve_protocol(get_plugins().registries, "legacy/gvbsm-imagenet-1k-ipc10.v1")
    assert gvbsm.evaluation.labels.combine == "norm_mean" and len(gvbsm.evaluation.labels.teachers) == 4
    assert gvbsm.evaluation.loss.kind == "mse_ce"
    edc, _ = resolve_protocol(get_plugins().registries, "legacy/edc-imagenet-1k-ipc10.v1")
    assert edc.evaluation.student_ema == 0.99 and edc.evaluation.loss.gamma == 0.025
    for method in LEGACY:
        assert library(f"legacy/{method}-imagenet-1k-ipc10")


def test_diff_sre2l_legacy_to_the_standard_shows_what_the_paper_discusses():
    result = runner.invoke(
        app, ["protocol", "diff", "legacy/sre2l-imagenet-1k-ipc10.v1", "rd3/imagenet-1k-ipc10.v1", "--json"]
    )
    assert result.exit_code == 0, result.output
    paths = {c["path"] for c in json.loads(result.stdout)["settings"]}
    for setting in (
        "evaluation.batch_size",
        "evaluation.epochs",
        "evaluation.labels.kind",
        "evaluation.augmentation.random_resized_crop.scale",
        "evaluation.augmentation.shuffle_patches",
        "evaluation.students[3].schedule.zeta",
    ):
        assert setting in paths, setting


@pytest.mark.parametrize("method", LEGACY)
def test_cpu_transpositions_reuse_the_standards_synthetic_sets(method):
    standard, _ = resolve_protocol(get_plugins().registries, "cpu/fmnist-ipc10.v1")
    legacy, _ = resolve_protocol(get_plugins().registries, f"cpu/legacy-{method}.v1")
    for key in ("dataset", "ipc", "teacher", "synthesis_teachers", "synthesis_seed"):
        assert getattr(legacy, key) == getattr(standard, key), key
    assert legacy.evaluation.students == standard.evaluation.students
    assert {c.path.split(".")[0] for c in diff_settings(standard, legacy)} == {"evaluation"}


# The CIFAR recipes shared/reference/METHODS.md gives (SRe2L and SC-DD have CIFAR-100 code only;
# CDA and LPLD have none there), plus DWA's, read from its own code (METHODS.md has no DWA section).
LEGACY_CIFAR = {
    "sre2l": ("cifar100",),
    "rded": ("cifar10", "cifar100"),
    "gvbsm": ("cifar10", "cifar100"),
    "edc": ("cifar10", "cifar100"),
    "sc-dd": ("cifar100",),
    "dwa": ("cifar10", "cifar100"),
}


def test_legacy_cifar_protocols_are_the_ones_with_a_known_recipe():
    shipped = {n for n in library("legacy/") if "-cifar" in n}
    expected = {f"legacy/{m}-{d}-ipc10.v1" for m, ds in LEGACY_CIFAR.items() for d in ds}
    assert shipped == expected


@pytest.mark.parametrize(("method", "dataset"), [(m, d) for m, ds in LEGACY_CIFAR.items() for d in ds], ids=lambda x: x)
def test_legacy_cifar_protocols_share_the_standards_data_and_teacher(method, dataset):
    legacy, _ = resolve_protocol(get_plugins().registries, f"legacy/{method}-{dataset}-ipc10.v1")
    standard, _ = resolve_protocol(get_plugins().registries, f"rd3/{dataset}-ipc10.v1")
    for key in ("dataset", "ipc", "teacher", "synthesis_seed"):
        assert getattr(legacy, key) == getattr(standard, key), key
    assert set(legacy.synthesis_teachers) <= set(standard.synthesis_teachers)
    assert legacy.evaluation.seeds == (0, 1, 2)


def test_legacy_cifar_protocols_keep_each_methods_choices():
    def ev(method, dataset):
        return resolve_protocol(get_plugins().registries, f"legacy/{method}-{dataset}-ipc10.v1")[0].evaluation

    sre2l = ev("sre2l", "cifar100")
    assert (sre2l.labels.kind, sre2l.loss.temperature, sre2l.augmentation.mix.kind) == ("online", 30, "mixup")
    assert (sre2l.batch_size, sre2l.epochs, sre2l.report.mode) == (128, 400, "final")
    for dataset, batch in (("cifar10", 50), ("cifar100", 100)):
        rded = ev("rded", dataset)
        assert (rded.batch_size, rded.epochs, rded.schedule.zeta, rded.loss.temperature) == (batch, 300, 2, 20)
        assert rded.report.model_dump() == {"mode": "best", "every": 10, "last_fraction": 0.2}
        assert rded.augmentation.shuffle_patches is None and rded.augmentation.mix.kind == "cutmix"
    for dataset, batch, optimizer in (("cifar10", 100, "adamw"), ("cifar100", 64, "sgd")):
        gvbsm = ev("gvbsm", dataset)
        assert (gvbsm.labels.kind, gvbsm.labels.combine, len(gvbsm.labels.teachers)) == ("fkd", "mean", 4)
        assert (gvbsm.loss.kind, gvbsm.loss.gamma, gvbsm.epochs, gvbsm.batch_size) == ("mse_ce", 0.15, 1000, batch)
        assert gvbsm.optimizer.kind == optimizer
    assert ev("gvbsm", "cifar100").students[0].architecture == "convnet"
    edc10, edc100 = ev("edc", "cifar10"), ev("edc", "cifar100")
    for edc in (edc10, edc100):
        assert (edc.labels.kind, edc.loss.kind, edc.loss.gamma, edc.student_ema, edc.epochs) == (
            "online",
            "mse_ce",
            0.025,
            0.99,
            1000,
        )
    assert (edc10.schedule.kind, edc10.schedule.milestones, edc10.batch_size) == ("multistep", (800, 900, 950), 25)
    assert len(edc10.labels.teachers) == 7 and len(edc100.labels.teachers) == 4
    assert (edc100.optimizer.kind, edc100.schedule.zeta, edc100.batch_size) == ("sgd", 2, 50)
    scdd = ev("sc-dd", "cifar100")
    assert (scdd.schedule.zeta, scdd.loss.temperature, scdd.epochs, scdd.batch_size) == (3, 30, 200, 64)
    assert scdd.augmentation.mix.kind == "mixup" and scdd.report.mode == "best"
    for dataset in ("cifar10", "cifar100"):
        dwa = ev("dwa", dataset)
        assert (dwa.labels.kind, dwa.loss.temperature, dwa.loss.t_squared) == ("online", 30, False)
        assert (dwa.optimizer.kind, dwa.optimizer.lr, dwa.optimizer.no_decay_1d) == ("adamw", 0.001, False)
        assert (dwa.batch_size, dwa.epochs, dwa.schedule.zeta) == (128, 400, 1)
        assert (dwa.augmentation.mix.kind, dwa.augmentation.mix.alpha) == ("mixup", 0.8)
        assert dwa.report.model_dump() == {"mode": "best", "every": 10, "last_fraction": 1.0}
