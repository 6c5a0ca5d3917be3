"""The protocol library: rd3/ (the RD³ standard), legacy/ (each method's original evaluation) and
the CPU transpositions cpu/legacy-*."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rd3_harness.cli import app
from rd3_harness.protocol import diff_settings
from rd3_harness.protocol.library import registered_protocols, resolve_protocol

runner = CliRunner()
DATASETS = ("cifar10", "cifar100", "tiny-imagenet", "imagenette", "imagewoof", "imagenet-1k")
LEGACY = ("sre2l", "cda", "rded", "gvbsm", "edc", "lpld", "sc-dd", "dwa")


def library(prefix: str) -> list[str]:
    return sorted(n for n in registered_protocols() if n.startswith(prefix))


def test_every_library_protocol_validates():
    names = library("rd3/") + library("legacy/") + library("cpu/legacy-")
    assert len(names) >= 12 * 2 + 8
    result = runner.invoke(app, ["protocol", "validate", "--json", *names])
    assert result.exit_code == 0, result.output
    for name in names:
        protocol, path = resolve_protocol(name)
        assert protocol.name == name.removesuffix(".v1") and path.name == name.split("/")[1] + ".yaml"
        assert protocol.description.strip() and protocol.citation


@pytest.mark.parametrize("dataset", DATASETS)
def test_rd3_standard(dataset):
    for ipc in (10, 50):
        p, _ = resolve_protocol(f"rd3/{dataset}-ipc{ipc}.v1")
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
    rded, _ = resolve_protocol("legacy/rded-imagenet-1k-ipc10.v1")
    assert rded.evaluation.report.model_dump() == {"mode": "best", "every": 10, "last_fraction": 0.2}
    assert rded.evaluation.schedule.zeta == 2 and rded.evaluation.batch_size == 100
    sre2l, _ = resolve_protocol("legacy/sre2l-imagenet-1k-ipc10.v1")
    assert (sre2l.evaluation.labels.kind, sre2l.evaluation.batch_size, sre2l.evaluation.epochs) == ("fkd", 1024, 300)
    gvbsm, _ = resolve_protocol("legacy/gvbsm-imagenet-1k-ipc10.v1")
    assert gvbsm.evaluation.labels.combine == "norm_mean" and len(gvbsm.evaluation.labels.teachers) == 4
    assert gvbsm.evaluation.loss.kind == "mse_ce"
    edc, _ = resolve_protocol("legacy/edc-imagenet-1k-ipc10.v1")
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
    standard, _ = resolve_protocol("cpu/fmnist-ipc10.v1")
    legacy, _ = resolve_protocol(f"cpu/legacy-{method}.v1")
    for key in ("dataset", "ipc", "teacher", "synthesis_teachers", "synthesis_seed"):
        assert getattr(legacy, key) == getattr(standard, key), key
    assert legacy.evaluation.students == standard.evaluation.students
    assert {c.path.split(".")[0] for c in diff_settings(standard, legacy)} == {"evaluation"}
