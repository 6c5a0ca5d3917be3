"""`benchmarks/cpu_study.py`: the plan of the whole study (dry run), and one real pass on the smoke
protocol with RDED and random under a standard and a legacy hash, rerun to check it resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rd3_harness.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cpu_study.py"
SMOKE = ROOT / "protocols" / "cpu" / "smoke.v1.yaml"


def study(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_dry_run_plans_every_method_under_both_protocols_and_random_under_every_hash(tmp_path):
    done = study("-o", str(tmp_path / "store"), "--dry-run", "--json", "--threads", "2")
    assert done.returncode == 0, done.stderr
    planned = json.loads(done.stdout)["planned"]
    runs = [t for t in planned if t["kind"] == "run"]
    assert not any(t["done"] for t in planned) and not (tmp_path / "store").exists()
    standard = {t["plugin"] for t in runs if t["protocol"] == "cpu/fmnist-ipc10.v1"}
    assert standard == {"sre2l", "cda", "lpld", "rded", "gvbsm", "edc", "dwa", "herding", "kcenter", "d4m"} | {
        "minimax",
        "random",
    }
    legacy = {t["plugin"]: t["protocol"] for t in runs if t["role"] == "legacy" and t["plugin"] != "random"}
    assert legacy == {m: f"cpu/legacy-{m}.v1" for m in ("sre2l", "cda", "lpld", "rded", "gvbsm", "edc", "dwa")} | {
        "d4m": "cpu/legacy-d4m.v1",
        "minimax": "cpu/legacy-minimax.v1",
    }
    # random once under every legacy hash (SRe2L, CDA, LPLD and D4M share one; RDED and Minimax another)
    random_hashes = [t["protocol_hash"] for t in runs if t["plugin"] == "random" and t["role"] == "legacy"]
    method_hashes = {t["protocol_hash"] for t in runs if t["role"] == "legacy" and t["plugin"] != "random"}
    assert sorted(random_hashes) == sorted(method_hashes) and len(random_hashes) == 5
    assert all(
        t["argv"][1:3] == ["--threads", "2"] and t["argv"][-2:] == ["-o", str(tmp_path / "store")] for t in planned
    )
    walks = [(t["plugin"], t["protocol"]) for t in planned if t["kind"] == "ablate"]
    assert walks == [
        ("sre2l", "cpu/legacy-sre2l.v1"),
        ("random", "cpu/legacy-sre2l.v1"),
        ("rded", "cpu/legacy-rded.v1"),
    ]
    only = study("-o", str(tmp_path / "store"), "--dry-run", "--json", "--only", "herding", "--no-ablations")
    assert [(t["plugin"], t["protocol"]) for t in json.loads(only.stdout)["planned"]] == [
        ("random", "cpu/fmnist-ipc10.v1"),
        ("herding", "cpu/fmnist-ipc10.v1"),
    ]
    wrong = study("-o", str(tmp_path / "store"), "--dry-run", "--only", "sre2l,nosuch")
    assert wrong.returncode == 2 and "nosuch" in wrong.stderr and "choose from" in wrong.stderr


@pytest.mark.slow
def test_smoke_study_runs_reports_and_resumes(rd3_settings, smoke_workspace, tmp_path):
    data = yaml.safe_load(SMOKE.read_text())
    data["name"] = "test/legacy-rded"
    data["evaluation"]["epochs"] += 1
    (tmp_path / "legacy-rded.v1.yaml").write_text(yaml.safe_dump(data))
    env = {**os.environ, "RD3_HOME": str(rd3_settings.home), "RD3_DEVICE": "cpu"}
    out = tmp_path / "store"
    args = ["-o", str(out), "--only", "rded", "--standard", "cpu/smoke.v1", "--threads", "1"]
    args += ["--legacy", str(tmp_path / "legacy-{method}.v1.yaml"), "--json"]
    first = study(*args, env=env, timeout=900)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert [(t["kind"], t["plugin"], t["role"]) for t in result["ran"]] == [
        ("run", "random", "standard"),
        ("run", "random", "legacy"),
        ("run", "rded", "standard"),
        ("run", "rded", "legacy"),
        ("ablate", "rded", "walk"),
    ]
    runs = Store.in_folder(out).runs(status="complete")
    assert sorted(
        (r.plugin.name, r.protocol_name) for r in runs if not r.protocol_source.startswith("rd3h ablate")
    ) == [
        ("random", "cpu/smoke"),
        ("random", "test/legacy-rded"),
        ("rded", "cpu/smoke"),
        ("rded", "test/legacy-rded"),
    ]
    rded = next(r for r in result["results"] if r["method"] == "rded")
    assert abs(rded["standard_gain"] - (rded["standard"]["mean"] - result["results"][-1]["standard"]["mean"])) < 1e-12
    assert rded["legacy"]["mean"] != rded["standard"]["mean"] or rded["legacy_hash"] != result["standard"]["hash"]
    md = result["markdown"]
    assert (
        "| rded | `test/legacy-rded`" in md and "### cpu/smoke  sha256:" in md and "**rded** (`test/legacy-rded`" in md
    )
    assert any(p.name.startswith("legacy-vs-standard-") for p in (out / "figures").iterdir())
    again = study(*args, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    assert [t["kind"] for t in json.loads(again.stdout)["ran"]] == ["ablate"]  # a walk only reuses stored steps
    assert len(Store.in_folder(out).runs()) == len(Store.in_folder(out).runs(status="complete"))
