"""torchrun with 2 gloo processes on the CPU gives the single-process numbers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from rd3_harness.results.store import Store

SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"


def test_two_gloo_processes_match_one(rd3_settings, smoke_workspace, tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    # an instance-norm student: per-sample statistics, so sharding the batch changes nothing but
    # float summation order (BatchNorm would use per-rank statistics on the CPU; on CUDA the
    # engine converts it to SyncBatchNorm)
    data["evaluation"].update(epochs=10, students=[{"architecture": "convnet_d1_w32_in"}])
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RD3_HOME": str(rd3_settings.home), "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    args = ["-m", "rd3_harness", "run", "--plugin", "random", "-p", str(protocol), "--json"]

    def run(out: Path, *launcher: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, *launcher, *args, "-o", str(out)], env=env, capture_output=True, text=True, timeout=600
        )

    one = run(tmp_path / "one")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    two = run(tmp_path / "two", "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr  # torchrun exits 0 only when every rank does
    (single,) = json.loads(one.stdout)["records"]
    (record,) = json.loads(two.stdout)["records"]  # only rank 0 prints
    assert abs(record["top1"] - single["top1"]) <= 0.005  # stated tolerance: half a point
    assert abs(record["final_loss"] - single["final_loss"]) <= 1e-3
    assert len(Store.in_folder(tmp_path / "two").records()) == 1  # only rank 0 writes
