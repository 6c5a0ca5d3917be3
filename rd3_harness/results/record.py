"""Result records: one `RunRecord` per (run, student, seed) and one `Run` per run.

Every record carries the protocol hash; the run holds the full protocol, method config,
synthetic-set and teacher checksums, timings and the environment (lm-evaluation-harness style).
"""

from __future__ import annotations

import math
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rd3_harness.hashing import sha256_of
from rd3_harness.results.stats import summarize
from rd3_harness.version import __version__

if TYPE_CHECKING:
    import torch

    from rd3_harness.protocol.schema import Protocol
    from rd3_harness.training.trainer import StudentResult

SCHEMA = "rd3-run/1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginRef(_Model):
    name: str
    version: str
    distribution: str | None = None


class SynsetRef(_Model):
    sha256: str
    path: str
    count: int
    storage_bytes: int
    """Bytes of the stored synthetic set: the size of its file (images.safetensors: images, labels,
    soft labels)."""
    storage_dtype: Literal["uint8", "float32"] | None = None
    """How the images are stored (None in records made before it was recorded)."""
    pixel_bytes: int
    """Bytes the images would take as 8-bit pixels (N x C x H x W)."""
    label_storage_bytes: int = 0
    """Bytes of soft labels the evaluation stores (static or FKD logits); 0 for online labels."""
    reused: bool = False
    """True when the set came from the cache instead of a new synthesis."""


class SynthesisCost(_Model):
    wall_s: float
    cpu_s: float
    peak_memory_bytes: int
    memory_kind: Literal["rss", "cuda", "none"]


class RunRecord(_Model):
    """One evaluation: a student trained with one seed. Accuracies are fractions in [0, 1]."""

    run_id: str
    protocol_hash: str
    protocol_name: str
    method: str
    plugin_version: str
    method_config_hash: str
    synset_sha256: str
    teacher_sha256: str | None
    student: str
    seed: int
    top1: float
    top5: float
    final_top1: float
    final_top5: float
    report_mode: Literal["final", "best"]
    test_set_selection: bool
    """Flag: the reported top1 was selected on the test set (protocol report mode 'best')."""
    selected_epoch: int
    epochs: int
    steps: int
    images_seen: int
    final_loss: float | None
    train_wall_s: float
    eval_wall_s: float
    synthesis_wall_s: float
    storage_bytes: int
    device: str
    created: str
    attempt: int = 1
    """Which attempt of the run produced this record (1 unless the run was resumed)."""
    resumed_from_epoch: int | None = None
    """Set when the training continued from an epoch checkpoint."""


def record_of(run: Run, r: StudentResult, device: str) -> RunRecord:
    """The record of one finished (student, seed) evaluation of `run`."""
    return RunRecord(
        run_id=run.run_id,
        protocol_hash=run.protocol_hash,
        protocol_name=run.protocol_name,
        method=run.plugin.name,
        plugin_version=run.plugin.version,
        method_config_hash=run.method_config_hash,
        synset_sha256=run.synset.sha256,
        teacher_sha256=(run.teacher or {}).get("sha256"),
        student=r.student,
        seed=r.seed,
        top1=r.top1,
        top5=r.top5,
        final_top1=r.final_top1,
        final_top5=r.final_top5,
        report_mode="best" if r.test_set_selection else "final",
        test_set_selection=r.test_set_selection,
        selected_epoch=r.selected_epoch,
        epochs=r.epochs,
        steps=r.steps,
        images_seen=r.images_seen,
        final_loss=nan_to_none(r.final_loss),
        train_wall_s=r.train_wall_s,
        eval_wall_s=r.eval_wall_s,
        synthesis_wall_s=run.synthesis.wall_s if run.synthesis else 0.0,
        storage_bytes=run.synset.storage_bytes,
        device=device,
        created=now(),
        attempt=run.attempt,
        resumed_from_epoch=r.resumed_from_epoch,
    )


class StudentSummary(_Model):
    student: str
    n: int
    mean: float
    std: float | None
    ci95_low: float | None
    ci95_high: float | None
    top5_mean: float | None
    seeds: list[int]
    test_set_selection: bool


class Environment(_Model):
    python: str
    platform: str
    harness: str
    torch: str
    torchvision: str
    timm: str | None
    device: str
    device_name: str
    threads: int
    cudnn: dict[str, Any] = Field(default_factory=dict)
    git_commit: str | None = None


