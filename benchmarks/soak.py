"""Fault soak: K writer processes run smoke-sized `rd3h run` evaluations into one output folder
while a driver SIGKILLs them and restarts them; then the store is checked.

Kills alternate between aimed ones, which wait until a writer has written an epoch checkpoint of an
evaluation it is running (then a random fraction of a second more), and ones at random moments
(start-up, synthesis, store writes, training, the test pass). A kill counts as mid-evaluation when
the killed writer had checkpointed an evaluation whose record is not in the store after its death.
A killed writer is started again with the same command (unless its run had just completed).

Checks: `PRAGMA integrity_check` is ok; every row of the store parses and agrees with its columns
(no partial record); each job has exactly one run, complete, with exactly one record per
(student, seed) of its protocol and no other; every evaluation killed mid-way was resumed from its
checkpoint; every record of a job that was killed equals, field by field, the record of the same
command run uninterrupted (no checkpoints) into a separate folder.

Writers are forked from multiprocessing's forkserver, which has imported torch and the harness once,
and run the `rd3h` command line; so a restart costs no interpreter start-up. `tests/test_soak.py`
runs a short soak in CI; the long one:

    nice -n 10 python benchmarks/soak.py --writers 8 --minutes 12 --out /tmp/soak
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import multiprocessing
import os
import random
import sqlite3
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "protocols" / "cpu" / "smoke.v1.yaml"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SEEDS_PER_JOB = 2
RESULT_FIELDS = (
    "protocol_hash",
    "synset_sha256",
    "teacher_sha256",
    "top1",
    "top5",
    "final_top1",
    "final_top5",
    "selected_epoch",
    "epochs",
    "steps",
    "images_seen",
    "final_loss",
)
PRELOAD = ["torch", "torchvision", "safetensors.torch", "rd3_harness.cli", "rd3_harness.runner", "soak"]


@dataclass
class SoakResult:
    writers: int
    kills: int
    kills_mid_evaluation: int
    jobs: int
    runs: int
    records: int
    resumed: int
    """Records of evaluations that continued from an epoch checkpoint."""
    compared: int
    """Records compared with the same command run uninterrupted."""
    minutes: float
    integrity: str
    problems: list[str] = field(default_factory=list)

    @property
    def records_lost(self) -> int:
        return sum(p.startswith("lost") for p in self.problems)


def soak_protocol(folder: Path, epochs: int) -> Path:
    """The smoke protocol with `epochs` epochs and no synthesis teachers (its seeds are set per job
    with `--seeds`)."""
    data = yaml.safe_load(SMOKE.read_text())
    data["name"], data["evaluation"]["epochs"] = "soak", epochs
    data.pop("synthesis_teachers")  # the random baseline needs none; the label teacher stays
    path = folder / "soak.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def sliced_fashion_mnist(folder: Path, train: int, test: int, source: Path = FASHION_MNIST) -> Path:
    """A data root holding the first `train` training and `test` test images of Fashion-MNIST (the
    test pass dominates a smoke evaluation; a slice keeps it short)."""
    target = folder / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("t10k", test)):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            name = f"{split}-{kind}"
            raw = next(source / n for n in (f"{name}.gz", name) if (source / n).is_file())
            data = gzip.decompress(raw.read_bytes()) if raw.suffix == ".gz" else raw.read_bytes()
            ndim = data[3]
            dims = list(struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]))
            item = 1
            for d in dims[1:]:
                item *= d
            head = data[:4] + struct.pack(f">{ndim}I", count, *dims[1:])
            (target / name).write_bytes(head + data[4 + 4 * ndim : 4 + 4 * ndim + count * item])
    return folder


def writer_env(home: Path, out: Path, checkpoint_every: int, data_root: Path | None) -> dict[str, str]:
    env = {
        "RD3_HOME": str(home),
        "RD3_OUT": str(out),
        "RD3_DEVICE": "cpu",
        "RD3_THREADS": "1",
        "RD3_CHECKPOINT_EVERY": str(checkpoint_every),
        "RD3_LOAD_PLUGINS": "random",
    }
    return env if data_root is None else {**env, "RD3_DATA_ROOT": str(data_root)}


def _write(argv: list[str], env: dict[str, str], log: str) -> None:
    """A writer process: `rd3h ARGV` under `env`, its output appended to `log`."""
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    from rd3_harness.cli import app

    app(argv, prog_name="rd3h")


class Launcher:
    """Starts `rd3h` processes forked from a server that has imported torch and the harness."""

    def __init__(self, logs: Path):
        if str(Path(__file__).parent) not in sys.path:
            sys.path.insert(0, str(Path(__file__).parent))  # the forkserver imports this module as `soak`
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)
        self.target = importlib.import_module("soak")._write  # pickled by name, not as __main__'s
        self.logs, self.count = logs, 0
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, argv: list[str], env: dict[str, str]) -> tuple[multiprocessing.Process, Path]:
        self.count += 1
        log = self.logs / f"{self.count:04d}.log"
        proc = self.context.Process(target=self.target, args=(argv, env, str(log)), daemon=True)
        proc.start()
        return proc, log


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.is_file() else ""


@dataclass
class Writer:
    job: int
    proc: multiprocessing.Process
    log: Path
    born: float
    """Wall-clock time of its start (compared with checkpoint mtimes)."""


def job_seeds(job: int) -> list[int]:
    return list(range(job * SEEDS_PER_JOB, (job + 1) * SEEDS_PER_JOB))


def run_argv(protocol: Path, seeds: list[int]) -> list[str]:
    return ["run", "--plugin", "random", "-p", str(protocol), "--seeds", ",".join(map(str, seeds))]


def checkpoints(store_folder: Path) -> list[tuple[str, int, float]]:
    """(run id, seed, mtime) of every epoch checkpoint in the output folder."""
    found = []
    for path in store_folder.glob("checkpoints/*/seed*.pt"):
        try:
            found.append((path.parent.name, int(path.name[4:].split("-")[0]), path.stat().st_mtime))
        except (OSError, ValueError):  # removed meanwhile
            continue
    return found


def soak(
    out: Path,
    home: Path,
    *,
    writers: int,
    kills: int,
    mid_kills: int,
    minutes: float = 0.0,
    epochs: int = 30,
    checkpoint_every: int = 1,
    data_root: Path | None = None,
    max_seconds: float = 900,
    kill_gap: tuple[float, float] = (0.2, 2.0),
    aim_jitter: float = 0.5,
    seed: int = 0,
) -> SoakResult:
    """Train (or load) the teacher into `home`, then soak `out` until at least `kills` kills,
    `mid_kills` of them mid-evaluation, and `minutes` have passed, one kill every `kill_gap` seconds
    (uniform) at most; then check the store. Each killed job is also run uninterrupted (at most
    `writers` at a time, alongside the soak) into `out/reference`."""
    from rd3_harness.results.store import Store

    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    protocol = soak_protocol(out, epochs)
    folder, reference = out / "store", out / "reference"
    env = writer_env(home, folder, checkpoint_every, data_root)
    uninterrupted = writer_env(home, reference, 0, data_root)
    launcher = Launcher(out / "logs")
    teacher, log = launcher.start(["teacher", "train", "-p", str(protocol)], writer_env(home, out, 0, data_root))
    teacher.join(max_seconds)
    if teacher.exitcode != 0:
        raise RuntimeError(f"training the teacher exited {teacher.exitcode}:\n{_tail(log)}")
    rng = random.Random(seed)
    soaking = time.monotonic()
    slots: dict[int, Writer] = {}
    jobs, killed, mid = 0, 0, 0
    interrupted: set[tuple[str, int]] = set()  # (run id, seed) of evaluations killed mid-way
    to_compare: list[int] = []  # killed jobs whose uninterrupted run has not started
    comparing: dict[int, Writer] = {}
    compared: set[int] = set()
    store = Store.in_folder(folder)
    aim: tuple[int, Writer, float] | None = None  # (slot, writer, when)
    next_kill = time.monotonic() + rng.uniform(*kill_gap)

    def start(slot: int, job: int) -> None:
        born = time.time()
        slots[slot] = Writer(job, *launcher.start(run_argv(protocol, job_seeds(job)), env), born)

    def new_job(slot: int) -> None:
        nonlocal jobs
        jobs += 1
        start(slot, jobs - 1)

    def kind() -> str | None:
        """What the next kill is: aimed, random, or none (the soak is winding down)."""
        more_mid, more = mid < mid_kills, killed < kills or time.monotonic() - soaking < minutes * 60
        if more_mid and (killed % 2 == 0 or not more):
            return "aimed"
        return "random" if more else None

    def fresh(w: Writer, found: list[tuple[str, int, float]]) -> list[tuple[str, int]]:
        """(run id, seed) of the checkpoints this writer has written."""
        seeds = job_seeds(w.job)
        return [(run, s) for run, s, mtime in found if s in seeds and mtime >= w.born]

    def kill(slot: int) -> None:
        nonlocal killed, mid, next_kill
        next_kill = time.monotonic() + rng.uniform(*kill_gap)
        w = slots.pop(slot)
        running = fresh(w, checkpoints(folder))
        w.proc.kill()
        w.proc.join()
        killed += 1
        if w.job not in compared and w.job not in to_compare and w.job not in comparing:
            to_compare.append(w.job)
        recorded = {(r.run_id, r.seed) for run in {r for r, _ in running} for r in store.records(run)}
        lost = [e for e in running if e not in recorded]
        mid += bool(lost)
        interrupted.update(lost)
        seeds = job_seeds(w.job)
        if not any(r.status == "complete" for r in store.runs() if r.protocol["evaluation"]["seeds"] == seeds):
            start(slot, w.job)  # the same command again: it must continue the killed run
        elif kind() is not None:  # killed after its run completed: the same command would start another
            new_job(slot)

    def reap(group: dict[int, Writer], what: str) -> list[tuple[int, Writer]]:
        ended = [(k, w) for k, w in group.items() if w.proc.exitcode is not None]
        for k, w in ended:
            if w.proc.exitcode != 0:
                raise RuntimeError(f"{what} of job {w.job} exited {w.proc.exitcode}:\n{_tail(w.log)}")
            del group[k]
        return ended

    def pump() -> None:
        """Start uninterrupted runs of killed jobs, at most `writers` at once."""
        compared.update(w.job for _, w in reap(comparing, "uninterrupted run"))
        while to_compare and len(comparing) < writers:
            job = to_compare.pop(0)
            comparing[job] = Writer(
                job, *launcher.start(run_argv(protocol, job_seeds(job)), uninterrupted), time.time()
            )

    for slot in range(writers):
        new_job(slot)
    try:
        while slots or comparing or to_compare:
            if time.monotonic() - started > max_seconds:
                raise TimeoutError(f"soak did not finish in {max_seconds:.0f} s ({killed} kills, {mid} mid-evaluation)")
            for slot, _ in reap(slots, "writer"):
                if kind() is not None:  # keep every writer busy until the kills are done
                    new_job(slot)
            pump()
            what = kind() if slots and time.monotonic() >= next_kill else None
            if what == "aimed":
                if aim is None:
                    found = checkpoints(folder)
                    ready = [s for s, w in slots.items() if fresh(w, found)]
                    if ready:
                        slot = rng.choice(ready)
                        aim = (slot, slots[slot], time.monotonic() + rng.uniform(0, aim_jitter))
                elif time.monotonic() >= aim[2]:
                    if slots.get(aim[0]) is aim[1]:  # still that writer
                        kill(aim[0])
                    aim = None
            elif what == "random":
                kill(rng.choice(sorted(slots)))
            time.sleep(0.05)
    finally:
        for w in [*slots.values(), *comparing.values()]:
            w.proc.kill()
            w.proc.join()
    return check(
        folder,
        reference,
        jobs=jobs,
        killed_jobs=compared,
        interrupted=interrupted,
        summary=dict(writers=writers, kills=killed, kills_mid_evaluation=mid),
        minutes=(time.monotonic() - started) / 60,
    )


def check(
    folder: Path,
    reference: Path,
    *,
    jobs: int,
    killed_jobs: set[int],
    interrupted: set[tuple[str, int]],
    summary: dict,
    minutes: float,
) -> SoakResult:
    """Check the soaked store against the jobs and the uninterrupted runs of the killed ones."""
    from rd3_harness.results.record import Run, RunRecord
    from rd3_harness.results.store import STORE_NAME, Store

    problems: list[str] = []
    store = Store.in_folder(folder)
    integrity = store.integrity()
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    db = sqlite3.connect(folder / STORE_NAME)
    runs: list[Run] = []
    for run_id, status, document in db.execute("SELECT run_id, status, document FROM runs"):
        try:
            run = Run.model_validate_json(document)
        except ValueError as exc:
            problems.append(f"partial run row {run_id}: {exc}")
            continue
        if (run.run_id, run.status) != (run_id, status):
            problems.append(f"run row {run_id} ({status}) holds run {run.run_id} ({run.status})")
        runs.append(run)
    records: list[RunRecord] = []
    for run_id, student, seed, top1, document in db.execute(
        "SELECT run_id, student, seed, top1, document FROM records"
    ):
        try:
            record = RunRecord.model_validate_json(document)
        except ValueError as exc:
            problems.append(f"partial record {run_id}/{student}/{seed}: {exc}")
            continue
        if (record.run_id, record.student, record.seed, record.top1) != (run_id, student, seed, top1):
            problems.append(f"record row {run_id}/{student}/{seed} holds another record")
        records.append(record)
    db.close()

    by_run: dict[str, dict[tuple[str, int], RunRecord]] = {}
    for r in records:
        by_run.setdefault(r.run_id, {})[(r.student, r.seed)] = r
    job_of = {tuple(job_seeds(j)): j for j in range(jobs)}
    runs_of: dict[int, list[Run]] = {}
    for run in runs:
        seeds = tuple(run.protocol["evaluation"]["seeds"])
        if seeds not in job_of:
            problems.append(f"run {run.run_id} has seeds {list(seeds)} of no job")
            continue
        runs_of.setdefault(job_of[seeds], []).append(run)
        if run.status != "complete":
            problems.append(f"run {run.run_id} (seeds {list(seeds)}) is {run.state}")
        students = [s["architecture"] for s in run.protocol["evaluation"]["students"]]
        want = {(s, seed) for s in students for seed in seeds}
        got = set(by_run.get(run.run_id, {}))
        problems += [f"lost: run {run.run_id} has no record of {m}" for m in sorted(want - got)]
        problems += [f"run {run.run_id} has a record of {x} outside its protocol" for x in sorted(got - want)]
    for job in range(jobs):
        if len(runs_of.get(job, [])) != 1:
            problems.append(f"job {job} (seeds {job_seeds(job)}) has {len(runs_of.get(job, []))} runs, not 1")
    problems += [f"records of unknown run {o}" for o in sorted(set(by_run) - {r.run_id for r in runs})]

    for run_id, seed in sorted(interrupted):
        resumed = [r for (_, s), r in by_run.get(run_id, {}).items() if s == seed]
        if not resumed or any(r.resumed_from_epoch is None for r in resumed):
            problems.append(f"run {run_id} seed {seed} was killed mid-evaluation but not resumed from its checkpoint")

    ref_store = Store.in_folder(reference)
    seeds_of = {run.run_id: tuple(run.protocol["evaluation"]["seeds"]) for run in ref_store.runs()}
    uninterrupted: dict[tuple[int, ...], dict[tuple[str, int], RunRecord]] = {}
    for r in ref_store.records():
        uninterrupted.setdefault(seeds_of[r.run_id], {})[(r.student, r.seed)] = r
    compared = 0
    for job in sorted(killed_jobs):
        ref = uninterrupted.get(tuple(job_seeds(job)), {})
        for run in runs_of.get(job, []):
            for key, record in sorted(by_run.get(run.run_id, {}).items()):
                if key not in ref:
                    problems.append(f"no uninterrupted value for job {job} {key}")
                    continue
                compared += 1
                diff = [f for f in RESULT_FIELDS if getattr(record, f) != getattr(ref[key], f)]
                if diff:
                    values = ", ".join(f"{f} {getattr(record, f)} != {getattr(ref[key], f)}" for f in diff)
                    problems.append(f"job {job} {key} (attempt {record.attempt}) differs from uninterrupted: {values}")
    return SoakResult(
        **summary,
        jobs=jobs,
        runs=len(runs),
        records=len(records),
        resumed=sum(r.resumed_from_epoch is not None for r in records),
        compared=compared,
        minutes=minutes,
        integrity=integrity,
        problems=problems,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=12, help="keep killing for this long")
    parser.add_argument("--kills", type=int, default=10, help="at least this many kills")
    parser.add_argument("--mid-kills", type=int, default=5, help="at least this many of them mid-evaluation")
    parser.add_argument("--kill-gap", type=float, nargs=2, default=(2.0, 10.0), help="seconds between kills (uniform)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--slice", type=int, nargs=2, metavar=("TRAIN", "TEST"), help="a slice of Fashion-MNIST")
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("RD3_HOME", Path.home() / ".cache" / "rd3")))
    args = parser.parse_args()
    data_root = sliced_fashion_mnist(args.out / "data", *args.slice) if args.slice else None
    result = soak(
        args.out,
        args.home,
        writers=args.writers,
        kills=args.kills,
        mid_kills=args.mid_kills,
        minutes=args.minutes,
        epochs=args.epochs,
        data_root=data_root,
        max_seconds=args.max_seconds,
        kill_gap=tuple(args.kill_gap),
    )
    print(json.dumps({**result.__dict__, "records_lost": result.records_lost}, indent=2))
    sys.exit(1 if result.problems else 0)


if __name__ == "__main__":
    main()
