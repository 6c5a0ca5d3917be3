"""The post-evaluation engine: train every student x seed of a protocol on a synthetic set and
measure it on the real test set.

The synthetic set lives on the device as one tensor. Each epoch's batch order and augmentation
parameters are a function of (stream seed, epoch) alone, so students that share a batch size
train in lockstep on identical batches and share one teacher pass per batch (teacher reuse);
training them one by one gives the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from rd3_harness.data.real import RealData
from rd3_harness.distributed import World
from rd3_harness.distributed import world as current_world
from rd3_harness.errors import Rd3Error
from rd3_harness.models import create_model
from rd3_harness.progress import progress
from rd3_harness.protocol.schema import Protocol, Student
from rd3_harness.registry import ModelEntry
from rd3_harness.seeding import derive_seed, generator
from rd3_harness.training.augment import Augmenter, AugmentParams, to_device
from rd3_harness.training.batchnorm import whole_batch_norm
from rd3_harness.training.checkpoint import Checkpoints
from rd3_harness.training.labels import LabelProvider, TeacherEnsemble, make_provider
from rd3_harness.training.losses import compute_loss
from rd3_harness.training.numerics import set_precision
from rd3_harness.training.optim import Scheduler, build_optimizer


@dataclass
class StudentResult:
    """One student x seed evaluation."""

    student: str
    seed: int
    top1: float
    """The reported top-1 accuracy (a fraction): final epoch's, or best-of-run when flagged."""
    top5: float
    final_top1: float
    final_top5: float
    test_set_selection: bool
    """True when the reported number was selected on the test set (protocol report mode 'best')."""
    selected_epoch: int
    epochs: int
    steps: int
    images_seen: int
    final_loss: float
    train_wall_s: float
    eval_wall_s: float
    checks: list[tuple[int, float, float]] = field(default_factory=list)
    """(epoch, top1, top5) of intermediate test evaluations (best-of-run mode only)."""
    resumed_from_epoch: int | None = None
    """Set when training continued from a checkpoint saved after this many epochs."""


class TrainingFailure(Rd3Error):
    """A training step failed; the message names the students, the seed and the epoch."""


