"""torchrun on the CPU (gloo): job-parallel ranks give the single-process records exactly, a
killed rank loses nothing on rerun, data-parallel matches one process; the NCCL device binding."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from torchrun import launcher

from rd3_harness import distributed
from rd3_harness.results.store import Store

SMOKE = Path(__file__).resolve().parents[1] / "protocols" / "cpu" / "smoke.v1.yaml"


def _protocol(tmp_path: Path, **evaluation) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    data["evaluation"].update(evaluation)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _command(protocol: Path, out: Path, nproc: int, *extra: str) -> list[str]:
    args = ["-m", "rd3_harness", "run", "--plugin", "random", "-p", str(protocol), "-o", str(out), "--json"]
    return [sys.executable, *(launcher(nproc) if nproc > 1 else []), *args, *extra]


def _env(rd3_settings) -> dict[str, str]:
    return {**os.environ, "RD3_HOME": str(rd3_settings.home), "RD3_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


TWO_BY_TWO = {
    "epochs": 4,
    "seeds": [0, 1],
    "students": [{"architecture": "convnet_d1_w32_bn"}, {"architecture": "convnet_d1_w32_in"}],
}


def test_job_parallel_ranks_give_the_single_process_records(rd3_settings, smoke_workspace, tmp_path):
    protocol, env = _protocol(tmp_path, **TWO_BY_TWO), _env(rd3_settings)
    one = _run(_command(protocol, tmp_path / "one", 1), env)
    two = _run(_command(protocol, tmp_path / "two", 2), env)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr  # torchrun exits 0 only when every rank does
    single = {(r["student"], r["seed"]): r for r in json.loads(one.stdout)["records"]}
    stored = Store.in_folder(tmp_path / "two").records()
    assert sorted((r.student, r.seed) for r in stored) == sorted(single)  # one record per job
    for r in stored:  # bit for bit: each job is the single-process computation
        assert (r.top1, r.top5, r.final_loss) == tuple(
            single[r.student, r.seed][k] for k in ("top1", "top5", "final_loss")
        )
    (run,) = Store.in_folder(tmp_path / "two").runs()
    assert run.status == "complete" and len(run.summary) == 2 and run.settings["parallel"] == "jobs"


def test_a_killed_rank_loses_no_job_and_a_rerun_redoes_none(rd3_settings, smoke_workspace, tmp_path):
    # 8 jobs: rank 0 gets seeds 0 and 1 (two lockstep pairs), rank 1 seeds 2 and 3; rank 1 is
    # killed once its first pair is stored
    protocol, env = _protocol(tmp_path, **{**TWO_BY_TWO, "epochs": 6, "seeds": [0, 1, 2, 3]}), _env(rd3_settings)
    out = tmp_path / "out"
    cmd = _command(protocol, out, 2)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store, deadline, victim = None, time.monotonic() + 300, None
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "results.sqlite").is_file():
            store = Store.in_folder(out)
            seeds = {r.seed for r in store.records()}
            if seeds & {2, 3}:  # rank 1 has committed at least one job
                victim = _rank_pid(proc.pid, rank=1)
                break
        time.sleep(0.2)
    assert victim is not None, "rank 1 never committed a record"
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    before = {(r.student, r.seed): r for r in store.records()}
    assert len(before) < 8
    again = _run(cmd, env)
    assert again.returncode == 0, again.stderr
    after = {(r.student, r.seed): r for r in store.records()}
    assert len(store.records()) == 8 and len(after) == 8  # every job once
    for job, record in before.items():  # finished jobs were not redone
        assert after[job].created == record.created
    runs = store.runs()
    assert [r.status for r in runs] == ["complete"] and runs[0].attempt == 2


def _rank_pid(agent: int, rank: int) -> int | None:
    """The worker process torchrun started with RANK=rank (a child of the launcher)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(agent)], capture_output=True, text=True).stdout
    for pid in map(int, out.split()):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_data_parallel_two_gloo_processes_match_one(rd3_settings, smoke_workspace, tmp_path):
    # a BatchNorm student and batches of 19 from 20 images: shares of 10 and 9, then of 1 and none.
    # BatchNorm takes the whole batch's statistics and each rank's loss is weighted by its share,
    # so two ranks compute what one process does up to the order of float sums
    protocol = _protocol(tmp_path, epochs=10, batch_size=19, students=[{"architecture": "convnet_d1_w32_bn"}])
    env = _env(rd3_settings)
    one = _run(_command(protocol, tmp_path / "one", 1), env)
    two = _run(_command(protocol, tmp_path / "two", 2, "--parallel", "data"), env)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    (single,) = json.loads(one.stdout)["records"]
    (record,) = json.loads(two.stdout)["records"]  # only rank 0 prints
    assert abs(record["top1"] - single["top1"]) <= 0.002  # here equal; float order may flip a few test images
    assert abs(record["final_loss"] - single["final_loss"]) <= 1e-4  # here 3e-7 apart
    assert len(Store.in_folder(tmp_path / "two").records()) == 1  # only rank 0 writes


def fake_torchrun(monkeypatch, rank: int) -> list:
    """A 2-process torchrun environment for this process as `rank`, with process-group creation
    and device binding recorded instead of done; returns the list of recorded calls."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: calls.append(("init_process_group", kw)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: rank)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_world", distributed.World())
    return calls


def test_nccl_binds_the_rank_to_its_device_before_the_group(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    calls = fake_torchrun(monkeypatch, rank=1)
    world = distributed.init_from_env(torch.device("cuda"), "jobs")
    bound = torch.device("cuda", 1)
    assert calls == [("set_device", bound), ("init_process_group", {"backend": "nccl", "device_id": bound})]
    assert (world.rank, world.size, world.local_rank, world.mode) == (1, 2, 1, "jobs")
    assert not world.data_parallel and world.shard(5) == slice(3, 5)


def test_gloo_on_the_cpu_binds_nothing(monkeypatch):
    calls = fake_torchrun(monkeypatch, rank=0)
    assert distributed.init_from_env(torch.device("cpu"), "data").data_parallel
    assert calls == [("init_process_group", {"backend": "gloo"})]
