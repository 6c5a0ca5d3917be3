"""`--log mlflow`: one MLflow run per rd3h run in the local file store `mlflow/` (experiment = the
protocol name): params = the protocol's settings flattened, tags = protocol hash, plugin and run id;
metrics `<student>.seed<seed>.loss|lr|images_per_s` per epoch and `.top1|.top5` at the end; the
exported record (`record.json`) and the synthetic set's `grid.png` as artifacts."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rd3_harness.hookspecs import hookimpl
from rd3_harness.trackers import flatten


class Tracker:
    def __init__(self, folder: Path):
        self.folder = folder
        self.client = None
        self.mlflow_run_id: str | None = None

    @property
    def uri(self) -> str:
        return self.folder.resolve().as_uri()

    @hookimpl
    def run_started(self, run, protocol):
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
        self.client = MlflowClient(tracking_uri=self.uri)
        name = run.protocol_name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        tags = {
            "rd3.protocol_hash": run.protocol_hash,
            "rd3.plugin": f"{run.plugin.name} {run.plugin.version}",
            "rd3.run_id": run.run_id,
        }
        mlrun = self.client.create_run(experiment_id, tags=tags, run_name=f"{run.plugin.name}-{run.run_id[:8]}")
        self.mlflow_run_id = mlrun.info.run_id
        for key, value in flatten(protocol.model_dump(mode="json")).items():
            self.client.log_param(self.mlflow_run_id, key[:250], value[:6000])

    @hookimpl
    def epoch_finished(self, student, seed, epoch, metrics):
        for name, value in metrics.items():
            self.client.log_metric(self.mlflow_run_id, f"{student}.seed{seed}.{name}", value, step=epoch)

    @hookimpl
    def evaluation_finished(self, record):
        prefix = f"{record.student}.seed{record.seed}"
        self.client.log_metric(self.mlflow_run_id, f"{prefix}.top1", record.top1, step=record.epochs)
        self.client.log_metric(self.mlflow_run_id, f"{prefix}.top5", record.top5, step=record.epochs)

    @hookimpl
    def run_finished(self, run, records):
        from rd3_harness.results.store import export_document

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "record.json"
            path.write_text(json.dumps(export_document(run, records), indent=2, default=str))
            self.client.log_artifact(self.mlflow_run_id, str(path))
        grid = Path(run.synset.path) / "grid.png" if run.synset else None
        if grid is not None and grid.is_file():
            self.client.log_artifact(self.mlflow_run_id, str(grid))
        self.client.set_terminated(self.mlflow_run_id, "FINISHED" if run.status == "complete" else "FAILED")