class Run(_Model):
    """One `rd3h run` or `rd3h evaluate`: what was evaluated, how, and the per-student summary."""

    schema_: str = Field(SCHEMA, alias="schema")
    run_id: str
    created: str
    finished: str | None = None
    status: Literal["running", "complete", "failed"]
    error: str | None = None
    protocol: dict[str, Any]
    protocol_hash: str
    protocol_name: str
    protocol_version: str
    protocol_source: str
    plugin: PluginRef
    method_config: dict[str, Any]
    method_config_hash: str
    synset: SynsetRef | None
    synthesis: SynthesisCost | None
    teacher: dict[str, Any] | None
    label_teachers: list[dict[str, Any]] = Field(default_factory=list)
    students: list[str] = Field(default_factory=list)
    """The students this run evaluates, in protocol order: all of the protocol's, or the
    `--students` subset (same protocol hash). Empty in runs recorded before the field existed."""
    evaluation_wall_s: float | None = None
    summary: list[StudentSummary] = Field(default_factory=list)
    environment: Environment
    settings: dict[str, Any]
    run_key: str = ""
    """Identity of the command: protocol hash, method, version, config and synthetic set. Running
    the same command again continues an unfinished run with this key."""
    attempt: int = 1
    """How many processes have worked on this run (resumes + 1)."""
    pid: int | None = None
    host: str | None = None
    process: str | None = None
    """Boot id and start time of process `pid` (see `process_identity`): a pid reused after a
    reboot, or in a new container, is not taken for the run's owner."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def start(
        cls,
        protocol: Protocol,
        protocol_hash: str,
        source: str,
        plugin: PluginRef,
        method_config: dict[str, Any],
        *,
        device: torch.device,
        settings: dict[str, Any],
        **fields: Any,
    ) -> Run:
        """A new run of `plugin` under `protocol` (status 'running' unless `fields` say otherwise)."""
        fields.setdefault("method_config_hash", sha256_of(method_config))
        return cls(
            run_id=f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{plugin.name}-{secrets.token_hex(3)}",
            created=now(),
            status=fields.pop("status", "running"),
            protocol=protocol.model_dump(mode="json"),
            protocol_hash=protocol_hash,
            protocol_name=protocol.name,
            protocol_version=protocol.version,
            protocol_source=source,
            plugin=plugin,
            method_config=method_config,
            synset=fields.pop("synset", None),
            synthesis=fields.pop("synthesis", None),
            teacher=fields.pop("teacher", None),
            environment=environment(device),
            settings=settings,
            **fields,
        )

    @property
    def state(self) -> str:
        """The status, with 'interrupted' for a run whose process died (SIGKILL, power loss)."""
        if self.status == "running" and not self.owner_alive():
            return "interrupted"
        return self.status

    def owner_alive(self) -> bool:
        if self.pid is None or self.host != socket.gethostname():
            return self.pid is not None  # another machine's run: assume alive
        if self.process is not None and process_identity(self.pid) not in (self.process, None):
            return False  # that pid is another process now
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def process_identity(pid: int) -> str | None:
    """`BOOT_ID/START_TICKS` of a live process (Linux), None where /proc cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{boot}/{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, after the command name


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def nan_to_none(v: float) -> float | None:
    return None if v is None or math.isnan(v) else v


def summarize_records(records: list[RunRecord]) -> list[StudentSummary]:
    """Per-student mean, std (ddof=1) and 95% t-interval over seeds, in first-seen order."""
    out = []
    for student in dict.fromkeys(r.student for r in records):
        rs = sorted((r for r in records if r.student == student), key=lambda r: r.seed)
        s = summarize([r.top1 for r in rs])
        top5 = [r.top5 for r in rs if not math.isnan(r.top5)]
        out.append(
            StudentSummary(
                student=student,
                n=s.n,
                mean=s.mean,
                std=nan_to_none(s.std),
                ci95_low=nan_to_none(s.ci95_low),
                ci95_high=nan_to_none(s.ci95_high),
                top5_mean=sum(top5) / len(top5) if top5 else None,
                seeds=[r.seed for r in rs],
                test_set_selection=any(r.test_set_selection for r in rs),
            )
        )
    return out


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device) -> Environment:
    import torch
    import torchvision

    try:  # its version only: importing timm costs more than a small evaluation
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = None
    cuda = device.type == "cuda"
    return Environment(
        python=sys.version.split()[0],
        platform=platform.platform(),
        harness=__version__,
        torch=torch.__version__,
        torchvision=torchvision.__version__,
        timm=timm_version,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        threads=torch.get_num_threads(),
        cudnn={
            "enabled": torch.backends.cudnn.enabled,
            "benchmark": torch.backends.cudnn.benchmark,
            "deterministic": torch.backends.cudnn.deterministic,
            "version": torch.backends.cudnn.version() if cuda else None,
            "allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        },
        git_commit=_git_commit(),
    )