def rng_state(device: torch.device) -> list[torch.Tensor]:
    """The global generators a module may draw from (dropout, drop-path, stochastic depth, any
    other): the CPU one, and the device's on CUDA."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def set_rng_state(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0].cpu())
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1].cpu(), device)


def wants_channels_last(model: nn.Module, device: torch.device, setting: bool | None) -> bool:
    """Runtime memory-format choice: on unless CPU GroupNorm (slow in channels_last) is present."""
    if setting is not None:
        return setting
    if device.type == "cuda":
        return True
    return not any(isinstance(m, (nn.GroupNorm, nn.LayerNorm)) for m in model.modules())


@torch.inference_mode()
def accuracy(
    model: nn.Module,
    test: RealData,
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    world: World | None = None,
    total: int | None = None,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions) on a split; under torchrun each rank passes its share
    of the split and the counts are summed over ranks (`total`: size of the whole split)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    k = min(5, test.num_classes)
    batch_size = batch_size or (1024 if device.type == "cuda" else 500)
    correct1 = torch.zeros((), dtype=torch.int64, device=device)
    correctk = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in test.batches(batch_size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x).float()
        top = out.topk(k, dim=1).indices
        hit = top == y[:, None]
        correct1 += hit[:, 0].sum()
        correctk += hit.any(1).sum()
    model.train(was_training)
    counts = torch.stack([correct1, correctk])
    if world is not None:
        world.sum(counts)
    n = total or len(test)
    return counts[0].item() / n, counts[1].item() / n


class _Student:
    """One student being trained: model, optimizer, schedule, optional EMA."""

    def __init__(
        self,
        spec: Student,
        protocol: Protocol,
        seed: int,
        steps_per_epoch: int,
        shape: tuple[int, int, int],
        num_classes: int,
        device: torch.device,
        channels_last: bool | None,
        world: World,
        models: Mapping[str, ModelEntry],
    ):
        ev = protocol.evaluation
        self.name, self.spec = spec.architecture, spec
        torch.manual_seed(derive_seed("student-init", seed, spec.architecture))
        model = create_model(
            models, spec.architecture, num_classes=num_classes, in_channels=shape[0], resolution=shape[1]
        )
        self.channels_last = wants_channels_last(model, device, channels_last)
        model = model.to(device, memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.module, self.world = model, world  # the bare network: checkpointed, averaged and evaluated
        if world.data_parallel:  # BatchNorm over the whole batch, as in one process, on every device
            whole_batch_norm(model)
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.index is not None else None
            )
        self.model = model
        self.model.train()
        self.optimizer = build_optimizer(spec.optimizer or ev.optimizer, self.model)
        self.scheduler = Scheduler(self.optimizer, spec.schedule or ev.schedule, ev.epochs, steps_per_epoch)
        self.loss_spec, self.precision = ev.loss, ev.precision
        self.device = device
        self.rng_state = rng_state(device)  # every student draws from its own streams
        self.ema: nn.Module | None = None
        self.ema_decay = ev.student_ema
        if self.ema_decay is not None:
            import copy

            self.ema = copy.deepcopy(self.module).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.loss_sum = torch.zeros((), device=device)
        self.loss_count = 0
        self.last_loss = float("nan")

    def step(self, x: torch.Tensor, targets, epoch: int, step: int, share: float = 1.0) -> None:
        """One optimizer step on `x`, this rank's part of the batch. `share` is that part's fraction
        of the batch times the world size (1 in one process): the loss is weighted by it, so that
        DDP's mean over ranks is the batch mean even when the parts are uneven or one is empty."""
        set_rng_state(self.rng_state, self.device)
        self.scheduler.set(epoch, step)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.model(x)
        if len(x):  # share is exactly 1.0 in one process: multiplying changes no bit
            loss = compute_loss(self.loss_spec, out, targets) * share
        else:  # an empty share still joins the collectives, with nothing to add
            loss = out.float().sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self._update_ema()
        self.loss_sum += loss.detach()
        self.loss_count += 1
        self.rng_state = rng_state(self.device)

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, list(self.module.parameters()), 1 - self.ema_decay)
        for b_ema, b in zip(self.ema.buffers(), self.module.buffers()):
            b_ema.copy_(b)

    @property
    def evaluated(self) -> nn.Module:
        return self.ema if self.ema is not None else self.module

    def state(self) -> dict:
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": self.rng_state,
            "loss": [self.loss_sum.clone(), self.loss_count, self.last_loss],
        }

    def restore(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.rng_state = list(state["rng"])
        loss_sum, self.loss_count, self.last_loss = state["loss"]
        self.loss_sum.copy_(loss_sum)

    def mean_loss(self) -> float:
        """Mean training loss since the last call, averaged over ranks (one host sync)."""
        if self.loss_count:
            total = self.world.sum(self.loss_sum / self.loss_count) / self.world.size
            self.last_loss = total.item()
            self.loss_sum.zero_()
            self.loss_count = 0
        return self.last_loss


class BatchStream:
    """Batch order and augmentation parameters of each epoch, drawn from (seed, epoch) alone."""

    def __init__(self, n: int, batch_size: int, augmenter: Augmenter, seed: int, device: torch.device):
        self.n, self.batch_size, self.augmenter, self.seed, self.device = n, batch_size, augmenter, seed, device

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(self, e: int) -> list[tuple[torch.Tensor, AugmentParams]]:
        """The epoch's (indices, parameters) per batch, drawn on the CPU and moved to the device
        up front, so the training loop never waits on the host."""
        g = generator("batch-stream", self.seed, e)
        order = torch.randperm(self.n, generator=g)
        batches = []
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            batches.append((idx, self.augmenter.draw(len(idx), g)))
        if self.device.type == "cpu":
            return batches
        return [(to_device(idx, self.device), p.to(self.device)) for idx, p in batches]


class Engine:
    """Evaluate one synthetic set under one protocol."""

    def __init__(
        self,
        protocol: Protocol,
        images: torch.Tensor,
        labels: torch.Tensor,
        label_teachers: list[nn.Module],
        test: RealData,
        *,
        models: Mapping[str, ModelEntry],
        device: torch.device,
        fill: torch.Tensor | None = None,
        soft_labels: torch.Tensor | None = None,
        teacher_reuse: bool = True,
        channels_last: bool | None = None,
        checkpoints: Checkpoints | None = None,
        world: World | None = None,
        on_epoch: Callable[[str, int, int, dict[str, float]], None] | None = None,
    ):
        ev = protocol.evaluation
        set_precision(ev.precision)
        self.on_epoch = on_epoch  # (student, seed, epoch, {loss, lr, images_per_s}) after each epoch
        self.protocol, self.ev, self.device, self.test = protocol, ev, device, test
        self.models = models
        self.images = images.to(device, torch.float32)
        self.labels = labels.to(device)
        self.num_classes, self.shape = test.num_classes, tuple(images.shape[1:])
        self.teacher_reuse, self.channels_last, self.checkpoints = teacher_reuse, channels_last, checkpoints
        self.augmenter = Augmenter(ev.augmentation, self.shape[1], fill=fill)
        cl = device.type == "cuda" if channels_last is None else channels_last
        combine = getattr(ev.labels, "combine", "mean")
        self.teacher = TeacherEnsemble(label_teachers, combine, ev.precision, cl) if label_teachers else None
        self.provider: LabelProvider = make_provider(ev.labels, self.teacher, soft_labels)
        self._epoch = 0
        shared = world or current_world()  # job-parallel ranks train alone: a world of one
        self.world = shared if shared.data_parallel else World()
        if self.world.distributed:  # each rank tests its share of the test set; counts are summed
            self.test = test.subset(torch.arange(len(test))[self.world.shard(len(test))])
        self.test_size = len(test)

    def batch_size(self, student: Student) -> int:
        return min(student.batch_size or self.ev.batch_size, len(self.images))

    def jobs(self) -> list[tuple[str, int]]:
        """Every (student, seed) evaluation, ordered so that lockstep partners are adjacent."""
        return [(s.architecture, seed) for seed in self.ev.seeds for group in self.groups() for s in group]

    def groups(self, students: list[Student] | None = None) -> list[list[Student]]:
        """Students that train in lockstep (same batch size); one each without teacher reuse."""
        students = list(self.ev.students) if students is None else students
        if not self.teacher_reuse:
            return [[s] for s in students]
        by_bs: dict[int, list[Student]] = {}
        for s in students:
            by_bs.setdefault(self.batch_size(s), []).append(s)
        return list(by_bs.values())

    def _inputs(self, idx: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        x = self.images[idx.to(self.device)]  # a fresh tensor: mixing may overwrite it
        return self.augmenter.mix(self.augmenter.apply(x, p), p, inplace=True)

    def _stream(self, seed: int, batch_size: int) -> BatchStream:
        stream_seed = self.provider.stream_seed if self.provider.stream_seed is not None else seed
        return BatchStream(len(self.images), batch_size, self.augmenter, stream_seed, self.device)

    def prepare(self) -> None:
        """Per-run label work: static soft labels, or the FKD precomputation."""
        bs = self.batch_size(self.ev.students[0])
        stream = self._stream(0, bs)

        def replay() -> Iterator[tuple[int, int, torch.Tensor]]:
            with progress(self.ev.epochs, "FKD relabel") as bar:
                for e in range(self.ev.epochs):
                    for b, (idx, p) in enumerate(stream.epoch(e)):
                        yield e, b, self._inputs(idx, p)
                    bar.advance()

        self.provider.prepare(self.images, replay)

    def run(
        self,
        on_result: Callable[[StudentResult], None] | None = None,
        jobs: Collection[tuple[str, int]] | None = None,
    ) -> list[StudentResult]:
        """Train and test the given (student, seed) jobs (default: all); jobs sharing a seed and a
        batch size train in lockstep."""
        self.prepare()
        wanted = set(self.jobs() if jobs is None else jobs)
        results = []
        for seed in self.ev.seeds:
            for todo in self.groups([s for s in self.ev.students if (s.architecture, seed) in wanted]):
                try:
                    trained = self._train_group(todo, seed)
                except Rd3Error:
                    raise
                except Exception as exc:
                    names = ", ".join(s.architecture for s in todo)
                    raise TrainingFailure(
                        f"training {names} with seed {seed} failed at epoch {self._epoch + 1}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                for result in trained:
                    results.append(result)
                    if on_result:
                        on_result(result)
                if self.checkpoints and self.world.main:
                    self.checkpoints.clear(seed, [s.architecture for s in todo])
        return results

    def _train_group(self, specs: list[Student], seed: int) -> list[StudentResult]:
        ev = self.ev
        bs = self.batch_size(specs[0])
        stream = self._stream(seed, bs)
        students = [
            _Student(
                s,
                self.protocol,
                seed,
                stream.steps_per_epoch,
                self.shape,
                self.num_classes,
                self.device,
                self.channels_last,
                self.world,
                self.models,
            )
            for s in specs
        ]
        report = ev.report
        check_from = ev.epochs - math.floor(report.last_fraction * ev.epochs)
        checks: dict[str, list[tuple[int, float, float]]] = {s.name: [] for s in students}
        order = [s.name for s in students]
        start_epoch, steps, wall_before = 0, 0, 0.0
        saved = self.checkpoints.load(seed, order, self.device) if self.checkpoints else None
        if saved is not None:
            for st in students:
                st.restore(saved["students"][st.name])
            start_epoch, steps, wall_before = saved["epoch"], saved["steps"], saved["train_wall_s"]
            checks = {k: [tuple(c) for c in v] for k, v in saved["checks"].items()}
        started = time.perf_counter()
        with progress(ev.epochs, f"seed {seed}: {', '.join(order)}") as bar:
            bar.advance(start_epoch)
            for epoch in range(start_epoch, ev.epochs):
                self._epoch = epoch
                if self.on_epoch:
                    marks = [(st.loss_sum.item(), st.loss_count, time.perf_counter()) for st in students]
                for b, (idx, p) in enumerate(stream.epoch(epoch)):
                    x = self._inputs(idx, p)  # the whole batch, identical on every rank
                    part = self.world.shard(len(idx))
                    targets = self.provider.targets(epoch, b, idx, x, self.labels[idx.to(self.device)], p, part)
                    x = x[part]
                    share = len(x) * self.world.size / len(idx)
                    for st in students:
                        st.step(x, targets, epoch, b, share)
                    steps += 1
                done = epoch + 1
                if self.on_epoch:
                    self._report_epoch(students, marks, seed, done, stream.steps_per_epoch * bs)
                if report.mode == "best" and done >= check_from and done % report.every == 0 and done < ev.epochs:
                    for st in students:
                        checks[st.name].append((done, *self._accuracy(st)))
                if done % 10 == 0 or done == ev.epochs:
                    bar.advance(loss=min(st.mean_loss() for st in students))
                else:
                    bar.advance()
                if self.checkpoints and self.world.main and self.checkpoints.due(done, ev.epochs):
                    wall = wall_before + time.perf_counter() - started
                    state = {"students": {st.name: st.state() for st in students}, "checks": checks}
                    self.checkpoints.save(seed, order, {**state, "epoch": done, "steps": steps, "train_wall_s": wall})
        train_wall = wall_before + time.perf_counter() - started
        results = []
        for st in students:
            t0 = time.perf_counter()
            final1, final5 = self._accuracy(st)
            eval_wall = time.perf_counter() - t0
            top1, top5, chosen = final1, final5, ev.epochs
            if report.mode == "best":
                history = checks[st.name] + [(ev.epochs, final1, final5)]
                chosen, top1, top5 = max(history, key=lambda c: (c[1], c[0]))
            results.append(
                StudentResult(
                    student=st.name,
                    seed=seed,
                    top1=top1,
                    top5=top5,
                    final_top1=final1,
                    final_top5=final5,
                    test_set_selection=report.mode == "best",
                    selected_epoch=chosen,
                    epochs=ev.epochs,
                    steps=steps,
                    images_seen=steps * bs,
                    final_loss=st.mean_loss(),
                    train_wall_s=train_wall,
                    eval_wall_s=eval_wall,
                    checks=checks[st.name],
                    resumed_from_epoch=start_epoch or None,
                )
            )
        return results

    def _report_epoch(self, students: list[_Student], marks: list, seed: int, epoch: int, images: int) -> None:
        """Read (never reset) each student's loss accumulator and hand the epoch's metrics out."""
        for st, (loss_sum, count, t0) in zip(students, marks):
            loss = (st.loss_sum.item() - loss_sum) / max(st.loss_count - count, 1)
            wall = time.perf_counter() - t0
            lr = float(st.optimizer.param_groups[0]["lr"])
            self.on_epoch(st.name, seed, epoch, {"loss": loss, "lr": lr, "images_per_s": images / max(wall, 1e-9)})

    def _accuracy(self, st: _Student) -> tuple[float, float]:
        return accuracy(
            st.evaluated,
            self.test,
            precision=self.ev.precision,
            channels_last=st.channels_last,
            world=self.world,
            total=self.test_size,
        )
