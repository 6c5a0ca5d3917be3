"""`rd3h sweep` with submitit's local executor: 2 plugins x 2 smoke-sized protocols land 4
complete runs in one store; a rerun submits nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rd3_harness.results.store import Store

SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"


@pytest.mark.slow
def test_sweep_lands_every_run_once_with_the_local_executor(rd3_settings, smoke_workspace, tmp_path):
    pytest.importorskip("submitit")
    protocols = []
    for epochs in (2, 3):
        data = yaml.safe_load(SMOKE.read_text())
        data["evaluation"]["epochs"] = epochs
        path = tmp_path / f"p{epochs}.yaml"
        path.write_text(yaml.safe_dump(data))
        protocols += ["-p", str(path)]
    env = {**os.environ, "RD3_HOME": str(rd3_settings.home), "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rd3_harness", "sweep", "--plugins", "random,herding", *protocols]
    cmd += ["--executor", "local", "-o", str(out), "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["submitted"] == 4
    runs = Store.in_folder(out).runs()
    assert sorted((r.plugin.name, r.protocol_hash[:8]) for r in runs) == sorted(
        {(r.plugin.name, r.protocol_hash[:8]) for r in runs}
    )
    assert len(runs) == 4 and {r.status for r in runs} == {"complete"}
    assert len({r.protocol_hash for r in runs}) == 2 and {r.plugin.name for r in runs} == {"random", "herding"}
    assert all(len(Store.in_folder(out).records(r.run_id)) == 1 for r in runs)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"tasks": 4, "skipped": 4, "submitted": 0, "job_ids": []}
    assert len(Store.in_folder(out).runs()) == 4
