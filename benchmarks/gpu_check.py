"""GPU acceptance check, one process on a CUDA machine:

(a) a smoke run on cuda (`rd3h run --plugin random -p cpu/smoke.v1 --device cuda`);
(b) engine against compute floor, per precision (fp32, tf32, bf16) with channels_last, at 32 px
    (ConvNet-D3-W128, ResNet-18 with CIFAR stem) and 224 px (ResNet-18): the engine is the
    student step the trainer runs (augmentation, mixing, KL loss towards given logits,
    optimizer), the floor is forward + backward + optimizer step on a fixed batch; images/s each;
(c) a one-process NCCL job-parallel run (`torchrun --nproc_per_node 1 ... --device cuda`);
(d) the whole-batch BatchNorm of `--parallel data` on the device: two ranks sharing the GPU (gloo
    carries the CUDA tensors; NCCL wants a GPU per rank) against one process
    (benchmarks/whole_batch_ranks.py: torch's and timm's layers, uneven and empty shares).
Writes one JSON report (--report, default gpu_check.json) and prints a table. Without CUDA it
prints one line and exits 0. Run: `python benchmarks/gpu_check.py [--steps N] [--report FILE]`;
`--rehearse` runs every part on the CPU with batches of 2, to check the script where no GPU is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchrun import launcher

CASES = (("convnet_d3_w128_bn", 32, 256), ("resnet18_cifar", 32, 256), ("resnet18", 224, 128))
PRECISIONS = ("fp32", "tf32", "bf16")


def _command(cmd: list[str], **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run `cmd` with `env` added; its result entry: command, return code, wall time, and the tail
    of stderr when it failed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    result = {"command": " ".join(cmd), "returncode": done.returncode, "wall_s": time.perf_counter() - start}
    if done.returncode:
        result["stderr_tail"] = done.stderr[-2000:]
    return done, result


def smoke_run(out: Path, launcher: list[str], device: str = "cuda") -> dict:
    cmd = [sys.executable, *launcher, "-m", "rd3_harness", "run", "--plugin", "random", "-p", "cpu/smoke.v1"]
    done, result = _command([*cmd, "--device", device, "-o", str(out), "--json"], RD3_DEVICE=device)
    if done.returncode == 0:
        result["top1"] = [r["top1"] for r in json.loads(done.stdout)["records"]]
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step, steps: int, device: torch.device) -> float:
    for _ in range(3):  # warm-up (cuDNN plans, allocator)
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


def engine_vs_floor(
    arch: str, resolution: int, batch: int, precision: str, steps: int, device: torch.device = torch.device("cuda")
) -> dict:
    """Images/s of the trainer's student step and of a bare step of the same model (the CPU runs it in tests)."""
    from rd3_harness.distributed import World
    from rd3_harness.plugins import get_plugins
    from rd3_harness.protocol.library import resolve_protocol
    from rd3_harness.protocol.schema import Protocol, Student
    from rd3_harness.training.augment import Augmenter
    from rd3_harness.training.losses import Targets
    from rd3_harness.training.numerics import set_precision
    from rd3_harness.training.trainer import _Student

    registries = get_plugins().registries
    data = resolve_protocol(registries, "cpu/smoke.v1")[0].model_dump(mode="json")
    data["evaluation"].update(precision=precision, batch_size=batch)
    protocol = Protocol.model_validate(data)
    set_precision(precision)
    spec = Student(architecture=arch)
    student = _Student(spec, protocol, 0, 1, (3, resolution, resolution), 10, device, True, World(), registries.models)
    images = torch.randn(batch, 3, resolution, resolution, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    logits = torch.randn(batch, 10, device=device)
    augmenter = Augmenter(protocol.evaluation.augmentation, resolution)
    g = torch.Generator().manual_seed(0)

    def engine_step() -> None:
        p = augmenter.draw(batch, g).to(device)
        x = augmenter.mix(augmenter.apply(images.clone(), p), p, inplace=True)
        student.step(x, Targets(labels, labels, 1.0, logits=logits), 0, 0)

    x_fixed = images.contiguous(memory_format=torch.channels_last)
    model, opt = student.model, student.optimizer

    def floor_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x_fixed)
        loss = torch.nn.functional.cross_entropy(out.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    engine_s, floor_s = _timed(engine_step, steps, device), _timed(floor_step, steps, device)
    return {
        "architecture": arch,
        "resolution": resolution,
        "batch": batch,
        "precision": precision,
        "channels_last": True,
        "engine_images_per_s": steps * batch / engine_s,
        "floor_images_per_s": steps * batch / floor_s,
        "engine_over_floor": floor_s / engine_s,
    }


WHOLE_BATCH_RANKS = Path(__file__).with_name("whole_batch_ranks.py")
WHOLE_BATCH_TOLERANCE = 1e-4


def whole_batch_norm_check(report: Path, device: str = "cuda") -> dict:
    done, result = _command(
        [sys.executable, *launcher(2), str(WHOLE_BATCH_RANKS), str(report), device], OMP_NUM_THREADS="1"
    )
    if done.returncode == 0:
        cases = json.loads(report.read_text())
        result["cases"] = len(cases)
        result["max_diff"] = max(max(diffs.values()) for diffs in cases.values())
        result["within_tolerance"] = result["max_diff"] < WHOLE_BATCH_TOLERANCE
    return result


def check(device: torch.device, steps: int, batch: int | None = None) -> dict:
    """Every part of the check on `device`; `batch` overrides the cases' batch sizes."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type} (rehearsal)"
    report: dict = {"device": name, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        report["smoke_run"] = smoke_run(Path(tmp) / "smoke", [], device.type)
        report["throughput"] = [
            engine_vs_floor(arch, res, batch or case_batch, precision, steps, device)
            for arch, res, case_batch in CASES
            for precision in PRECISIONS
        ]
        report["nccl_job_parallel"] = smoke_run(Path(tmp) / "nccl", launcher(1), device.type)
        report["whole_batch_norm"] = whole_batch_norm_check(Path(tmp) / "whole_batch.json", device.type)
    return report


def print_table(report: dict) -> None:
    print(f"{report['device']}, torch {report['torch']}")
    for name in ("smoke_run", "nccl_job_parallel"):
        r = report[name]
        print(f"  {name:<18} rc {r['returncode']}  {r['wall_s']:6.1f} s  top-1 {r.get('top1')}")
    w = report["whole_batch_norm"]
    found = f"{w['cases']} cases, largest difference from one process {w['max_diff']:.1e}" if "cases" in w else "failed"
    print(
        f"  {'whole_batch_norm':<18} rc {w['returncode']}  {w['wall_s']:6.1f} s  {found} (tolerance {WHOLE_BATCH_TOLERANCE})"
    )
    print(f"  {'architecture':<20}{'px':>5}{'precision':>10}{'engine img/s':>14}{'floor img/s':>13}{'ratio':>7}")
    for t in report["throughput"]:
        print(
            f"  {t['architecture']:<20}{t['resolution']:>5}{t['precision']:>10}"
            f"{t['engine_images_per_s']:>14.0f}{t['floor_images_per_s']:>13.0f}{t['engine_over_floor']:>7.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--report", type=Path, default=Path("gpu_check.json"))
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="Run every part on the CPU with batches of 2 (and gloo), to check the script itself; the numbers mean nothing.",
    )
    args = parser.parse_args()
    if args.rehearse:
        report = check(torch.device("cpu"), args.steps, batch=2)
    elif torch.cuda.is_available():
        report = check(torch.device("cuda"), args.steps)
    else:
        print("gpu_check: no CUDA device on this machine; nothing checked")
        return 0
    args.report.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"report: {args.report}")
    ok = (
        report["smoke_run"]["returncode"] == 0
        and report["nccl_job_parallel"]["returncode"] == 0
        and report["whole_batch_norm"].get("within_tolerance", False)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
