"""The short fault soak (`benchmarks/soak.py` runs the long one): four writers of smoke-sized
evaluations, on a slice of Fashion-MNIST, share one output folder while at least ten SIGKILLs
land, at least five of them inside an evaluation; the store must come out intact, each finished
(run, student, seed) recorded once, and every evaluation of a killed job equal to the same command
run uninterrupted. Also the restart path's own cases: a reused pid, the cost of a start."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def soak(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the writers' forkserver imports it by name
    module = importlib.import_module("soak")
    if not module.FASHION_MNIST.is_dir():
        pytest.skip(f"Fashion-MNIST is not installed in {module.FASHION_MNIST}")
    return module


def test_sigkilled_writers_leave_a_complete_consistent_store(soak, tmp_path):
    data_root = soak.sliced_fashion_mnist(tmp_path / "data", train=1000, test=500)
    result = soak.soak(
        tmp_path, tmp_path / "home", writers=4, kills=10, mid_kills=5, epochs=6, data_root=data_root, max_seconds=110
    )
    assert result.problems == []
    assert result.integrity == "ok" and result.records_lost == 0
    assert result.writers == 4 and result.kills >= 10
    assert result.kills_mid_evaluation >= 5  # checkpointed by the killed writer, no record yet
    assert result.records == result.runs * soak.SEEDS_PER_JOB and result.runs == result.jobs >= 4
    assert result.resumed >= 1 and result.compared >= result.resumed


def test_recording_the_environment_does_not_import_timm(monkeypatch):
    """Every (re)started run records the environment; importing timm for its version cost more
    than a smoke evaluation."""
    import sys
    from importlib import metadata

    import torch

    from rd3_harness.results.record import environment

    monkeypatch.setitem(sys.modules, "timm", None)  # importing it now raises ImportError
    assert environment(torch.device("cpu")).timm == metadata.version("timm")


def test_a_stale_run_whose_pid_is_taken_by_another_process_is_resumed(tmp_path):
    """After a power cut and reboot, or in a new container, the dead owner's pid can belong to a
    live process (pid 1, or the very process that looks for a run to continue): the run is still
    interrupted, and the same command continues it instead of starting another."""
    import os
    import socket

    import torch

    from rd3_harness.protocol.io import load_protocol
    from rd3_harness.results.record import PluginRef, Run, process_identity
    from rd3_harness.results.store import Store

    protocol = load_protocol(BENCHMARKS.parent / "protocols" / "cpu" / "smoke.v1.yaml")
    run = Run.start(
        protocol, "hash", "smoke", PluginRef(name="random", version="1"), {}, device=torch.device("cpu"), settings={}
    )
    run.run_key, run.pid, run.host = "key", os.getpid(), socket.gethostname()
    run.process = "another-boot/123"  # what the dead owner's process was
    store = Store.in_folder(tmp_path)
    store.put_run(run)
    assert run.state == "interrupted"
    assert store.resumable("key").run_id == run.run_id
    run.process = process_identity(os.getpid())  # the owner is this live process
    assert run.state == "running"
