"""Fault soak: K writer processes run smoke-sized `rd3h run` evaluations into one output folder
while a driver SIGKILLs random ones and restarts them; then the store is checked.

Checks: `PRAGMA integrity_check` is ok; every run is complete with exactly one record per
(student, seed) of its protocol and no record of anything else; every record parses; every
resumed or re-attempted evaluation equals the same seed's value from an uninterrupted reference
run. `tests/test_soak.py` runs a short one in CI.

    python benchmarks/soak.py --writers 8 --kills 60 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "protocols" / "cpu" / "smoke.v1.yaml"
SEEDS_PER_JOB = 2
COMPARED = ("top1", "top5", "final_top1", "final_loss", "steps")


@dataclass
class SoakResult:
    writers: int
    kills: int
    runs: int
    records: int
    resumed: int
    minutes: float
    integrity: str
    problems: list[str] = field(default_factory=list)

    @property
    def records_lost(self) -> int:
        return sum(p.startswith("lost") for p in self.problems)


def soak_protocol(folder: Path, epochs: int) -> Path:
    """The smoke protocol with `epochs` epochs (its seeds are set per job with `--seeds`)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["name"], data["evaluation"]["epochs"] = "soak", epochs
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _env(home: Path, out: Path, checkpoint_every: int) -> dict[str, str]:
    return {
        **os.environ,
        "RD3_HOME": str(home),
        "RD3_OUT": str(out),
        "RD3_DEVICE": "cpu",
        "RD3_THREADS": "1",
        "RD3_CHECKPOINT_EVERY": str(checkpoint_every),
        "RD3_LOAD_PLUGINS": "random",
    }


def _rd3h(protocol: Path, seeds: list[int], env: dict[str, str]) -> subprocess.Popen:
    seed_list = ",".join(map(str, seeds))
    return subprocess.Popen(
        [sys.executable, "-m", "rd3_harness", "run", "--plugin", "random", "-p", str(protocol), "--seeds", seed_list],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def soak(
    out: Path,
    home: Path,
    *,
    writers: int,
    kills: int,
    epochs: int = 30,
    checkpoint_every: int = 2,
    max_seconds: float = 600,
    min_age: float = 3.0,
    seed: int = 0,
) -> SoakResult:
    """Run the soak in `out` (teachers cached under `home`) and check the store. A writer is killed
    only after `min_age` seconds (so that kills land in the work, not in Python's start-up)."""
    from rd3_harness.results.store import Store

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    protocol = soak_protocol(out, epochs)
    env = _env(home, out / "store", checkpoint_every)
    rng = random.Random(seed)
    next_job, done, killed = 0, 0, 0
    slots: dict[int, tuple[list[int], subprocess.Popen]] = {}
    born: dict[int, float] = {}

    def start(slot: int, seeds: list[int]) -> None:
        slots[slot], born[slot] = (seeds, _rd3h(protocol, seeds, env)), time.monotonic()

    def new_job() -> list[int]:
        nonlocal next_job
        next_job += 1
        return list(range((next_job - 1) * SEEDS_PER_JOB, next_job * SEEDS_PER_JOB))

    for slot in range(writers):
        start(slot, new_job())
    next_kill = time.monotonic() + rng.uniform(1.0, 3.0)
    while slots:
        if time.monotonic() - started > max_seconds:
            for _, proc in slots.values():
                proc.kill()
                proc.wait()
            raise TimeoutError(f"soak did not finish in {max_seconds:.0f} s ({killed} kills, {done} jobs done)")
        for slot, (seeds, proc) in list(slots.items()):
            if proc.poll() is None:
                continue
            if proc.returncode != 0:
                raise RuntimeError(f"writer {slot} (seeds {seeds}) exited {proc.returncode}: {proc.stderr.read()}")
            proc.stderr.close()
            done += 1
            del slots[slot]
            if killed < kills:  # keep every writer busy until the kills are done
                start(slot, new_job())
        grown = sorted(k for k in slots if time.monotonic() - born[k] >= min_age)  # past the imports
        if killed < kills and grown and time.monotonic() >= next_kill:
            slot = rng.choice(grown)
            seeds, proc = slots[slot]
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            killed += 1
            start(slot, seeds)  # the same command again: it must continue the killed run
            next_kill = time.monotonic() + rng.uniform(0.3, 2.0)
        time.sleep(0.05)

    all_seeds = list(range(next_job * SEEDS_PER_JOB))
    reference = _rd3h(protocol, all_seeds, _env(home, out / "reference", 0))
    _, stderr = reference.communicate()
    if reference.returncode != 0:
        raise RuntimeError(f"reference run exited {reference.returncode}: {stderr}")
    uninterrupted = {r.seed: r for r in Store.in_folder(out / "reference").records()}
    return check(
        Store.in_folder(out / "store"),
        uninterrupted,
        writers=writers,
        kills=killed,
        jobs=next_job,
        minutes=(time.monotonic() - started) / 60,
    )


def check(store, uninterrupted: dict, *, writers: int, kills: int, jobs: int, minutes: float) -> SoakResult:
    """Compare the soaked store with the reference records, seed by seed."""
    problems: list[str] = []
    integrity = store.integrity()
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    runs, records, resumed = store.runs(), store.records(), 0
    by_run: dict[str, list] = {}
    for record in records:
        by_run.setdefault(record.run_id, []).append(record)
    expected_seeds = set()
    for run in runs:
        seeds = run.protocol["evaluation"]["seeds"]
        expected_seeds.update(seeds)
        if run.status != "complete":
            problems.append(f"run {run.run_id} (seeds {seeds}) is {run.state}")
        students = [s["architecture"] for s in run.protocol["evaluation"]["students"]]
        want = sorted((s, seed) for s in students for seed in seeds)
        got = sorted((r.student, r.seed) for r in by_run.get(run.run_id, []))
        if got != want:
            missing = sorted(set(want) - set(got))
            problems += [f"lost: run {run.run_id} has no record of {m}" for m in missing]
            if len(got) != len(set(got)) or set(got) - set(want):
                problems.append(f"run {run.run_id}: records {got}, expected {want}")
    if sorted(expected_seeds) != list(range(jobs * SEEDS_PER_JOB)) or len(runs) != jobs:
        problems.append(f"{len(runs)} runs covering seeds {sorted(expected_seeds)} for {jobs} jobs")
    for record in records:
        if record.attempt > 1 or record.resumed_from_epoch is not None:
            resumed += 1
        ref = uninterrupted.get(record.seed)
        if ref is None or any(getattr(record, k) != getattr(ref, k) for k in COMPARED):
            problems.append(f"seed {record.seed} (attempt {record.attempt}) differs from its uninterrupted value")
    orphans = set(by_run) - {r.run_id for r in runs}
    problems += [f"records of unknown run {o}" for o in sorted(orphans)]
    return SoakResult(writers, kills, len(runs), len(records), resumed, minutes, integrity, problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("RD3_HOME", Path.home() / ".cache" / "rd3")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = _env(args.home, args.out / "teacher", 0)
    protocol = soak_protocol(args.out, args.epochs)
    subprocess.run([sys.executable, "-m", "rd3_harness", "teacher", "train", "-p", str(protocol)], env=env, check=True)
    result = soak(
        args.out, args.home, writers=args.writers, kills=args.kills, epochs=args.epochs, max_seconds=args.max_seconds
    )
    print(json.dumps({**result.__dict__, "records_lost": result.records_lost}, indent=2))
    sys.exit(1 if result.problems else 0)


if __name__ == "__main__":
    main()
