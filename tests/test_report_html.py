"""`rd3h report --html`: the static site of a small real store (smoke runs under two protocols),
checked as files and as rendered by headless Chromium (DOM, sorting, screenshot)."""

from __future__ import annotations

import os
import re
import struct
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rd3_harness.analysis import html_report
from rd3_harness.analysis.browser import INSTALL, dump_dom, find_chromium, tables
from rd3_harness.cli import app
from rd3_harness.hashing import short_hash
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol import Protocol, protocol_hash
from rd3_harness.protocol.library import resolve_protocol
from rd3_harness.results.store import Store

runner = CliRunner()
STUDENT = "convnet_d1_w32_bn"


def protocol_file(folder: Path, name: str, **evaluation) -> tuple[str, str]:
    """A variant of the smoke protocol written to `folder`; (path, hash)."""
    base, _ = resolve_protocol(get_plugins().registries, "cpu/smoke.v1")
    data = base.model_dump(mode="json")
    p = Protocol.model_validate({**data, "name": name, "evaluation": {**data["evaluation"], **evaluation}})
    path = folder / f"{name.replace('/', '-')}.yaml"
    path.write_text(yaml.safe_dump(p.model_dump(mode="json")))
    return str(path), protocol_hash(p)


@pytest.fixture(scope="module")
def store_dir(rd3_settings, smoke_workspace, tmp_path_factory) -> dict:
    """`random` and `rded` with two seeds under protocol a; `random` with one seed, best-of-run, under b."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RD3_HOME", str(rd3_settings.home))
    mp.setenv("RD3_DEVICE", "cpu")
    out = tmp_path_factory.mktemp("html-store")
    mp.setenv("RD3_OUT", str(out))
    folder = tmp_path_factory.mktemp("html-protocols")
    a, ha = protocol_file(folder, "html/a", epochs=2, seeds=[0, 1])
    b, hb = protocol_file(folder, "html/b", epochs=2, seeds=[0], report={"mode": "best", "every": 1})
    for args in (["-p", a, "--plugin", "random"], ["-p", a, "--plugin", "rded", "-c", "candidates=20"]):
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", "-p", b, "--plugin", "random"])
    assert result.exit_code == 0, result.output
    yield {"out": out, "a": ha, "b": hb}
    mp.undo()


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("site") / "report"
    result = runner.invoke(app, ["report", "-o", str(store_dir["out"]), "--html", str(dest)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(dest / "index.html")
    return dest


@pytest.fixture(scope="module")
def browser() -> None:
    """Headless Chromium: the tests fail without it in CI (CI=true), and are skipped elsewhere."""
    if find_chromium() is None:
        message = f"headless Chromium is needed for the HTML report tests: {INSTALL} (.ci/run does)"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(message)
        pytest.skip(message)


def page_of(site: Path, h: str) -> Path:
    return site / "protocols" / f"{short_hash(h)}.html"


def test_every_page_exists_and_nothing_leaves_the_folder(site, store_dir):
    store = Store.in_folder(store_dir["out"])
    runs = store.runs()
    assert len(runs) == 3
    for run in runs:
        assert (site / "runs" / f"{run.run_id}.html").is_file()
        assert (site / "runs" / f"{run.run_id}.json").is_file()
    assert page_of(site, store_dir["a"]).is_file() and page_of(site, store_dir["b"]).is_file()
    first, second = sorted((store_dir["a"], store_dir["b"]))
    diff = (site / "diffs" / f"{short_hash(first)}-{short_hash(second)}.html").read_text()
    assert "evaluation.seeds" in diff and "evaluation.report.mode" in diff
    assert len(list((site / "assets").glob("grid-*.png"))) == len({r.synset.sha256 for r in runs})  # one per set
    files = [p for p in site.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert not re.search(rb"https?://", data), f"{path.relative_to(site)} holds a web address"
        if path.suffix == ".html":
            text = data.decode()
            for ref in re.findall(r'(?:href|src)="([^"#]+)', text):
                assert "//" not in ref and (path.parent / ref).resolve().is_file(), f"{path.name}: broken link {ref}"
            assert '<link rel="stylesheet"' not in text and "<script src" not in text


def test_best_of_run_numbers_carry_their_flag(site, store_dir):
    flagged = page_of(site, store_dir["b"]).read_text()
    assert "†" in flagged and html_report.lb.FOOTNOTE.split(":")[0] in flagged
    assert "†" not in page_of(site, store_dir["a"]).read_text()


def test_rendered_tables_hold_the_store_records(site, store_dir, browser):
    store = Store.in_folder(store_dir["out"])
    index = tables(dump_dom(site / "index.html"))
    assert {attrs["data-hash"] for attrs, _ in index["protocols"]} == {store_dir["a"], store_dir["b"]}
    assert {attrs["data-run"] for attrs, _ in index["runs"]} == {r.run_id for r in store.runs()}
    for key in ("a", "b"):
        h = store_dir[key]
        page = tables(dump_dom(page_of(site, h)))
        complete = {r.run_id for r in store.runs(protocol_hash=h, status="complete")}
        assert {attrs["data-run"] for attrs, _ in page["leaderboard-0"]} == complete
        records = store.records(protocol_hash=h)
        rows = {(attrs["data-run"], int(attrs["data-seed"]), cells[4]) for attrs, cells in page["seeds-0"]}
        flag = " †" if key == "b" else ""
        assert rows == {(r.run_id, r.seed, f"{100 * r.top1:.2f}{flag}") for r in records}


def leaderboard(page: Path, fragment: str = "") -> list[tuple[str, float]]:
    """(method, mean top-1 %) of the page's first leaderboard, in the order Chromium rendered it."""
    rows = tables(dump_dom(page, fragment))["leaderboard-0"]
    return [(cells[1], float(cells[3].split()[0])) for _, cells in rows]


