"""The reviewer's check of an exported run (`rd3h results export RUN_ID`): is it under the protocol
it claims, made from the synthetic set submitted, and internally consistent?"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rd3_harness.errors import ProtocolError, UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.protocol.diff import Change, diff_settings, plain, value_text
from rd3_harness.protocol.io import parse_protocol, protocol_hash
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.record import Run, RunRecord, summarize_records

TOLERANCE = 1e-9


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    run_id: str
    headline: str
    checks: list[Check] = field(default_factory=list)
    protocol_diff: list[Change] = field(default_factory=list)
    """Settings of the named protocol that differ from the record's, when the hashes differ."""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, problems: list[str], ok_detail: str) -> None:
        self.checks.append(Check(name, not problems, "; ".join(problems[:5]) if problems else ok_detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "verified": self.ok,
            "run_id": self.run_id,
            "headline": self.headline,
            "checks": [c.__dict__ for c in self.checks],
            "protocol_diff": [
                {"path": c.path, "named": plain(c.old), "record": plain(c.new)} for c in self.protocol_diff
            ],
            "notes": self.notes,
        }

    def text(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        head = "VERIFIED" if self.ok else f"REJECTED ({len(failed)} of {len(self.checks)} checks failed)"
        lines = [f"{head}: {self.headline}"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}" for c in self.checks]
        if self.protocol_diff:
            lines.append(f"  the named protocol differs from the record's in {len(self.protocol_diff)} setting(s):")
            lines += [
                f"    {c.path}: named {value_text(c.old)}, record {value_text(c.new)}" for c in self.protocol_diff
            ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def read_export(path: Path) -> dict[str, Any]:
    """The document `rd3h results export RUN_ID` writes: {"run": ..., "records": [...]}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a JSON document ({exc})") from None
    if isinstance(data, list):
        raise UsageError(f"{path}: holds {len(data)} runs; export one with `rd3h results export RUN_ID`")
    if not isinstance(data, dict) or not isinstance(data.get("run"), dict) or not isinstance(data.get("records"), list):
        raise UsageError(f"{path}: expected {{'run': ..., 'records': [...]}} as `rd3h results export RUN_ID` writes")
    return data


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=0, abs_tol=TOLERANCE)


def verify(
    data: dict[str, Any],
    *,
    protocol: Protocol | None = None,
    protocol_ref: str | None = None,
    synset_dir: Path | None = None,
) -> Verdict:
    """Check an exported run; every check that fails is listed in the verdict."""
    try:
        run = Run.model_validate(data["run"])
    except ValidationError as exc:
        verdict = Verdict(str(data["run"].get("run_id", "?")), "the run document is not an rd3-run/1 record")
        verdict.add("run document", [f"does not validate: {exc.errors()[0]['msg']}"], "")
        return verdict
    p = run.plugin
    verdict = Verdict(
        run.run_id,
        f"run {run.run_id}: {p.name} {p.version} under {run.protocol_name} sha256:{short_hash(run.protocol_hash)}",
    )
    records, broken = [], []
    for i, item in enumerate(data["records"]):
        try:
            records.append(RunRecord.model_validate(item))
        except ValidationError as exc:
            broken.append(f"records[{i}] does not validate: {exc.errors()[0]['msg']}")
    verdict.add("record documents", broken, f"{len(records)} per-seed records")
    verdict.add("status", [] if run.status == "complete" else [f"run status is {run.status!r}"], "complete")

    recorded: Protocol | None = None
    try:
        recorded = parse_protocol(run.protocol, "run.protocol")
        recomputed = protocol_hash(recorded)
        problems = (
            []
            if recomputed == run.protocol_hash
            else [f"recomputed {short_hash(recomputed)} but the run claims {short_hash(run.protocol_hash)}"]
        )
    except ProtocolError as exc:
        problems = [f"run.protocol does not validate: {exc.problems[0]}"]
    verdict.add("protocol hash", problems, f"recomputed from run.protocol = {run.protocol_hash}")

    _check_records(verdict, run, records)
    if recorded is not None:
        _check_seeds(verdict, recorded, records)
    _check_summary(verdict, run, records)

    if protocol is not None:
        expected = protocol_hash(protocol)
        name = protocol_ref or protocol.name
        if expected == run.protocol_hash:
            verdict.add("named protocol", [], f"{name} has the record's hash")
        else:
            verdict.add(
                "named protocol",
                [f"{name} is sha256:{short_hash(expected)}, the record's is sha256:{short_hash(run.protocol_hash)}"],
                "",
            )
            if recorded is not None:
                verdict.protocol_diff = diff_settings(protocol, recorded)
    else:
        verdict.notes.append("protocol not compared with a named one (pass --protocol)")
    if synset_dir is not None:
        _check_synset(verdict, run, synset_dir)
    else:
        verdict.notes.append("synthetic set not checked (pass --synset DIR)")
    return verdict


def _check_records(verdict: Verdict, run: Run, records: list[RunRecord]) -> None:
    expected = {
        "protocol_hash": run.protocol_hash,
        "run_id": run.run_id,
        "method": run.plugin.name,
        "plugin_version": run.plugin.version,
        "method_config_hash": run.method_config_hash,
        "synset_sha256": run.synset.sha256 if run.synset else None,
        "teacher_sha256": (run.teacher or {}).get("sha256"),
    }
    problems = []
    for r in records:
        for key, value in expected.items():
            if getattr(r, key) != value:
                problems.append(f"{r.student} seed {r.seed}: {key} {getattr(r, key)!r} != run's {value!r}")
    verdict.add("records match the run", problems, "every record carries the run's protocol hash, set and teacher")


def _check_seeds(verdict: Verdict, protocol: Protocol, records: list[RunRecord]) -> None:
    ev = protocol.evaluation
    want = {(s.architecture, seed) for s in ev.students for seed in ev.seeds}
    have = [(r.student, r.seed) for r in records]
    problems = []
    if len(set(have)) != len(have):
        problems.append("a (student, seed) appears more than once")
    if missing := sorted(want - set(have)):
        problems.append(f"missing {', '.join(f'{s} seed {n}' for s, n in missing[:5])}")
    if extra := sorted(set(have) - want):
        problems.append(f"not in the protocol: {', '.join(f'{s} seed {n}' for s, n in extra[:5])}")
    best = ev.report.mode == "best"
    for r in records:
        if r.epochs != ev.epochs:
            problems.append(f"{r.student} seed {r.seed}: {r.epochs} epochs, the protocol says {ev.epochs}")
        if r.test_set_selection != best or r.report_mode != ev.report.mode:
            problems.append(
                f"{r.student} seed {r.seed}: report mode {r.report_mode!r}, the protocol says {ev.report.mode!r}"
            )
        if not best and (r.top1 != r.final_top1 or r.selected_epoch != r.epochs):
            problems.append(f"{r.student} seed {r.seed}: reported top-1 is not the final epoch's")
        if best and r.top1 < r.final_top1:
            problems.append(f"{r.student} seed {r.seed}: best-of-run top-1 is below the final epoch's")
    verdict.add(
        "seeds and students",
        problems,
        f"{len(ev.students)} student(s) x seeds {list(ev.seeds)}, report {ev.report.mode}",
    )


def _check_summary(verdict: Verdict, run: Run, records: list[RunRecord]) -> None:
    recomputed = {s.student: s for s in summarize_records(records)}
    claimed = {s.student: s for s in run.summary}
    problems = []
    if set(recomputed) != set(claimed):
        problems.append(f"summary covers {sorted(claimed)}, records cover {sorted(recomputed)}")
    for student in sorted(set(recomputed) & set(claimed)):
        a, b = recomputed[student], claimed[student]
        for key in ("mean", "std", "ci95_low", "ci95_high", "top5_mean"):
            if not _close(getattr(a, key), getattr(b, key)):
                problems.append(f"{student} {key}: records give {getattr(a, key)}, summary says {getattr(b, key)}")
        for key in ("n", "seeds", "test_set_selection"):
            if getattr(a, key) != getattr(b, key):
                problems.append(f"{student} {key}: records give {getattr(a, key)}, summary says {getattr(b, key)}")
    verdict.add("per-seed numbers vs summary", problems, "mean, std and 95% CI recomputed from the per-seed records")


def _check_synset(verdict: Verdict, run: Run, folder: Path) -> None:
    from rd3_harness.data.synset import load_synset

    if run.synset is None:
        verdict.add("synthetic set", ["the run records no synthetic set"], "")
        return
    try:
        synset, manifest = load_synset(folder)
    except UsageError as exc:
        verdict.add("synthetic set", [str(exc)], "")
        return
    problems = []
    if manifest["sha256"] != run.synset.sha256:
        problems.append(
            f"files are sha256 {short_hash(manifest['sha256'])}, the run used {short_hash(run.synset.sha256)}"
        )
    if len(synset.images) != run.synset.count:
        problems.append(f"{len(synset.images)} images, the run used {run.synset.count}")
    verdict.add("synthetic set", problems, f"{folder}: files match the run's sha256 {short_hash(run.synset.sha256)}")
