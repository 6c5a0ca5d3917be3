"""`--log tensorboard`: event files per student x seed under `tensorboard/<run id>/<student>-seed<seed>/`
(scalars `train/loss`, `train/lr`, `train/images_per_s` per epoch, `test/top1` and `test/top5` at
the end; the protocol hash and the plugin as text)."""

from __future__ import annotations

from pathlib import Path

from rd3_harness.hookspecs import hookimpl


class Tracker:
    def __init__(self, folder: Path):
        self.folder = folder
        self.writers: dict[tuple[str, int], object] = {}

    def _writer(self, run, student: str, seed: int):
        key = (student, seed)
        if key not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.folder / run.run_id / f"{student}-seed{seed}"))
            writer.add_text("protocol_hash", run.protocol_hash)
            writer.add_text("plugin", f"{run.plugin.name} {run.plugin.version}")
            self.writers[key] = writer
        return self.writers[key]

    @hookimpl
    def epoch_finished(self, run, student, seed, epoch, metrics):
        writer = self._writer(run, student, seed)
        for name, value in metrics.items():
            writer.add_scalar(f"train/{name}", value, epoch)

    @hookimpl
    def evaluation_finished(self, run, record):
        writer = self._writer(run, record.student, record.seed)
        writer.add_scalar("test/top1", record.top1, record.epochs)
        writer.add_scalar("test/top5", record.top5, record.epochs)
        if record.test_set_selection:
            writer.add_text("flag", f"best-of-run: top1 selected on the test set at epoch {record.selected_epoch}")
        writer.close()

    @hookimpl
    def run_finished(self):
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
