"""`rd3h run` / `rd3h evaluate` end to end on the smoke protocol, and the core's guard."""

from __future__ import annotations

import json
import time
import types

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rd3_harness import MethodInfo, SyntheticSet, hookimpl
from rd3_harness.cli import app
from rd3_harness.default_plugins.random_real import Config
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.io import protocol_hash
from rd3_harness.protocol.library import protocol_path
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.store import Store

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["run", "-p", "cpu/smoke.v1", *args])


def test_run_records_every_field_and_repeats_exactly(env, smoke_workspace):
    first = run("--plugin", "random", "--json")
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    run_doc, (record,) = doc["run"], doc["records"]
    assert run_doc["status"] == "complete" and run_doc["protocol_hash"] == smoke_workspace.hash
    for field in (
        "protocol",
        "plugin",
        "method_config_hash",
        "synset",
        "teacher",
        "synthesis",
        "environment",
        "summary",
    ):
        assert run_doc[field], field
    assert len(run_doc["synset"]["sha256"]) == 64 and len(run_doc["teacher"]["sha256"]) == 64
    assert run_doc["environment"]["torch"] == torch.__version__
    assert record["protocol_hash"] == run_doc["protocol_hash"] and not record["test_set_selection"]
    assert 0.1 < record["top1"] <= 1 and record["top5"] >= record["top1"]
    again = json.loads(run("--plugin", "random", "--json").stdout)
    assert again["run"]["synset"]["reused"] is True
    assert again["records"][0]["top1"] == record["top1"]
    result = run("--plugin", "random", "--json", "--fresh")
    fresh = json.loads(result.stdout)
    assert fresh["run"]["synset"]["sha256"] == run_doc["synset"]["sha256"]  # same seed, same images
    # stderr is no terminal here (as under nohup or Slurm): progress comes as plain lines
    assert "seed 0: convnet_d1_w32_bn: 20/20 in" in result.stderr
    assert fresh["records"][0]["top1"] == record["top1"]
    store = Store.in_folder(env)
    assert len(store.runs(status="complete")) == 3
    listed = runner.invoke(app, ["results", "list"])
    assert "complete" in listed.stdout and run_doc["protocol_hash"][:12] in listed.stdout


def test_seeds_option_makes_a_new_protocol(env):
    result = json.loads(run("--plugin", "random", "--seeds", "3,4", "--json").stdout)
    assert [r["seed"] for r in result["records"]] == [3, 4]
    assert result["run"]["protocol"]["evaluation"]["seeds"] == [3, 4]


