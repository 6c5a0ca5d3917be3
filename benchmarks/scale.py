"""Scale-out and teacher reuse.

(a) the protocol's students x 4 seeds (>= 4 jobs) on the CPU three ways: job-parallel under
    torchrun (2 processes x 1 thread), one process x 2 threads, data-parallel (2 gloo processes x
    1 thread): wall times, CPU seconds and the job-parallel ratios. The teacher and the synthetic
    set are prepared before any timing, so each timed command (`rd3h evaluate` of that set) only
    evaluates; its wall time includes process start-up and opening the dataset;
(b) K = 3 students with and without teacher reuse: total time, teacher forward passes and the
    teacher's share of the time.
Run: `python benchmarks/scale.py [--protocol P] [--epochs N] [--repeat R] [--json]` (RD3_HOME
must hold or will receive the protocol's teacher). `--repeat` times the three modes R times,
interleaved, on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torchrun import launcher

from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.library import protocol_path
from rd3_harness.protocol.schema import Protocol
from rd3_harness.runner import synthesize
from rd3_harness.settings import Settings
from rd3_harness.training.labels import TeacherEnsemble
from rd3_harness.training.trainer import Engine
from rd3_harness.workspace import open_workspace


def prepare(source: Path, out: Path) -> Path:
    """Train (or load) the label teachers and synthesize the set once, before anything is timed."""
    ws = open_workspace(get_plugins().registries, source, Settings(device="cpu", out=out))
    ws.label_teachers()
    return synthesize(get_plugins(), ws, "random").folder


def processes(protocol_file: Path, synset: Path, nproc: int, out: Path, *extra: str) -> dict:
    """One timed `rd3h evaluate` of the prepared set: nproc processes x (2 / nproc) threads."""
    cmd = [sys.executable]
    if nproc > 1:
        cmd += launcher(nproc)
    cmd += ["-m", "rd3_harness", "evaluate", str(synset), "-p", str(protocol_file), "-o", str(out), "--json"]
    threads = str(max(1, (os.cpu_count() or 2) // nproc))
    env = {**os.environ, "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": threads}
    cmd += list(extra)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)}\nexited {done.returncode}:\n{done.stderr[-4000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    records = json.loads(done.stdout)["records"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "engine_s": sum(r["train_wall_s"] + r["eval_wall_s"] for r in records),
        "top1": {f"{r['student']}/{r['seed']}": r["top1"] for r in records},
    }


class TimedTeacher(TeacherEnsemble):
    seconds = 0.0

    def __call__(self, x):
        start = time.perf_counter()
        out = super().__call__(x)
        self.seconds += time.perf_counter() - start
        return out


def reuse(protocol: Protocol, source: Path, epochs: int, shared: bool) -> dict:
    data = protocol.model_dump(mode="json")
    students = ["convnet_d3_w32_bn", "convnet_d2_w32_bn", "convnet_d4_w32_bn"]
    data["evaluation"].update(epochs=epochs, seeds=[0], students=[{"architecture": a} for a in students])
    p = Protocol.model_validate(data)
    ws = open_workspace(get_plugins().registries, source, Settings(device="cpu"))
    g = torch.Generator().manual_seed(0)
    idx = torch.cat([ws.train.sample_indices(c, p.ipc, g) for c in range(10)])
    engine = Engine(
        p,
        ws.train.get(idx),
        ws.train.labels[idx],
        [ws.teacher(p.teacher).model],
        ws.test.subset(torch.arange(10)),
        models=ws.registries.models,
        device=torch.device("cpu"),
        teacher_reuse=shared,
    )
    engine.teacher.__class__ = TimedTeacher
    start = time.perf_counter()
    engine.run()
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "teacher_calls": engine.teacher.calls,
        "teacher_s": engine.teacher.seconds,
        "teacher_share": engine.teacher.seconds / wall,
    }


MODES = {
    "job_parallel_2x1": (2, ()),
    "one_process_1x2": (1, ()),
    "data_parallel_2x1": (2, ("--parallel", "data")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="cpu/fmnist-ipc10.v1")
    parser.add_argument("--epochs", type=int, default=None, help="Evaluation epochs (default: the protocol's).")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-reuse", action="store_true", help="Skip (b), the teacher-reuse comparison.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = protocol_path(get_plugins().registries, args.protocol)
    data = yaml.safe_load(source.read_text())
    epochs = args.epochs or data["evaluation"]["epochs"]
    data["evaluation"].update(epochs=epochs, seeds=[0, 1, 2, 3])
    protocol = Protocol.model_validate(data)
    trials: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "p.yaml"
        file.write_text(yaml.safe_dump(data))
        synset = prepare(file, Path(tmp) / "prep")
        for i in range(args.repeat):
            for mode, (nproc, extra) in MODES.items():
                trial = processes(file, synset, nproc, Path(tmp) / f"{mode}-{i}", *extra)
                trials[mode].append(trial)
                print(f"{mode} run {i + 1}: wall {trial['wall_s']:.1f} s, CPU {trial['cpu_s']:.1f} s", file=sys.stderr)
    best = {mode: min(t["wall_s"] for t in runs) for mode, runs in trials.items()}
    tj, t1, td = best["job_parallel_2x1"], best["one_process_1x2"], best["data_parallel_2x1"]
    single = trials["one_process_1x2"][0]["top1"]
    result = {
        "protocol": args.protocol,
        "epochs": epochs,
        "jobs": len(single),
        "torch": torch.__version__,
        "trials": trials,
        "best_wall_s": best,
        "job_parallel_equal_to_one_process": all(t["top1"] == single for t in trials["job_parallel_2x1"]),
        "max_top1_diff_from_one_process": {
            mode: max(abs(t["top1"][k] - v) for t in trials[mode] for k, v in single.items())
            for mode in ("job_parallel_2x1", "data_parallel_2x1")
        },
        "job_over_data": tj / td,
        "job_over_one": tj / t1,
    }
    if not args.no_reuse:
        result["teacher_reuse"] = {
            "with": reuse(protocol, source, epochs, True),
            "without": reuse(protocol, source, epochs, False),
        }
        with_, without = result["teacher_reuse"]["with"], result["teacher_reuse"]["without"]
        result["teacher_reuse"]["saving"] = 1 - with_["wall_s"] / without["wall_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.protocol}, {epochs} epochs, seeds 0-3: {result['jobs']} jobs, CPU, {os.cpu_count()} cores")
    for mode, label in zip(MODES, ("job-parallel 2 x 1 thread", "one process x 2 threads", "data-parallel 2 x 1")):
        walls = ", ".join(f"{t['wall_s']:.1f}" for t in trials[mode])
        cpus = ", ".join(f"{t['cpu_s']:.1f}" for t in trials[mode])
        print(f"  {label:<26} wall {best[mode]:7.1f} s (runs: {walls}; CPU s: {cpus})")
    diff = result["max_top1_diff_from_one_process"]
    print(
        f"  top-1 against one process: job-parallel equal {result['job_parallel_equal_to_one_process']}, at most "
        f"{100 * diff['job_parallel_2x1']:.2f} points apart; data-parallel at most "
        f"{100 * diff['data_parallel_2x1']:.2f} points (1 thread per process against 2: equal digits need equal "
        "thread counts, as tests/test_distributed.py runs them)"
    )
    print(f"  job-parallel / data-parallel {result['job_over_data']:.2f}, / one process {result['job_over_one']:.2f}")
    if args.no_reuse:
        return
    for name, r in (("with teacher reuse", with_), ("without teacher reuse", without)):
        print(
            f"  K=3 {name:<22} {r['wall_s']:7.1f} s, {r['teacher_calls']} teacher passes, "
            f"teacher {100 * r['teacher_share']:.0f}% of the time"
        )
    print(f"  wall-time saving from reuse: {100 * result['teacher_reuse']['saving']:.0f}%")


if __name__ == "__main__":
    main()