def test_sorting_by_the_address_fragment(site, store_dir, browser):
    page = page_of(site, store_dir["a"])
    default = leaderboard(page)
    assert len(default) == 2 and default == sorted(default, key=lambda r: -r[1])
    assert leaderboard(page, "sort=mean&dir=asc") == sorted(default, key=lambda r: r[1])
    assert leaderboard(page, "sort=method&dir=desc") == sorted(default, reverse=True)
    seeds = tables(dump_dom(page, "sort=top1&dir=desc"))["seeds-0"]
    top1 = [float(cells[4]) for _, cells in seeds]
    assert len(top1) == 4 and top1 == sorted(top1, reverse=True)


def test_screenshot(store_dir, tmp_path, browser):
    png = tmp_path / "shot.png"
    result = runner.invoke(
        app, ["report", "-o", str(store_dir["out"]), "--html", str(tmp_path / "s"), "--screenshot", str(png)]
    )
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1280, 900)
    assert len(data) > 20_000  # a rendered page, not a blank one


def test_check_finds_every_leaderboard_row_and_a_missing_one(store_dir, tmp_path, browser):
    dest = tmp_path / "checked"
    result = runner.invoke(app, ["report", "-o", str(store_dir["out"]), "--html", str(dest), "--check"])
    assert result.exit_code == 0, result.output
    assert "2 protocol page(s), 3 leaderboard row(s), all present" in result.stderr
    site = html_report.build(Store.in_folder(store_dir["out"]), dest)
    page = page_of(dest, store_dir["a"])
    text = page.read_text()
    row = re.search(r'<tr data-run="[^"]+" data-method="rded"[^>]*>.*?</tr>', text, re.S)
    page.write_text(text.replace(row.group(0), ""))
    problems = html_report.check(site)
    assert len(problems) == 1 and "leaderboard-0: rows missing" in problems[0] and "rded" in problems[0]


def test_without_matplotlib_the_page_says_so(store_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    site = html_report.build(Store.in_folder(store_dir["out"]), tmp_path / "site")
    assert site.notes and not list((tmp_path / "site" / "assets").glob("efficiency-*"))
    assert "rd3-harness[plot]" in page_of(tmp_path / "site", store_dir["a"]).read_text()


def test_refuses_a_folder_that_is_not_a_report(store_dir, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    result = runner.invoke(app, ["report", "-o", str(store_dir["out"]), "--html", str(tmp_path)])
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "mine.txt").read_text() == "keep me"
