"""`benchmarks/gpu_check.py` where no GPU is: one line and exit 0 without CUDA; its parts, rehearsed
on the CPU, run the trainer's real student step and a one-process torchrun job-parallel run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gpu_check
import pytest
import torch
from torchrun import launcher

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run the script itself")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--report", str(report)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["gpu_check: no CUDA device on this machine; nothing checked"]
    assert not report.exists()


def test_engine_and_floor_steps_run_in_every_precision():
    for precision in gpu_check.PRECISIONS:
        r = gpu_check.engine_vs_floor("convnet_d3_w128_bn", 32, 4, precision, 1, torch.device("cpu"))
        assert (r["precision"], r["batch"], r["resolution"]) == (precision, 4, 32)
        assert r["engine_images_per_s"] > 0 and r["floor_images_per_s"] > 0
        assert r["engine_over_floor"] == pytest.approx(r["engine_images_per_s"] / r["floor_images_per_s"])


def test_job_parallel_smoke_run_under_torchrun(tmp_path):
    r = gpu_check.smoke_run(tmp_path / "out", launcher(1), "cpu")
    assert r["returncode"] == 0, r.get("stderr_tail")
    assert len(r["top1"]) == 1 and 0.1 < r["top1"][0] <= 1  # one record of a trained student


@pytest.mark.slow
def test_rehearsal_writes_the_whole_report(tmp_path):
    report = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--rehearse", "--steps", "1", "--report", str(report)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = json.loads(report.read_text())
    cases = {(t["architecture"], t["resolution"], t["precision"]) for t in r["throughput"]}
    assert len(cases) == 9 and ("resnet18", 224, "bf16") in cases
    assert r["smoke_run"]["top1"] == r["nccl_job_parallel"]["top1"]
    assert r["whole_batch_norm"]["cases"] == 14 and r["whole_batch_norm"]["within_tolerance"]
    assert "resnet18" in done.stdout and done.stdout.strip().endswith(f"report: {report}")
