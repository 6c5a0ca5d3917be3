"""`rd3h ablate`: the order and grouping of the steps, the attribution arithmetic, and one small
end-to-end walk on the smoke protocol."""

from __future__ import annotations

import copy
import json
import random

import pytest
import yaml
from typer.testing import CliRunner

from rd3_harness.analysis.ablate import ORDER, deltas, plan, run_ablation
from rd3_harness.cli import app
from rd3_harness.errors import UsageError
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol import Protocol, diff_settings, protocol_hash
from rd3_harness.protocol.library import resolve_protocol

runner = CliRunner()


@pytest.fixture(scope="module")
def smoke() -> dict:
    protocol, _ = resolve_protocol(get_plugins().registries, "cpu/smoke.v1")
    return protocol.model_dump(mode="json")


def variant(base: dict, **evaluation) -> dict:
    data = copy.deepcopy(base)
    data["evaluation"].update(evaluation)
    return data


def legacy_like(smoke: dict) -> Protocol:
    """The smoke protocol with hard labels, another batch size, epochs, schedule, augmentation and report."""
    return Protocol.model_validate(
        variant(
            smoke,
            labels={"kind": "hard"},
            loss={"kind": "ce"},
            students=[{"architecture": "convnet_d1_w32_bn", "batch_size": 5}],
            epochs=10,
            schedule={"kind": "cosine", "zeta": 2},
            augmentation={"horizontal_flip": True},
            report={"mode": "best", "every": 2, "last_fraction": 0.5},
            seeds=[7],
        )
    )


def test_steps_follow_the_documented_order_and_group_coupled_settings(smoke):
    a, b = legacy_like(smoke), Protocol.model_validate(smoke)
    steps = plan(a, b).steps
    assert [s.groups for s in steps] == [
        (),
        ("labels", "loss"),  # hard labels need the ce loss: one step
        ("batch_size",),  # the evaluation's and the student's batch size together
        ("epochs",),
        ("schedule",),
        ("augmentation",),
        ("report",),
    ]
    keys = [g.key for g in ORDER]
    flat = [k for s in steps for k in s.groups]
    assert flat == sorted(flat, key=keys.index)
    assert steps[-1].hash == protocol_hash(b)
    assert steps[0].protocol.evaluation.seeds == b.evaluation.seeds  # the target's seeds throughout
    start = Protocol.model_validate(variant(a.model_dump(mode="json"), seeds=[0]))
    assert steps[0].hash == protocol_hash(start)
    applied = [c.path for s in steps for c in s.changes]
    assert sorted(applied) == sorted(c.path for c in diff_settings(start, b))
    assert len({s.hash for s in steps}) == len(steps)


def test_synthesis_only_settings_ride_with_the_first_step(smoke):
    b = Protocol.model_validate(smoke)
    a = Protocol.model_validate({**variant(smoke, epochs=10), "synthesis_seed": 3, "synthesis_teachers": []})
    steps = plan(a, b).steps
    assert steps[1].groups == ("epochs", "synthesis")
    assert {"synthesis_seed", "evaluation.epochs"} <= {c.path for c in steps[1].changes}


def test_refuses_other_data_and_identical_settings(smoke):
    b = Protocol.model_validate(smoke)
    with pytest.raises(UsageError, match="dataset and IPC must agree"):
        plan(Protocol.model_validate({**smoke, "ipc": 3}), b)
    with pytest.raises(UsageError, match="nothing to ablate"):
        plan(Protocol.model_validate({**smoke, "name": "other"}), b)
    with pytest.raises(UsageError, match="--student"):
        plan(legacy_like(smoke), b, student="resnet18")


def test_attribution_adds_up(smoke):
    a, b = legacy_like(smoke), Protocol.model_validate(smoke)
    p = plan(a, b)
    rng = random.Random(0)
    seen = []

    def evaluate(step):
        seen.append(step.index)
        return f"run-{step.index}", False, {0: rng.random()}

    result = run_ablation(p, evaluate, method="m", synset_sha256="0" * 64, source_ref="a", target_ref="b")
    assert seen == list(range(len(p.steps)))
    means = [r.mean for r in result.results]
    assert [r.delta for r in result.results] == deltas(means)
    assert result.results[0].delta is None
    for prev, r in zip(result.results, result.results[1:]):
        assert r.delta == r.mean - prev.mean
    data = result.as_dict()
    assert data["total_change"] == means[-1] - means[0]
    assert data["sum_of_deltas"] == pytest.approx(data["total_change"], abs=1e-12)
    assert [s["index"] for s in data["steps"]] == seen
    # best-of-run until the "reported epoch" step, which moves to the final epoch
    flags = [s["test_set_selection"] for s in data["steps"]]
    assert flags == [s.protocol.evaluation.report.mode == "best" for s in p.steps]
    assert flags[0] and not flags[-1]
    with pytest.raises(Exception, match="no result for seed"):
        run_ablation(p, lambda step: ("r", False, {}), method="m", synset_sha256="0", source_ref="a", target_ref="b")


def test_ablate_end_to_end_on_cpu_protocols(smoke, rd3_settings, smoke_workspace, tmp_path, monkeypatch):
    small = variant(smoke, epochs=2)
    source = tmp_path / "from.yaml"
    target = tmp_path / "to.yaml"
    source.write_text(yaml.safe_dump({**variant(small, batch_size=20), "name": "tiny-legacy"}))
    target.write_text(yaml.safe_dump({**small, "name": "tiny-standard"}))
    out = tmp_path / "out"
    monkeypatch.setenv("RD3_HOME", str(rd3_settings.home))
    monkeypatch.setenv("RD3_DEVICE", "cpu")
    args = ["ablate", "--plugin", "random", "--from", str(source), "--to", str(target), "-o", str(out)]
    first = runner.invoke(app, [*args, "--json", "--chart", str(tmp_path / "ablation.png")])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert [s["label"] for s in data["steps"]] == ["from tiny-legacy", "batch size"]
    assert [s["reused"] for s in data["steps"]] == [False, False]
    assert data["sum_of_deltas"] == pytest.approx(data["total_change"], abs=1e-12)
    assert data["steps"][-1]["protocol_hash"] == protocol_hash(Protocol.model_validate(small))
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(open(data["saved"]).read())["steps"] == data["steps"]
    again = runner.invoke(app, args)  # every step is in the store now: nothing is trained again
    assert again.exit_code == 0, again.output
    assert "batch size" in again.stdout and "(stored)" in again.stdout
    assert "total change" in again.output
