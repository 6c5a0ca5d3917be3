"""`rd3h ablate`: walk from one protocol (`--from`) to another (`--to`), changing one group of
settings at a time and keeping every change made so far (cumulative, as RD³'s Figure 2), and
evaluate the same synthetic set at every step.

Order of the groups (`ORDER`): student architecture; labels and teachers (the whole
`evaluation.labels` block with the protocol's `teacher`); loss; batch size; epochs; optimizer; LR
schedule; augmentation; student EMA; precision; reported epoch. A group holds every setting that
must move together: a whole block (a `kind` change comes with its fields) and the per-student
override of the same setting. When an intermediate protocol would not validate (hard labels need
the `ce` loss, FKD labels forbid a per-student batch size), the step also takes the next changed
group, so every evaluated protocol is a valid one. Settings that only matter to synthesis
(`synthesis_teachers`, `synthesis_seed`) change no evaluation and ride along with the first step.
Every step uses the target's seeds; the dataset and IPC must agree (the set is made once). Both
protocols are narrowed to one tracked student (with its overrides): each step trains that student
once per seed, which gives the numbers a run of the whole protocol gives it.

The step deltas telescope: their sum is the change from the first to the last step.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rd3_harness.analysis.leaderboard import ABLATION_SOURCE
from rd3_harness.errors import Rd3Error, UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.protocol.diff import Change, diff_settings, plain
from rd3_harness.protocol.io import protocol_hash
from rd3_harness.protocol.schema import METADATA, Protocol
from rd3_harness.results.record import nan_to_none, now
from rd3_harness.results.stats import summarize

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Group:
    key: str
    label: str
    paths: tuple[KeyPath, ...]


STUDENT = ("evaluation", "students", 0)
ORDER: tuple[Group, ...] = (
    Group("student", "student architecture", ((*STUDENT, "architecture"),)),
    Group("labels", "labels / teachers", (("teacher",), ("evaluation", "labels"))),
    Group("loss", "loss", (("evaluation", "loss"),)),
    Group("batch_size", "batch size", (("evaluation", "batch_size"), (*STUDENT, "batch_size"))),
    Group("epochs", "epochs", (("evaluation", "epochs"),)),
    Group("optimizer", "optimizer", (("evaluation", "optimizer"), (*STUDENT, "optimizer"))),
    Group("schedule", "LR schedule", (("evaluation", "schedule"), (*STUDENT, "schedule"))),
    Group("augmentation", "augmentation", (("evaluation", "augmentation"),)),
    Group("ema", "student EMA", (("evaluation", "student_ema"),)),
    Group("precision", "precision", (("evaluation", "precision"),)),
    Group("report", "reported epoch", (("evaluation", "report"),)),
)
SYNTHESIS_ONLY = Group("synthesis", "synthesis-only settings", (("synthesis_teachers",), ("synthesis_seed",)))
OTHER = Group("other", "other settings", ())
SAME_DATA = ("dataset", "ipc")


def path_text(path: KeyPath) -> str:
    """`("evaluation", "students", 0, "lr")` -> `evaluation.students[0].lr` (the diff's notation)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _covers(path: KeyPath, setting: str) -> bool:
    prefix = path_text(path)
    return setting == prefix or setting.startswith((prefix + ".", prefix + "["))


def _group_of(setting: str) -> Group:
    for group in (SYNTHESIS_ONLY, *ORDER):
        if any(_covers(p, setting) for p in group.paths):
            return group
    return OTHER


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: KeyPath, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = copy.deepcopy(value)


@dataclass
class Step:
    """One evaluated protocol: the baseline (index 0) or the baseline plus groups applied so far."""

    index: int
    groups: tuple[str, ...]
    label: str
    changes: list[Change]
    protocol: Protocol

    @property
    def hash(self) -> str:
        return protocol_hash(self.protocol)


@dataclass
class Plan:
    target: Protocol
    student: str
    steps: list[Step]
    narrowed: bool
    """True when a protocol had other students, left out of every step."""


def tracked_student(a: Protocol, b: Protocol, student: str | None) -> str:
    """The student the ablation follows: the given one, else the target's first that the source
    also trains, else the target's first."""
    names_b = [s.architecture for s in b.evaluation.students]
    if student is not None:
        if student not in names_b:
            raise UsageError(f"--student {student!r}: the target protocol trains {', '.join(names_b)}")
        return student
    names_a = {s.architecture for s in a.evaluation.students}
    return next((n for n in names_b if n in names_a), names_b[0])


def _one_student(protocol: Protocol, name: str) -> dict[str, Any]:
    data = protocol.model_dump(mode="json")
    students = data["evaluation"]["students"]
    data["evaluation"]["students"] = [next((s for s in students if s["architecture"] == name), students[0])]
    return data


def _validated(data: dict[str, Any]) -> Protocol | None:
    """The protocol of a trial step, or None if it does not validate (every name in it comes from
    one of the two validated end points, so the registries need no second look)."""
    try:
        return Protocol.model_validate(data)
    except ValidationError:
        return None


def _with_metadata(data: dict[str, Any], **meta: str) -> Protocol:
    return Protocol.model_validate({**data, **meta})


def plan(a: Protocol, b: Protocol, student: str | None = None) -> Plan:
    """The steps from `a` to `b` in `ORDER` (see the module docstring for the rules)."""
    for key in SAME_DATA:
        if getattr(a, key) != getattr(b, key):
            raise UsageError(
                f"--from and --to differ in {key} ({getattr(a, key)!r} vs {getattr(b, key)!r}); ablate walks "
                "evaluation settings on one synthetic set, so the dataset and IPC must agree"
            )
    name = tracked_student(a, b, student)
    start, end = _one_student(a, name), _one_student(b, name)
    start["evaluation"]["seeds"] = list(b.evaluation.seeds)
    first = Protocol.model_validate(start)
    last = Protocol.model_validate(end)
    changes = diff_settings(first, last)
    if not any(_group_of(c.path) is not SYNTHESIS_ONLY for c in changes):
        raise UsageError(f"{a.name} and {b.name} evaluate {name} identically: nothing to ablate")
    by_group: dict[str, list[Change]] = {}
    for change in changes:
        by_group.setdefault(_group_of(change.path).key, []).append(change)
    pending = [g for g in (*ORDER, OTHER) if g.key in by_group]
    steps = [Step(0, (), f"from {a.name}", [], first)]
    current = start
    i = 0
    while i < len(pending):
        taken = [pending[i]]
        while True:
            is_last = i + len(taken) == len(pending)
            trial = copy.deepcopy(end) if is_last else copy.deepcopy(current)
            if not is_last:
                for group in (*taken, *([SYNTHESIS_ONLY] if len(steps) == 1 else [])):
                    for path in group.paths:
                        _set(trial, path, _get(end, path))
            if _validated(trial) is not None:
                break
            if is_last:
                raise Rd3Error(f"the target protocol {b.name} does not validate with the single student {name}")
            taken.append(pending[i + len(taken)])
        keys = tuple(g.key for g in taken) + (("synthesis",) if len(steps) == 1 and "synthesis" in by_group else ())
        applied = [c for k in keys for c in by_group.get(k, [])]
        label = " + ".join(g.label for g in taken)
        current = trial
        meta = (
            {k: getattr(b, k) for k in METADATA}
            if is_last
            else {
                "name": f"{b.name} ablation step {len(steps)} from {a.name}"[:200],
                "version": b.version,
                "description": f"rd3h ablate: {a.name} with these settings of {b.name} applied cumulatively: "
                + "; ".join(c.path for c in applied),
                "citation": None,
            }
        )
        steps.append(Step(len(steps), keys, label, applied, _with_metadata(current, **meta)))
        i += len(taken)
    narrowed = len(a.evaluation.students) > 1 or len(b.evaluation.students) > 1
    return Plan(last, name, steps, narrowed)


@dataclass
class StepResult:
    step: Step
    run_id: str
    reused: bool
    values: dict[int, float]
    """Reported top-1 (a fraction) per seed."""
    mean: float = field(init=False)
    std: float = field(init=False)
    delta: float | None = None

    def __post_init__(self) -> None:
        s = summarize(list(self.values.values()))
        self.mean, self.std = s.mean, s.std


def step_accuracy(step: dict[str, Any]) -> str:
    """A saved step's top-1 as tables show it: mean ± std in %, † when selected on the test set."""
    text = f"{100 * step['mean']:.2f}" + (f" ± {100 * step['std']:.2f}" if step["std"] is not None else "")
    return text + (" †" if step.get("test_set_selection") else "")


def deltas(means: list[float]) -> list[float | None]:
    """Change of each step's mean from the previous step's (None for the baseline)."""
    return [None] + [b - a for a, b in zip(means, means[1:])]


Evaluator = Callable[[Step], tuple[str, bool, dict[int, float]]]
"""Evaluates one step: returns (run id, whether a stored run was reused, top-1 per seed)."""


@dataclass
class Ablation:
    plan: Plan
    results: list[StepResult]
    method: str
    synset_sha256: str
    source_ref: str
    target_ref: str

    @property
    def total(self) -> float:
        return self.results[-1].mean - self.results[0].mean

    def as_dict(self) -> dict[str, Any]:
        p = self.plan
        return {
            "from": {"protocol": self.source_ref, "name": p.steps[0].protocol.name, "hash": p.steps[0].hash},
            "to": {"protocol": self.target_ref, "name": p.steps[-1].protocol.name, "hash": p.steps[-1].hash},
            "method": self.method,
            "synset_sha256": self.synset_sha256,
            "student": p.student,
            "students_narrowed": p.narrowed,
            "seeds": list(p.target.evaluation.seeds),
            "order": [g.key for g in ORDER],
            "steps": [
                {
                    "index": r.step.index,
                    "label": r.step.label,
                    "groups": list(r.step.groups),
                    "changes": [{"path": c.path, "from": plain(c.old), "to": plain(c.new)} for c in r.step.changes],
                    "protocol_hash": r.step.hash,
                    "run_id": r.run_id,
                    "reused": r.reused,
                    "values": {str(k): v for k, v in r.values.items()},
                    "mean": r.mean,
                    "std": nan_to_none(r.std),
                    "delta": r.delta,
                    "test_set_selection": r.step.protocol.evaluation.report.mode == "best",
                }
                for r in self.results
            ],
            "total_change": self.total,
            "sum_of_deltas": sum(r.delta for r in self.results[1:]),
        }

    def file_stem(self) -> str:
        p = self.plan
        return (
            f"{short_hash(p.steps[0].hash)}-{short_hash(p.steps[-1].hash)}-{self.method}-"
            f"{self.synset_sha256[:8]}-{p.student}"
        )


def run_ablation(
    steps_plan: Plan,
    evaluate: Evaluator,
    *,
    method: str,
    synset_sha256: str,
    source_ref: str,
    target_ref: str,
) -> Ablation:
    """Evaluate every step of the plan in order and attribute the change step by step."""
    results = []
    for step in steps_plan.steps:
        run_id, reused, values = evaluate(step)
        missing = [s for s in steps_plan.target.evaluation.seeds if s not in values]
        if missing:
            raise Rd3Error(f"ablation step {step.index} ({step.label}) has no result for seed(s) {missing}")
        results.append(StepResult(step, run_id, reused, values))
    for r, d in zip(results, deltas([r.mean for r in results])):
        r.delta = d
    return Ablation(steps_plan, results, method, synset_sha256, source_ref, target_ref)


def stored_result(store, step: Step, synset_sha256: str, method: str, student: str) -> tuple[str, dict] | None:
    """A complete stored run of this step's protocol on this synthetic set, with every seed."""
    seeds = step.protocol.evaluation.seeds
    for run in reversed(store.runs(protocol_hash=step.hash, method=method, status="complete")):
        if run.synset is None or run.synset.sha256 != synset_sha256:
            continue
        values = {r.seed: r.top1 for r in store.records(run.run_id) if r.student == student}
        if all(s in values for s in seeds):
            return run.run_id, {s: values[s] for s in seeds}
    return None


def ablate(
    source_ref: str,
    target_ref: str,
    *,
    plugins,
    settings,
    plugin: str | None = None,
    synset_dir: Path | None = None,
    config: dict[str, Any] | None = None,
    student: str | None = None,
    reuse: bool = True,
) -> Ablation:
    """Make (or load) the synthetic set under `source_ref` (with the loaded `plugins`), then evaluate
    every step of the plan, reusing stored runs of a step's protocol on the same set unless `reuse`
    is False."""
    from rd3_harness import runner
    from rd3_harness.data.synset import load_synset
    from rd3_harness.protocol.library import resolve_protocol
    from rd3_harness.results.record import PluginRef
    from rd3_harness.results.store import Store
    from rd3_harness.workspace import Workspace

    if (plugin is None) == (synset_dir is None):
        raise UsageError("give exactly one of --plugin NAME or --synset DIR")
    a, a_path = resolve_protocol(plugins.registries, source_ref)
    b, _ = resolve_protocol(plugins.registries, target_ref)
    steps_plan = plan(a, b, student)
    ws = Workspace(a, str(a_path), settings, plugins.registries)
    if plugin is not None:
        record = plugins.method(plugin)
        synth = runner.synthesize(plugins, ws, plugin, config or {})
        ref = PluginRef(name=plugin, version=record.version, distribution=record.distribution)
    else:
        if config:
            raise UsageError("--config applies to --plugin only")
        synth, ref = runner.given_set(*load_synset(synset_dir), synset_dir)
    sha = synth.manifest["sha256"]
    store = Store.in_folder(settings.out)
    total = len(steps_plan.steps) - 1

    def evaluate(step: Step) -> tuple[str, bool, dict[int, float]]:
        if reuse:
            found = stored_result(store, step, sha, ref.name, steps_plan.student)
            if found is not None:
                return found[0], True, found[1]
        step_ws = copy.copy(ws)  # shares the opened data and the loaded teachers
        step_ws.protocol = step.protocol
        source = f"{ABLATION_SOURCE}{a.name} -> {b.name}, step {step.index}/{total}: {step.label}"
        outcome = runner.evaluate(step_ws, synth, plugin=ref, store=store, source=source)
        values = {r.seed: r.top1 for r in outcome.records if r.student == steps_plan.student}
        return outcome.run.run_id, False, values

    return run_ablation(
        steps_plan, evaluate, method=ref.name, synset_sha256=sha, source_ref=source_ref, target_ref=target_ref
    )


def save(ablation: Ablation, folder: Path) -> Path:
    """Write the ablation's JSON under `folder` (what `rd3h report` draws)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ablation.file_stem()}.json"
    data = {**ablation.as_dict(), "created": now()}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
