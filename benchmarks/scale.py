"""Scale-out and teacher reuse.

(a) one process against two gloo processes under torchrun on the CPU, same protocol and global
    batch: accuracy difference and wall time;
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


def processes(protocol_file: Path, nproc: int, out: Path) -> tuple[float, list[dict]]:
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", free_port()]
    cmd += ["-m", "rd3_harness", "run", "--plugin", "random", "-p", str(protocol_file), "-o", str(out), "--json"]
    env = {**os.environ, "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // nproc))}
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
    data["evaluation"].update(epochs=args.epochs, seeds=[0])
    protocol = Protocol.model_validate(data)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "p.yaml"
        file.write_text(yaml.safe_dump(data))
        t1, r1 = processes(file, 1, Path(tmp) / "one")
        t2, r2 = processes(file, 2, Path(tmp) / "two")
    result = {
        "ddp": {
            "one_process": {"wall_s": t1, "top1": r1[0]["top1"]},
            "two_gloo_processes": {"wall_s": t2, "top1": r2[0]["top1"]},
            "top1_difference": r2[0]["top1"] - r1[0]["top1"],
        },
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
    d = result["ddp"]
    print(f"{args.protocol}, {args.epochs} epochs, 1 seed, CPU")
    print(f"  1 process:           {d['one_process']['wall_s']:7.1f} s  top-1 {100 * d['one_process']['top1']:.2f}%")
    print(
        f"  2 gloo processes:    {d['two_gloo_processes']['wall_s']:7.1f} s  top-1 {100 * d['two_gloo_processes']['top1']:.2f}%"
    )
    for name, r in (("with teacher reuse", with_), ("without teacher reuse", without)):
        print(
            f"  K=3 {name:<22} {r['wall_s']:7.1f} s, {r['teacher_calls']} teacher passes, "
            f"teacher {100 * r['teacher_share']:.0f}% of the time"
        )
    print(f"  wall-time saving from reuse: {100 * result['teacher_reuse']['saving']:.0f}%")


if __name__ == "__main__":
    main()
