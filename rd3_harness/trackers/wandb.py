"""`--log wandb`: a Weights & Biases run in offline mode under `wandb/` (config = the protocol's
settings flattened, the hash and plugin as tags' config keys, per-epoch metrics, final accuracy);
sync it later with `wandb sync`."""

from __future__ import annotations

from pathlib import Path

from rd3_harness.hookspecs import hookimpl
from rd3_harness.trackers import flatten


class Tracker:
    def __init__(self, folder: Path):
        self.folder = folder
        self.wb = None

    @hookimpl
    def run_started(self, run, protocol):
        import wandb

        self.folder.mkdir(parents=True, exist_ok=True)
        config = {**flatten(protocol.model_dump(mode="json")), "rd3.protocol_hash": run.protocol_hash}
        self.wb = wandb.init(
            mode="offline", dir=str(self.folder), project="rd3", name=run.run_id, config=config, reinit=True
        )

    @hookimpl
    def epoch_finished(self, student, seed, epoch, metrics):
        self.wb.log({f"{student}.seed{seed}.{k}": v for k, v in metrics.items()} | {"epoch": epoch})

    @hookimpl
    def evaluation_finished(self, record):
        self.wb.summary[f"{record.student}.seed{record.seed}.top1"] = record.top1

    @hookimpl
    def run_finished(self):
        self.wb.finish()
