"""`rd3h leaderboard` and `rd3h report` on a small store of hand-made runs (no training)."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rd3_harness.analysis.leaderboard import (
    CSV_COLUMNS,
    MixedProtocols,
    board,
    boards,
    csv_text,
    current,
    latex,
    markdown,
)
from rd3_harness.analysis.report import pyplot, report
from rd3_harness.cli import app
from rd3_harness.errors import UsageError
from rd3_harness.hashing import sha256_of
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol import Protocol, protocol_hash
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.results.record import (
    PluginRef,
    Run,
    RunRecord,
    SynsetRef,
    SynthesisCost,
    environment,
    summarize_records,
)
from rd3_harness.results.store import Store
from rd3_harness.synthesis import parse_config

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def protocols(tmp_path_factory) -> dict[str, tuple[Protocol, str]]:
    """Two protocols (two hashes) written to files: the smoke protocol and a 'legacy' variant."""
    base, _ = resolve_protocol(get_plugins().registries, "cpu/smoke.v1")
    data = base.model_dump(mode="json")
    folder = tmp_path_factory.mktemp("protocols")
    out = {}
    for name, epochs in (("standard", 20), ("legacy", 30)):
        p = Protocol.model_validate({**data, "name": name, "evaluation": {**data["evaluation"], "epochs": epochs}})
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(p.model_dump(mode="json")))
        out[name] = (p, str(path))
    return out


def put(
    store: Store,
    protocol: Protocol,
    source: str,
    method: str,
    values: list[float],
    synth_s: float,
    n: int,
    config: dict | None = None,
    version: str = "1.0",
) -> Run:
    """Store a complete run of `method` (method config `config`) with one record per seed (top-1 `values`)."""
    h = protocol_hash(protocol)
    run = Run(
        run_id=f"2026010{n}-000000-{method}-{h[:6]}",
        created=f"2026-01-0{n}T00:00:00Z",
        status="complete",
        protocol=protocol.model_dump(mode="json"),
        protocol_hash=h,
        protocol_name=protocol.name,
        protocol_version=protocol.version,
        protocol_source=source,
        plugin=PluginRef(name=method, version=version),
        method_config=config or {},
        method_config_hash=sha256_of(config or {}),
        synset=SynsetRef(sha256="s" * 64, path="/x", count=20, storage_bytes=1000 * n, pixel_bytes=15680),
        synthesis=SynthesisCost(wall_s=synth_s, cpu_s=synth_s, peak_memory_bytes=0, memory_kind="none"),
        teacher={"sha256": "t" * 64},
        environment=environment(torch.device("cpu")),
        settings={},
    )
    records = [
        RunRecord(
            run_id=run.run_id,
            protocol_hash=h,
            protocol_name=protocol.name,
            method=method,
            plugin_version=version,
            method_config_hash=run.method_config_hash,
            synset_sha256=run.synset.sha256,
            teacher_sha256="t" * 64,
            student="convnet_d1_w32_bn",
            seed=seed,
            top1=v,
            top5=1.0,
            final_top1=v,
            final_top5=1.0,
            report_mode="final",
            test_set_selection=False,
            selected_epoch=protocol.evaluation.epochs,
            epochs=protocol.evaluation.epochs,
            steps=10,
            images_seen=100,
            final_loss=0.1,
            train_wall_s=1.0,
            eval_wall_s=1.0,
            synthesis_wall_s=synth_s,
            storage_bytes=1000,
            device="cpu",
            created=run.created,
        )
        for seed, v in enumerate(values)
    ]
    run.summary = summarize_records(records)
    store.put_run(run)
    for r in records:
        store.put_record(r)
    return run


@pytest.fixture(scope="module")
def store(tmp_path_factory, protocols) -> Store:
    s = Store.in_folder(tmp_path_factory.mktemp("out"))
    standard, src = protocols["standard"]
    legacy, legacy_src = protocols["legacy"]
    put(s, standard, src, "random", [0.50, 0.52, 0.51], 0.01, 1)
    put(s, standard, src, "good", [0.58, 0.60, 0.59], 30.0, 2)
    put(s, standard, src, "meh", [0.52, 0.49, 0.53], 3.0, 3)
    put(s, standard, src, "good", [0.70, 0.71, 0.72], 40.0, 4)  # a later run of the same method replaces it
    put(s, legacy, legacy_src, "good", [0.40, 0.42, 0.41], 30.0, 5)
    return s


def test_one_table_never_holds_two_hashes(store):
    runs, records = store.runs(), store.records()
    assert len({r.protocol_hash for r in runs}) == 2
    with pytest.raises(MixedProtocols, match="one protocol hash"):
        board(runs, records, "convnet_d1_w32_bn")
    tables = boards(store)
    assert len(tables) == 2
    for t in tables:
        assert {store.run(e.run_id).protocol_hash for e in t.entries} == {t.protocol_hash}


def test_entries_gain_and_welch(store, protocols):
    (t,) = boards(store, protocol_hash(protocols["standard"][0]))
    assert [e.method for e in t.entries] == ["good", "meh", "random"]
    good, meh, random = t.entries
    assert good.values == [0.70, 0.71, 0.72] and good.best and good.p_vs_best is None
    assert good.gain_over_random == pytest.approx(0.71 - 0.51)
    assert random.gain_over_random == 0
    assert meh.p_vs_best is not None and meh.p_vs_best < 0.01
    assert good.ci95_low < good.mean < good.ci95_high
    assert t.random_hint is None
    (legacy,) = boards(store, protocol_hash(protocols["legacy"][0]))
    assert legacy.entries[0].gain_over_random is None
    assert legacy.random_hint == f"rd3h run --plugin random --protocol {protocols['legacy'][1]}"
    text = markdown([t, legacy])
    assert text.count("### ") == 2 and "| good |" in text and "No `random` baseline" in text


def test_configs_of_one_method_version_are_told_apart(tmp_path, protocols):
    s = Store.in_folder(tmp_path)
    standard, src = protocols["standard"]
    put(s, standard, src, "random", [0.50, 0.52, 0.51], 0.01, 1)
    put(s, standard, src, "gvbsm", [0.60, 0.61, 0.62], 9.0, 2, {"dd_weight": 1.0, "tau": 4.0})
    put(s, standard, src, "gvbsm", [0.55, 0.56, 0.57], 9.0, 3, {"dd_weight": 0.0, "tau": 4.0})
    put(s, standard, src, "rded", [0.58, 0.58, 0.59], 1.0, 4, {"factor": 2})
    put(s, standard, src, "d4m", [0.40, 0.41, 0.42], 5.0, 5, {"guidance": 8.0}, version="0.1.0")
    put(s, standard, src, "d4m", [0.59, 0.60, 0.61], 5.0, 6, {"guidance": 8.0}, version="0.2.0")
    (b,) = boards(s)
    assert [(e.method, e.variant) for e in b.entries] == [
        ("gvbsm", "dd_weight=1.0"),
        ("d4m", "0.2.0"),
        ("rded", ""),
        ("gvbsm", "dd_weight=0.0"),
        ("random", ""),
        ("d4m", "0.1.0"),
    ]
    text = markdown([b])
    assert "| gvbsm [dd_weight=1.0] | 1.0 |" in text and "| gvbsm [dd_weight=0.0] | 1.0 |" in text
    assert "| d4m [0.1.0] | 0.1.0 |" in text
    rows = list(csv.DictReader(io.StringIO(csv_text([b]))))
    assert [r["variant"] for r in rows] == ["dd_weight=1.0", "0.2.0", "", "dd_weight=0.0", "", "0.1.0"]


def test_current_keeps_the_installed_versions_default_configs(tmp_path, protocols):
    plugins = get_plugins()
    default = {m: parse_config(plugins.method(m).method, {}).model_dump(mode="json") for m in ("random", "rded")}
    version = {m: plugins.method(m).version for m in default}
    s = Store.in_folder(tmp_path)
    standard, src = protocols["standard"]
    put(s, standard, src, "random", [0.50, 0.52, 0.51], 0.01, 1, default["random"], version["random"])
    put(s, standard, src, "rded", [0.58, 0.58, 0.59], 1.0, 2, default["rded"], version["rded"])
    put(s, standard, src, "rded", [0.40, 0.41, 0.42], 1.0, 3, default["rded"], "0.0.1")  # an older version
    put(s, standard, src, "rded", [0.61, 0.60, 0.62], 1.0, 4, {**default["rded"], "factor": 1}, version["rded"])
    put(s, standard, src, "gone", [0.70, 0.71, 0.72], 1.0, 5)  # a plugin no longer installed
    (everything,) = boards(s)
    assert len(everything.entries) == 5
    (today,) = boards(s, keep=current(plugins))
    assert [(e.method, e.plugin_version, e.mean) for e in today.entries] == [
        ("rded", version["rded"], pytest.approx(0.5833, abs=1e-4)),
        ("random", version["random"], pytest.approx(0.51)),
    ]
    result = runner.invoke(app, ["leaderboard", "-o", str(tmp_path), "--current", "--json"])
    assert result.exit_code == 0, result.output
    assert [e["method"] for e in json.loads(result.stdout)[0]["entries"]] == ["rded", "random"]
    html = runner.invoke(app, ["report", "-o", str(tmp_path), "--html", str(tmp_path / "site"), "--current"])
    assert html.exit_code == 2 and "whole store" in html.output


def test_leaderboard_command(store, protocols):
    folder = str(store.path.parent)
    result = runner.invoke(app, ["leaderboard", "-o", folder, "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 2
    one = runner.invoke(app, ["leaderboard", "-o", folder, "--protocol", protocols["standard"][1], "--markdown"])
    assert one.exit_code == 0 and one.stdout.count("### ") == 1 and "standard" in one.stdout
    by_prefix = runner.invoke(app, ["leaderboard", "-o", folder, "-p", protocol_hash(protocols["legacy"][0])[:10]])
    assert by_prefix.exit_code == 0 and "good" in by_prefix.stdout
    assert "rd3h run --plugin random" in by_prefix.output
    missing = runner.invoke(app, ["leaderboard", "-o", folder, "--student", "resnet18"])
    assert missing.exit_code == 2 and "no complete runs" in missing.output


def test_leaderboard_formats(store, protocols):
    folder = str(store.path.parent)
    standard = protocol_hash(protocols["standard"][0])
    as_markdown = runner.invoke(app, ["leaderboard", "-o", folder, "-p", standard, "--markdown"]).stdout
    assert (
        runner.invoke(app, ["leaderboard", "-o", folder, "-p", standard, "--format", "markdown"]).stdout == as_markdown
    )
    as_json = runner.invoke(app, ["leaderboard", "-o", folder, "--format", "json"])
    assert json.loads(as_json.stdout) == json.loads(runner.invoke(app, ["leaderboard", "-o", folder, "--json"]).stdout)
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["leaderboard", "-o", folder, "-f", "csv"]).stdout)))
    assert len(rows) == 3 + 1 and set(rows[0]) == set(CSV_COLUMNS)
    good = next(r for r in rows if r["method"] == "good" and r["protocol_hash"] == standard)
    assert float(good["mean"]) == pytest.approx(0.71) and good["values"] == "0.7 0.71 0.72" and good["best"] == "True"
    tex = runner.invoke(app, ["leaderboard", "-o", folder, "--format", "latex"])
    assert tex.exit_code == 0, tex.output
    assert tex.stdout.count("\\begin{table}") == 2 and tex.stdout.count("\\toprule") == 2
    assert f"sha256:{standard[:12]}" in tex.stdout and "71.00 $\\pm$ 1.00" in tex.stdout
    assert "top-1 \\% (mean $\\pm$ std)" in tex.stdout and "convnet\\_d1\\_w32\\_bn" in tex.stdout
    bad = runner.invoke(app, ["leaderboard", "-o", folder, "--format", "latex", "--markdown"])
    assert bad.exit_code == 2 and "choose one output format" in bad.output
    assert runner.invoke(app, ["leaderboard", "-o", folder, "--format", "html"]).exit_code == 2


def test_latex_keeps_flags_and_escapes(store, protocols):
    (t,) = boards(store, protocol_hash(protocols["standard"][0]))
    t.protocol_name = "a_b & 50% #1 {x} ~^\\"
    t.entries[1].test_set_selection = True
    text = latex([t])
    assert (
        "\\caption{a\\_b \\& 50\\% \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{}, protocol"
        in text
    )
    (flagged,) = [line for line in text.splitlines() if line.startswith("meh ")]
    assert "$^\\dagger$" in flagged
    assert "$^\\dagger$ best-of-run: selected on the test set (protocol report mode \\texttt{best})" in text
    assert text.count("$^\\dagger$") == 2  # the flagged row and the footnote


def test_report_writes_the_figures(store, protocols, tmp_path):
    out = store.path.parent
    ablation = {
        "from": {"name": "legacy", "hash": protocol_hash(protocols["legacy"][0])},
        "to": {"name": "standard", "hash": protocol_hash(protocols["standard"][0])},
        "method": "good",
        "student": "convnet_d1_w32_bn",
        "seeds": [0, 1, 2],
        "total_change": 0.3,
        "steps": [
            {"label": "from legacy", "mean": 0.41, "std": 0.01},
            {"label": "epochs", "mean": 0.71, "std": 0.01},
        ],
    }
    (out / "ablations").mkdir(exist_ok=True)
    (out / "ablations" / "legacy-standard.json").write_text(json.dumps(ablation))
    written = report(
        store, out, tmp_path / "figures", legacy=protocols["legacy"][1], registries=get_plugins().registries
    )  # pairs "good" only
    names = sorted(p.name for p in written)
    assert len([n for n in names if n.startswith("efficiency-")]) == 2
    assert len([n for n in names if n.startswith("accuracy-")]) == 2
    assert "ablation-legacy-standard.png" in names
    assert any(n.startswith("legacy-vs-standard-") for n in names)
    for path in written:
        assert path.read_bytes()[:8] == PNG
    cli = runner.invoke(app, ["report", "-o", str(out), "--figures", str(tmp_path / "cli"), "--json"])
    assert cli.exit_code == 0, cli.output
    assert len(json.loads(cli.stdout)) == 5


def test_report_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError, match=r"rd3-harness\[plot\]"):
        pyplot()
