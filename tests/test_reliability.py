"""Crashes, concurrency and faults: a killed run resumes to the same numbers, concurrent runs all
record, a failing plugin or training step leaves a consistent store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from rd3_harness import hookimpl
from rd3_harness.cli import app
from rd3_harness.models.convnet import ConvNet
from rd3_harness.plugins import get_plugins
from rd3_harness.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "protocols" / "cpu" / "smoke.v1.yaml"


def smoke_variant(tmp_path: Path, name: str = "p.yaml", **evaluation) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    data["evaluation"].update(evaluation)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def cli_env(rd3_settings, out: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RD3_HOME": str(rd3_settings.home),
        "RD3_OUT": str(out),
        "RD3_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def rd3h(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rd3_harness", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


def test_sigkill_mid_training_resumes_to_the_same_records(rd3_settings, smoke_workspace, tmp_path):
    protocol = smoke_variant(tmp_path, epochs=60, seeds=[0, 1, 2])
    args = ("run", "--plugin", "random", "-p", str(protocol), "--json")
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    env = cli_env(rd3_settings, killed_out, RD3_CHECKPOINT_EVERY="5")
    proc = rd3h(*args, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(killed_out.glob("checkpoints/*/seed1-*.pt")):  # seed 0 recorded, seed 1 half-trained
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store.in_folder(killed_out)
    (interrupted,) = store.runs()
    assert interrupted.state == "interrupted"  # never reported as complete
    assert [(r.seed, r.attempt) for r in store.records()] == [(0, 1)]

    resumed = finish(rd3h(*args, env=env))
    clean = finish(rd3h(*args, env=cli_env(rd3_settings, clean_out)))
    assert resumed["run"]["run_id"] == interrupted.run_id and resumed["run"]["attempt"] == 2
    by_seed = {r["seed"]: r for r in resumed["records"]}
    assert by_seed[0]["attempt"] == 1  # finished evaluation not repeated
    assert by_seed[1]["attempt"] == 2 and by_seed[1]["resumed_from_epoch"] >= 5
    assert by_seed[2]["attempt"] == 2 and by_seed[2]["resumed_from_epoch"] is None
    keys = ("seed", "top1", "top5", "final_top1", "final_loss", "steps")
    assert [[r[k] for k in keys] for r in resumed["records"]] == [[r[k] for k in keys] for r in clean["records"]]
    assert resumed["run"]["status"] == "complete"
    assert not list(killed_out.glob("checkpoints/*/*.pt"))


def test_concurrent_runs_share_one_store(rd3_settings, smoke_workspace, tmp_path):
    out = tmp_path / "shared"
    protocol = smoke_variant(tmp_path, epochs=4)
    procs = [
        rd3h(
            "run",
            "--plugin",
            "random",
            "-p",
            str(protocol),
            "--seeds",
            str(seed),
            "--json",
            env=cli_env(rd3_settings, out),
        )
        for seed in (0, 1, 2)
    ]
    runs = [finish(p) for p in procs]
    store = Store.in_folder(out)
    assert len({r["run"]["run_id"] for r in runs}) == 3
    assert sorted(r.seed for r in store.records()) == [0, 1, 2]
    assert sorted(r.status for r in store.runs()) == ["complete"] * 3
    assert store.integrity() == "ok"


class Flaky(nn.Module):
    """A student that fails on its 5th training step."""

    calls = 0

    def __init__(self, num_classes: int, in_channels: int, resolution: int):
        super().__init__()
        self.net = ConvNet(num_classes, in_channels, resolution, width=8, depth=1, norm="batch")

    def forward(self, x):
        if self.training:
            Flaky.calls += 1
            if Flaky.calls == 5:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.net(x)


def test_failing_training_step_is_recorded_and_the_rerun_continues(
    rd3_settings, smoke_workspace, tmp_path, monkeypatch
):
    module = types.ModuleType("flaky_models")
    module.register_models = hookimpl(lambda register: register("flaky", Flaky, description="fails once"))
    get_plugins().add("flaky-models", module)
    protocol = smoke_variant(tmp_path, epochs=3, students=[{"architecture": "flaky"}])
    for key, value in cli_env(rd3_settings, tmp_path / "out").items():
        monkeypatch.setenv(key, value)
    first = CliRunner().invoke(app, ["run", "--plugin", "random", "-p", str(protocol)])
    assert first.exit_code == 1
    assert "training flaky with seed 0 failed at epoch 3: OutOfMemoryError" in first.output
    store = Store.in_folder(tmp_path / "out")
    (failed,) = store.runs()
    assert failed.status == "failed" and "OutOfMemoryError" in failed.error and store.records() == []
    second = CliRunner().invoke(app, ["run", "--plugin", "random", "-p", str(protocol), "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["run"]["run_id"] == failed.run_id
    assert store.integrity() == "ok"


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_plugin_fault_is_a_failed_attempt(rd3_settings, smoke_workspace, tmp_path, monkeypatch, error):
    from rd3_harness import MethodInfo
    from rd3_harness.default_plugins.random_real import Config

    module = types.ModuleType("faulty")
    module.method_info = hookimpl(lambda: MethodInfo(name="faulty", summary="raises", config_model=Config))

    def synthesize(ctx):
        raise error()

    module.synthesize = hookimpl(synthesize)
    get_plugins().add("faulty", module)
    for key, value in cli_env(rd3_settings, tmp_path / "out").items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["run", "--plugin", "faulty", "-p", "cpu/smoke.v1"])
    assert result.exit_code == 1 and "plugin 'faulty' failed during synthesize" in result.output
    (run,) = Store.in_folder(tmp_path / "out").runs()
    assert run.status == "failed" and run.synset is None