def test_students_option_evaluates_a_subset_under_the_same_hash(env, tmp_path, smoke_workspace):
    data = yaml.safe_load(protocol_path(get_plugins().registries, "cpu/smoke.v1").read_text())
    both = ["convnet_d1_w32_bn", "convnet_d1_w32_in"]
    data["evaluation"].update(epochs=4, students=[{"architecture": a} for a in both])
    path = tmp_path / "two-students.yaml"
    path.write_text(yaml.safe_dump(data))
    full_hash = protocol_hash(Protocol.model_validate(data))

    def run_students(*args: str) -> dict:
        result = runner.invoke(app, ["run", "-p", str(path), "--plugin", "random", *args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    full = run_students()
    assert full["run"]["students"] == both and full["run"]["settings"]["students"] is None
    top1 = {r["student"]: r["top1"] for r in full["records"]}
    narrowed = {}
    for name in reversed(both):
        doc = run_students("--students", name)
        run_doc = doc["run"]
        assert run_doc["protocol_hash"] == full_hash  # a subset, not another protocol
        assert run_doc["status"] == "complete" and run_doc["students"] == [name]
        assert run_doc["settings"]["students"] == [name]
        assert [(r["student"], r["seed"]) for r in doc["records"]] == [(name, 0)]
        assert [s["student"] for s in run_doc["summary"]] == [name]
        assert doc["records"][0]["top1"] == top1[name]  # alone it trains as it did in lockstep
        narrowed[name] = run_doc["run_id"]
    tables = json.loads(runner.invoke(app, ["leaderboard", "--json"]).stdout)
    assert sorted(t["student"] for t in tables) == both and {t["protocol_hash"] for t in tables} == {full_hash}
    for t in tables:  # each student's table ranks its own latest run: the narrowed one
        (entry,) = t["entries"]
        assert entry["run_id"] == narrowed[t["student"]] and entry["values"] == [top1[t["student"]]]
    bad = runner.invoke(app, ["run", "-p", str(path), "--plugin", "random", "--students", "convnet_d1_w32_bn,resnet18"])
    assert bad.exit_code == 2
    assert "resnet18" in bad.output and "its students are convnet_d1_w32_bn, convnet_d1_w32_in" in bad.output
    assert len(Store.in_folder(env).runs()) == 3  # the refused command recorded nothing


def _bad_plugin(name: str, make):
    module = types.ModuleType(name)

    @hookimpl
    def method_info():
        return MethodInfo(name=name, summary="broken output", config_model=Config)

    @hookimpl
    def synthesize(ctx):
        return make(ctx)

    module.method_info, module.synthesize = method_info, synthesize
    return module


def _real(ctx, per_class):
    x = torch.cat([ctx.real_data.sample(c, per_class, generator=ctx.generator) for c in range(ctx.num_classes)])
    return x, torch.arange(ctx.num_classes).repeat_interleave(per_class)


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("short", lambda ctx: SyntheticSet(*_real(ctx, ctx.ipc - 1)), "expected exactly 2 images per class"),
        ("nans", lambda ctx: SyntheticSet(_real(ctx, ctx.ipc)[0] * float("nan"), _real(ctx, ctx.ipc)[1]), "NaN"),
        (
            "shape",
            lambda ctx: SyntheticSet(_real(ctx, ctx.ipc)[0][..., :20], _real(ctx, ctx.ipc)[1]),
            "expected [N, 1, 28, 28]",
        ),
        ("raises", lambda ctx: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_bad_plugin_output_fails_the_run(env, name, make, problem):
    get_plugins().add(name, _bad_plugin(name, make))
    result = run("--plugin", name)
    assert result.exit_code == 1, result.output
    assert f"plugin '{name}'" in result.output and problem in result.output
    assert "Traceback" not in result.output
    store = Store.in_folder(env)
    assert store.runs(status="complete") == []
    assert [r.status for r in store.runs()] == ["failed"]


def test_evaluate_saved_set_and_image_folder(env, tmp_path):
    made = runner.invoke(app, ["synthesize", "--plugin", "random", "-p", "cpu/smoke.v1", "--json"])
    folder = json.loads(made.stdout)["folder"]
    assert (tmp_path / "out").exists() and (json.loads(made.stdout)["manifest"]["count"] == 20)
    evaluated = runner.invoke(app, ["evaluate", folder, "-p", "cpu/smoke.v1", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["run"]["plugin"]["name"] == "random"

    from torchvision.utils import save_image

    from rd3_harness.data.synset import load_synset

    synset, _ = load_synset(__import__("pathlib").Path(folder))
    pixels = (synset.images * 0.3530 + 0.2860).clamp(0, 1)
    images = tmp_path / "imgs"
    for i, (x, y) in enumerate(zip(pixels, synset.labels.tolist())):
        (images / str(y)).mkdir(parents=True, exist_ok=True)
        save_image(x, images / str(y) / f"{i}.png")
    ok = runner.invoke(app, ["evaluate", str(images), "-p", "cpu/smoke.v1", "--name", "pngs", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["run"]["plugin"]["name"] == "pngs"
    next((images / "3").iterdir()).unlink()
    wrong = runner.invoke(app, ["evaluate", str(images), "-p", "cpu/smoke.v1"])
    assert wrong.exit_code == 2 and "expected 2 images in each of 10 classes (3: 1)" in wrong.output
    (images / "12").mkdir()
    unknown = runner.invoke(app, ["evaluate", str(images), "-p", "cpu/smoke.v1"])
    assert unknown.exit_code == 2 and "name no class" in unknown.output


def test_tampered_synthetic_set_is_refused(env):
    made = json.loads(runner.invoke(app, ["synthesize", "--plugin", "random", "-p", "cpu/smoke.v1", "--json"]).stdout)
    from pathlib import Path

    tensors = Path(made["folder"]) / "images.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    result = runner.invoke(app, ["evaluate", made["folder"], "-p", "cpu/smoke.v1"])
    assert result.exit_code == 2 and "does not match the manifest" in result.output


def test_teacher_changes_fail_and_teacher_training_is_not_synthesis_time(env, smoke_workspace, monkeypatch):
    from rd3_harness.runner import synthesize

    def vandal(ctx):
        with torch.no_grad():
            next(ctx.teacher.parameters()).add_(1.0)
        return SyntheticSet(*_real(ctx, ctx.ipc))

    module = _bad_plugin("vandal", vandal)
    module.method_info = hookimpl(
        lambda: MethodInfo(name="vandal", summary="edits the teacher", config_model=Config, needs_teacher=True)
    )
    get_plugins().add("vandal", module)
    result = run("--plugin", "vandal")  # its own workspace: the session's teacher is not touched
    assert result.exit_code == 1 and "changed the weights of the teacher" in result.output

    def reader(ctx):
        assert len(ctx.teachers) == 2 and ctx.teacher is not None
        return SyntheticSet(*_real(ctx, ctx.ipc))

    module = _bad_plugin("reader", reader)
    module.method_info = hookimpl(
        lambda: MethodInfo(name="reader", summary="loads teachers", config_model=Config, needs_teacher=True)
    )
    get_plugins().add("reader", module)
    load = smoke_workspace.teacher

    def slow_load(spec):  # as if the teacher had to be trained first
        time.sleep(0.5)
        return load(spec)

    monkeypatch.setattr(smoke_workspace, "teacher", slow_load)
    cost = synthesize(get_plugins(), smoke_workspace, "reader", reuse=False).manifest["synthesis"]
    assert cost["teacher_load_wall_s"] >= 1.0 and cost["wall_s"] < 0.5
