"""Scale-out and teacher reuse.

(a) the protocol's students x 4 seeds (>= 4 jobs) on the CPU three ways: job-parallel under
    torchrun (2 processes x 1 thread), one process x 2 threads, data-parallel (2 gloo processes x
    1 thread): wall times and the job-parallel ratios;
(b) K = 3 students with and without teacher reuse: total time, teacher forward passes and the
    teacher's share of the time.
Run: `python benchmarks/scale.py [--protocol P] [--epochs N] [--json]` (RD3_HOME must hold or
will receive the protocol's teacher).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.library import protocol_path
from rd3_harness.protocol.schema import Protocol
from rd3_harness.settings import Settings
from rd3_harness.training.labels import TeacherEnsemble
from rd3_harness.training.trainer import Engine
from rd3_harness.workspace import open_workspace


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def processes(protocol_file: Path, nproc: int, out: Path, *extra: str) -> tuple[float, list[dict]]:
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", free_port()]
    cmd += ["-m", "rd3_harness", "run", "--plugin", "random", "-p", str(protocol_file), "-o", str(out), "--json"]
    env = {**os.environ, "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
    cmd += list(extra)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, json.loads(done.stdout)["records"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", default="cpu/fmnist-ipc10.v1")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = protocol_path(get_plugins().registries, args.protocol)
    data = yaml.safe_load(source.read_text())
    data["evaluation"].update(epochs=args.epochs, seeds=[0, 1, 2, 3])
    protocol = Protocol.model_validate(data)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "p.yaml"
        file.write_text(yaml.safe_dump(data))
        tj, rj = processes(file, 2, Path(tmp) / "jobs")
        t1, r1 = processes(file, 1, Path(tmp) / "one")
        td, rd = processes(file, 2, Path(tmp) / "data", "--parallel", "data")
    single = {(r["student"], r["seed"]): r["top1"] for r in r1}
    result = {
        "jobs": len(r1),
        "job_parallel_2x1": {
            "wall_s": tj,
            "equal_to_one_process": {(r["student"], r["seed"]): r["top1"] for r in rj} == single,
        },
        "one_process_1x2": {"wall_s": t1},
        "data_parallel_2x1": {"wall_s": td},
        "job_over_data": tj / td,
        "job_over_one": tj / t1,
        "teacher_reuse": {
            "with": reuse(protocol, source, args.epochs, True),
            "without": reuse(protocol, source, args.epochs, False),
        },
    }
    with_, without = result["teacher_reuse"]["with"], result["teacher_reuse"]["without"]
    result["teacher_reuse"]["saving"] = 1 - with_["wall_s"] / without["wall_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.protocol}, {args.epochs} epochs, seeds 0-3: {result['jobs']} jobs, CPU")
    print(
        f"  job-parallel 2 x 1 thread:   {tj:7.1f} s  (records equal one process: {result['job_parallel_2x1']['equal_to_one_process']})"
    )
    print(f"  one process x 2 threads:     {t1:7.1f} s")
    print(f"  data-parallel 2 x 1 thread:  {td:7.1f} s")
    print(f"  job-parallel / data-parallel {result['job_over_data']:.2f}, / one process {result['job_over_one']:.2f}")
    for name, r in (("with teacher reuse", with_), ("without teacher reuse", without)):
        print(
            f"  K=3 {name:<22} {r['wall_s']:7.1f} s, {r['teacher_calls']} teacher passes, "
            f"teacher {100 * r['teacher_share']:.0f}% of the time"
        )
    print(f"  wall-time saving from reuse: {100 * result['teacher_reuse']['saving']:.0f}%")


if __name__ == "__main__":
    main()
