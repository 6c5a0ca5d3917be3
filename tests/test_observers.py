"""Lifecycle observer hooks and the trackers built on them, end to end on the smoke protocol."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rd3_harness import hookimpl
from rd3_harness.cli import app
from rd3_harness.plugins import get_plugins

runner = CliRunner()


def run(*args: str) -> dict:
    result = runner.invoke(app, ["run", "-p", "cpu/smoke.v1", "--plugin", "random", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Recorder:
    """Records every call, and tries to change what it is handed."""

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    def run_started(self, run, protocol):
        self.calls.append(("run_started", run.run_id, protocol.name))
        run.status = "tampered"

    @hookimpl
    def epoch_finished(self, student, seed, epoch, metrics):
        self.calls.append(("epoch_finished", student, seed, epoch, dict(metrics)))

    @hookimpl
    def evaluation_finished(self, record):
        self.calls.append(("evaluation_finished", record.student, record.top1))
        record.top1 = 1.0

    @hookimpl
    def run_finished(self, run, records):
        self.calls.append(("run_finished", run.status, len(records)))
        records.clear()


class Raiser:
    @hookimpl
    def epoch_finished(self, epoch):
        raise RuntimeError(f"boom at {epoch}")

    @hookimpl
    def evaluation_finished(self):
        raise ValueError("no")


@pytest.fixture(scope="module")
def observed(rd3_settings, tmp_path_factory):
    """One plain run, one observed by a recorder and one by a raiser, same command."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RD3_HOME", str(rd3_settings.home))
    mp.setenv("RD3_DEVICE", "cpu")
    mp.setenv("RD3_OUT", str(tmp_path_factory.mktemp("observed")))
    plain = run("--restart")
    recorder = Recorder()
    get_plugins().add("recorder", recorder)
    recorded = run("--restart")
    get_plugins().pm.unregister(name="recorder")
    get_plugins().add("raiser", Raiser())
    with pytest.warns(RuntimeWarning, match="observer 'raiser' raised in epoch_finished: RuntimeError: boom at 1"):
        raised = run("--restart")
    mp.undo()
    return plain, recorded, raised, recorder


def test_observers_do_not_change_accuracy(observed):
    plain, recorded, raised, _ = observed
    tops = [
        [(r["student"], r["seed"], r["top1"], r["top5"], r["final_loss"]) for r in d["records"]] for d in observed[:3]
    ]
    assert tops[0] == tops[1] == tops[2]  # bit-identical floats
    assert recorded["run"]["status"] == raised["run"]["status"] == "complete"


def test_hook_run_started(observed):
    _, recorded, _, recorder = observed
    assert recorder.calls[0] == ("run_started", recorded["run"]["run_id"], recorded["run"]["protocol"]["name"])


def test_hook_epoch_finished(observed):
    recorded, recorder = observed[1], observed[3]
    epochs = [c for c in recorder.calls if c[0] == "epoch_finished"]
    assert [c[3] for c in epochs] == list(range(1, recorded["run"]["protocol"]["evaluation"]["epochs"] + 1))
    for _, student, seed, _, metrics in epochs:
        assert student == recorded["records"][0]["student"] and seed == 0
        assert metrics["loss"] > 0 and metrics["lr"] >= 0 and metrics["images_per_s"] > 0


def test_hook_evaluation_finished(observed):
    recorded, recorder = observed[1], observed[3]
    (call,) = [c for c in recorder.calls if c[0] == "evaluation_finished"]
    assert call[2] == recorded["records"][0]["top1"] < 1.0


def test_hook_run_finished(observed):
    recorded, recorder = observed[1], observed[3]
    assert recorder.calls[-1] == ("run_finished", "complete", 1) and len(recorded["records"]) == 1


def test_log_tensorboard_and_mlflow_match_the_record(env, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    doc = run("--log", "tensorboard", "--log", "mlflow")
    run_doc, (record,) = doc["run"], doc["records"]
    epochs = run_doc["protocol"]["evaluation"]["epochs"]
    folder = env / "tensorboard" / run_doc["run_id"] / f"{record['student']}-seed{record['seed']}"
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert {"train/loss", "train/lr", "train/images_per_s", "test/top1"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, epochs + 1))
    assert events.Scalars("test/top1")[-1].value == pytest.approx(record["top1"], rel=1e-6)  # float32 on disk
    texts = {t: events.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in events.Tags()["tensors"]}
    assert run_doc["protocol_hash"] in texts["protocol_hash/text_summary"]

    client = MlflowClient(tracking_uri=(env / "mlflow").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == run_doc["protocol_name"]]
    (mlrun,) = client.search_runs([experiment.experiment_id])
    assert mlrun.data.tags["rd3.protocol_hash"] == run_doc["protocol_hash"]
    assert mlrun.data.params["evaluation.epochs"] == str(epochs)
    prefix = f"{record['student']}.seed{record['seed']}"
    assert mlrun.data.metrics[f"{prefix}.top1"] == record["top1"]
    assert mlrun.data.metrics[f"{prefix}.top5"] == record["top5"]
    assert len(client.get_metric_history(mlrun.info.run_id, f"{prefix}.loss")) == epochs
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id)} >= {"record.json", "grid.png"}
    assert mlrun.info.status == "FINISHED"


def wandb_records(path):
    """The protobuf records of a W&B `.wandb` file: a 7-byte header, then LevelDB-log chunks in
    32 KiB blocks (full, or first/middle/last pieces), each a serialized `Record`."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos, parts = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:
            pos += left  # the rest of a block is padding
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def test_log_wandb_offline_run(env, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("DIR", "CACHE_DIR", "CONFIG_DIR", "DATA_DIR"):
        monkeypatch.setenv(f"WANDB_{name}", str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    doc = run("--log", "wandb")
    run_doc, (record,) = doc["run"], doc["records"]
    (folder,) = (env / "wandb").rglob("offline-run-*")
    (log,) = folder.glob("*.wandb")
    records = list(wandb_records(log))
    (started,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert started.display_name == run_doc["run_id"] and started.project == "rd3"
    config = {i.key: json.loads(i.value_json) for i in started.config.update}
    assert config["rd3.protocol_hash"] == run_doc["protocol_hash"]
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    assert len(history) == run_doc["protocol"]["evaluation"]["epochs"]
    summary = {
        i.key: i.value_json for r in records if r.WhichOneof("record_type") == "summary" for i in r.summary.update
    }
    assert float(summary[f"{record['student']}.seed{record['seed']}.top1"]) == record["top1"]


def test_log_unknown_tracker_is_a_usage_error(env):
    result = runner.invoke(app, ["run", "-p", "cpu/smoke.v1", "--log", "nope"])
    assert result.exit_code == 2 and "unknown tracker 'nope'" in result.output
