"""`benchmarks/gpu_check.py` on a machine without CUDA: one line, exit 0, no report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run the script itself")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--report", str(report)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == ["gpu_check: no CUDA device on this machine; nothing checked"]
    assert not report.exists()
