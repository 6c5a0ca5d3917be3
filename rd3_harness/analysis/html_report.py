"""`rd3h report --html DIR`: the results store as one self-contained static site.

No server and no network: every page carries its CSS and its small sorting script inline, images
are copied under `DIR/assets/`, every link is relative, so the folder opens from disk and can be
zipped or served as it is. Pages:

- `index.html`: the protocols by hash, and every run (no numbers: hashes are never ranked together);
- `protocols/<hash>.html`: per student the leaderboard (sortable by clicking a header, or with
  `#sort=<column>&dir=asc|desc` in the address), the per-seed numbers, the gains over `random`
  with Welch 95% intervals, the efficiency figure; each method's grid of synthetic images; the
  protocol's settings and links to the reviewer's diff against every other protocol of the store;
- `diffs/<hash>-<hash>.html`: the setting-level diff of two protocols;
- `runs/<run id>.html`: a run's records, summary, environment and settings, beside the exported
  JSON (`runs/<run id>.json`, what `rd3h results verify` reads).

Best-of-run numbers (selected on the test set) carry † wherever they appear.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rd3_harness.analysis import leaderboard as lb
from rd3_harness.analysis.report import efficiency_figure, pyplot
from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.protocol.diff import diff_metadata, diff_settings, plain, value_text
from rd3_harness.protocol.io import dump_yaml
from rd3_harness.protocol.schema import Protocol
from rd3_harness.results.record import Run, RunRecord
from rd3_harness.results.stats import difference_ci, welch_t_test
from rd3_harness.results.store import export_document
from rd3_harness.version import __version__

GRID = "grid.png"
"""The image grid `rd3h run` saves in each synthetic-set folder."""
DAGGER = " †"
MARKER = ".rd3-report"
"""The file that marks a folder as a report, which the next report may rewrite."""
SUBFOLDERS = ("protocols", "diffs", "runs", "assets")

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
header{background:#1d2330;color:#fff;padding:10px 24px}header a{color:#9cc4ff;margin-right:14px}
main{padding:8px 24px 40px;max-width:1400px}h1{font-size:22px}h2{font-size:18px;margin-top:28px}
h3{font-size:15px;margin-top:20px}code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f0f2f5;padding:10px;overflow:auto;max-height:480px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #d5d9e0;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}code.id{white-space:nowrap}pre.kv{margin:0;padding:0;background:none;max-height:none;white-space:pre-wrap}th{background:#eef1f5}
table.sortable th[data-key]{cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.best td{font-weight:600}.note{color:#5a6372}.flag{color:#b0400b}.warn{color:#b0400b;font-weight:600}
figure{display:inline-block;margin:6px 18px 12px 0;vertical-align:top}figure img{max-width:560px;border:1px solid #d5d9e0}
figcaption{font-size:12px;color:#5a6372}.grid img{image-rendering:pixelated;height:360px;width:auto;max-width:100%}
"""

SCRIPT = """
(function(){
function value(row,i){var c=row.cells[i];if(!c)return null;
var v=c.hasAttribute('data-sort')?c.getAttribute('data-sort'):c.textContent.trim();
if(v==='')return null;var n=Number(v);return isNaN(n)?v.toLowerCase():n;}
function sortTable(table,key,dir){
var heads=table.tHead.rows[0].cells,i=-1,j;
for(j=0;j<heads.length;j++){if(heads[j].getAttribute('data-key')===key)i=j;}
if(i<0)return;
var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows),s=dir==='desc'?-1:1;
rows.sort(function(a,b){var x=value(a,i),y=value(b,i);
if(x===null)return y===null?0:1;if(y===null)return -1;
if(typeof x!==typeof y){x=String(x);y=String(y);}return x<y?-s:(x>y?s:0);});
rows.forEach(function(r){body.appendChild(r);});
for(j=0;j<heads.length;j++)heads[j].removeAttribute('aria-sort');
heads[i].setAttribute('aria-sort',dir==='desc'?'descending':'ascending');}
var tables=document.querySelectorAll('table.sortable');
Array.prototype.forEach.call(tables,function(table){
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){
var key=th.getAttribute('data-key');if(!key)return;
th.addEventListener('click',function(){
var dir=th.getAttribute('aria-sort')==='ascending'?'desc':'asc';sortTable(table,key,dir);
try{history.replaceState(null,'','#sort='+encodeURIComponent(key)+'&dir='+dir);}catch(e){}});});});
var want=new URLSearchParams(location.hash.slice(1)),key=want.get('sort');
if(key){Array.prototype.forEach.call(tables,function(t){sortTable(t,key,want.get('dir')==='desc'?'desc':'asc');});}
})();
"""


@dataclass
class Column:
    key: str
    """The name `#sort=<key>` and the header click sort by."""
    label: str


@dataclass
class Cell:
    """A table cell: its HTML, and the value sorting uses (None: sort by the text)."""

    html: str
    sort: float | str | None = None
    numeric: bool = False


@dataclass
class ProtocolGroup:
    """Every run of the store under one protocol hash."""

    hash: str
    runs: list[Run]
    protocol: Protocol | None
    problem: str | None
    boards: list[lb.Board] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list)

    @property
    def names(self) -> str:
        return " = ".join(dict.fromkeys(r.protocol_name for r in self.runs))

    @property
    def short(self) -> str:
        return short_hash(self.hash)


@dataclass
class Site:
    """What `build` wrote."""

    root: Path
    index: Path
    notes: list[str] = field(default_factory=list)
    largest: Path | None = None
    """The protocol page with the most leaderboard entries (for a screenshot)."""
    expected: dict[Path, dict[str, set[str]]] = field(default_factory=dict)
    """Per page, per leaderboard table id, the run ids its rows must show (what `check` reads)."""


def safe_name(text: str) -> str:
    """`text` as a file name: letters, digits, dot, dash and underscore only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def run_page(run_id: str) -> str:
    return f"runs/{safe_name(run_id)}.html"


def protocol_page(h: str) -> str:
    return f"protocols/{short_hash(h)}.html"


def diff_page(a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"diffs/{short_hash(first)}-{short_hash(second)}.html"


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _num(value: float | None) -> float | str:
    return "" if value is None else value


def _flag(flagged: bool) -> str:
    return f'<span class="flag">{DAGGER}</span>' if flagged else ""


def _link(href: str, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>'


def table(columns: list[Column], rows: Iterable[tuple[dict[str, str], list[Cell]]], table_id: str) -> str:
    """A sortable table; each row is (attributes of its `<tr>`, cells)."""
    head = "".join(
        f'<th data-key="{escape(c.key)}"{" aria-sort=descending" if c.key == "mean" else ""}>{escape(c.label)}</th>'
        for c in columns
    )
    body = []
    for attributes, cells in rows:
        attrs = "".join(f' {k}="{escape(v)}"' for k, v in attributes.items())
        tds = "".join(
            f"<td{' class=n' if c.numeric else ''}"
            + (f' data-sort="{escape(str(c.sort))}"' if c.sort is not None else "")
            + f">{c.html}</td>"
            for c in cells
        )
        body.append(f"<tr{attrs}>{tds}</tr>")
    return (
        f'<table class="sortable" id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def key_values(data: dict[str, Any]) -> str:
    """A two-column table of a document's fields (nested values as JSON)."""
    rows = []
    for key, value in data.items():
        shown = value if isinstance(value, str) else json.dumps(value, indent=1, default=str)
        rows.append(f'<tr><th>{escape(str(key))}</th><td><pre class="kv">{escape(shown)}</pre></td></tr>')
    return f"<table>{''.join(rows)}</table>"


def page(title: str, body: str, depth: int) -> str:
    """A whole HTML document with the CSS and the sorting script inline; `depth` is the folder depth
    below the site root (for relative links)."""
    up = "../" * depth
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><a href="{up}index.html">rd3-harness report</a></header>'
        f"<main><h1>{escape(title)}</h1>{body}</main><script>{SCRIPT}</script></body></html>\n"
    )


def footnote(flagged: bool) -> str:
    return f'<p class="note flag">{escape(lb.FOOTNOTE)}</p>' if flagged else ""


def _group(h: str, runs: list[Run], records: list[RunRecord], tables: list[lb.Board]) -> ProtocolGroup:
    latest = runs[-1]
    try:
        protocol, problem = Protocol.model_validate(latest.protocol), None
    except ValidationError as exc:
        protocol, problem = None, f"the stored protocol does not validate against this harness's schema: {exc}"
    return ProtocolGroup(h, runs, protocol, problem, [b for b in tables if b.protocol_hash == h], records)


def collect(store, protocol_hash: str | None = None, student: str | None = None) -> list[ProtocolGroup]:
    """The store's runs grouped by protocol hash (by protocol name, then hash), with their boards."""
    by_hash: dict[str, list[Run]] = {}
    for run in store.runs(protocol_hash=protocol_hash):
        by_hash.setdefault(run.protocol_hash, []).append(run)
    tables = lb.boards(store, protocol_hash, student)
    groups = [_group(h, runs, store.records(protocol_hash=h), tables) for h, runs in by_hash.items()]
    return sorted(groups, key=lambda g: (g.names, g.hash))


class Builder:
    def __init__(self, store, root: Path):
        self.store = store
        self.root = root
        self.site = Site(root, root / "index.html")
        self.grids: dict[str, str | None] = {}
        try:
            pyplot()
            self.plot_problem = None
        except UsageError as exc:
            self.plot_problem = str(exc)
            self.site.notes.append(f"no figures: {exc}")

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def grid(self, run: Run) -> str | None:
        """The site path of the run's synthetic-image grid (copied into assets/ once per set), or None."""
        if run.synset is None:
            return None
        key = run.synset.sha256
        if key not in self.grids:
            source, target = Path(run.synset.path) / GRID, None
            if source.is_file():
                target = f"assets/grid-{safe_name(key[:16])}.png"
                (self.root / "assets").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, self.root / target)
            self.grids[key] = target
        return self.grids[key]

    def efficiency(self, b: lb.Board) -> str:
        if self.plot_problem:
            return f'<p class="warn">The efficiency figure is missing: {escape(self.plot_problem)}.</p>'
        name = f"assets/efficiency-{short_hash(b.protocol_hash)}-{safe_name(b.student)}.png"
        efficiency_figure(b, self.root / name)
        return (
            f'<figure><img src="../{name}" alt="accuracy against time-to-synthesize">'
            "<figcaption>Effectiveness against efficiency: top-1 (mean ± std over seeds) against"
            " time-to-synthesize, log scale; upper left is best.</figcaption></figure>"
        )

    # pages ---------------------------------------------------------------------------------

    def index(self, groups: list[ProtocolGroup]) -> None:
        columns = [
            Column("hash", "protocol hash"),
            Column("name", "protocol"),
            Column("dataset", "dataset"),
            Column("ipc", "IPC"),
            Column("students", "students"),
            Column("seeds", "seeds"),
            Column("runs", "runs (complete / all)"),
            Column("methods", "methods"),
        ]
        rows = []
        for g in groups:
            p = g.protocol
            complete = sum(r.status == "complete" for r in g.runs)
            rows.append(
                (
                    {"data-hash": g.hash},
                    [
                        Cell(f"<code class=id>{_link(protocol_page(g.hash), g.short)}</code>", g.hash),
                        Cell(escape(g.names)),
                        Cell(escape(p.dataset.name) if p else "?"),
                        Cell(str(p.ipc) if p else "?", p.ipc if p else "", True),
                        Cell(escape(", ".join(s.architecture for s in p.evaluation.students)) if p else "?"),
                        Cell(",".join(map(str, p.evaluation.seeds)) if p else "?"),
                        Cell(f"{complete} / {len(g.runs)}", complete, True),
                        Cell(escape(", ".join(dict.fromkeys(r.plugin.name for r in g.runs)))),
                    ],
                )
            )
        run_columns = [
            Column("run", "run"),
            Column("created", "created"),
            Column("status", "status"),
            Column("method", "method"),
            Column("version", "version"),
            Column("hash", "protocol hash"),
            Column("protocol", "protocol"),
        ]
        runs = sorted((r for g in groups for r in g.runs), key=lambda r: (r.created, r.run_id))
        run_rows = [
            (
                {"data-run": r.run_id},
                [
                    Cell(f"<code class=id>{_link(run_page(r.run_id), r.run_id)}</code>", r.run_id),
                    Cell(escape(r.created)),
                    Cell(escape(r.state)),
                    Cell(escape(r.plugin.name)),
                    Cell(escape(r.plugin.version)),
                    Cell(f"<code class=id>{_link(protocol_page(r.protocol_hash), short_hash(r.protocol_hash))}</code>"),
                    Cell(escape(r.protocol_name)),
                ],
            )
            for r in runs
        ]
        notes = "".join(f'<p class="warn">{escape(n)}</p>' for n in self.site.notes)
        body = (
            f'<p class="note">{len(groups)} protocol hash(es), {len(runs)} run(s) from'
            f" <code>{escape(str(self.store.path))}</code>; rd3-harness {escape(__version__)}."
            " Numbers under different protocol hashes are not comparable: each hash has its own"
            f" page and leaderboards.</p>{notes}"
            "<h2>Protocols</h2>"
            + table(columns, rows, "protocols")
            + "<h2>Runs</h2>"
            + table(run_columns, run_rows, "runs")
        )
        self.write("index.html", page("Results", body, 0))

    def leaderboard(self, b: lb.Board, tid: str) -> str:
        columns = [
            Column("rank", "#"),
            Column("method", "method"),
            Column("version", "version"),
            Column("mean", "top-1 % (mean ± std)"),
            Column("ci95", "95% CI"),
            Column("gain", "gain vs random (pp)"),
            Column("p", "p vs best"),
            Column("synthesis_s", "synthesis s"),
            Column("storage", "storage"),
            Column("seeds", "seeds"),
            Column("run", "run"),
        ]
        rows = []
        for rank, e in enumerate(b.entries, 1):
            shown = lb.row(e)
            rows.append(
                (
                    {"data-run": e.run_id, "data-method": e.method, **({"class": "best"} if e.best else {})},
                    [
                        Cell(str(rank), rank, True),
                        Cell(escape(shown["method"])),
                        Cell(escape(e.plugin_version)),
                        Cell(
                            escape(shown["top-1 % (mean ± std)"].removesuffix(DAGGER)) + _flag(e.test_set_selection),
                            e.mean,
                            True,
                        ),
                        Cell(escape(shown["95% CI"]), _num(e.ci95_low), True),
                        Cell(escape(shown["gain vs random (pp)"]), _num(e.gain_over_random), True),
                        Cell(escape(shown["p vs best"]), 0 if e.best else _num(e.p_vs_best), True),
                        Cell(escape(shown["synthesis s"]), _num(e.synthesis_wall_s), True),
                        Cell(escape(shown["storage"]), _num(e.storage_bytes), True),
                        Cell(escape(shown["seeds"])),
                        Cell(f"<code class=id>{_link('../' + run_page(e.run_id), e.run_id)}</code>"),
                    ],
                )
            )
        hint = (
            f'<p class="note">No <code>random</code> baseline under this hash: <code>{escape(b.random_hint)}</code></p>'
            if b.random_hint
            else ""
        )
        return table(columns, rows, tid) + hint

    def per_seed(self, b: lb.Board, records: list[RunRecord], tid: str) -> str:
        columns = [
            Column("method", "method"),
            Column("version", "version"),
            Column("run", "run"),
            Column("seed", "seed"),
            Column("top1", "top-1 %"),
            Column("top5", "top-5 %"),
            Column("final_top1", "final-epoch top-1 %"),
            Column("epoch", "reported epoch"),
            Column("train_s", "train s"),
        ]
        runs = {e.run_id for e in b.entries}
        rows = []
        for r in sorted(records, key=lambda r: (r.method, r.run_id, r.seed)):
            if r.run_id not in runs or r.student != b.student:
                continue
            rows.append(
                (
                    {"data-run": r.run_id, "data-seed": str(r.seed)},
                    [
                        Cell(escape(r.method)),
                        Cell(escape(r.plugin_version)),
                        Cell(f"<code class=id>{_link('../' + run_page(r.run_id), r.run_id)}</code>"),
                        Cell(str(r.seed), r.seed, True),
                        Cell(_pct(r.top1) + _flag(r.test_set_selection), r.top1, True),
                        Cell(_pct(r.top5), r.top5, True),
                        Cell(_pct(r.final_top1), r.final_top1, True),
                        Cell(f"{r.selected_epoch} / {r.epochs}", r.selected_epoch, True),
                        Cell(f"{r.train_wall_s:.1f}", r.train_wall_s, True),
                    ],
                )
            )
        return table(columns, rows, tid)

    def gains(self, b: lb.Board, tid: str) -> str:
        base = lb.baseline_entry(b.entries)
        if base is None:
            return '<p class="note">No gains: there is no <code>random</code> entry under this hash.</p>'
        columns = [
            Column("method", "method"),
            Column("version", "version"),
            Column("mean", "top-1 % (mean)"),
            Column("gain", "gain vs random (pp)"),
            Column("gain_ci", "95% CI of the gain (Welch)"),
            Column("p_random", "p vs random (Welch)"),
        ]
        rows = []
        for e in b.entries:
            if e is base:
                continue
            low, high = difference_ci(e.values, base.values)
            ci = "-" if low != low else f"[{100 * low:+.2f}, {100 * high:+.2f}]"
            p = welch_t_test(e.values, base.values)[2]
            flag = _flag(e.test_set_selection or base.test_set_selection)
            rows.append(
                (
                    {"data-run": e.run_id},
                    [
                        Cell(escape(lb.label(e))),
                        Cell(escape(e.plugin_version)),
                        Cell(_pct(e.mean) + _flag(e.test_set_selection), e.mean, True),
                        Cell(_pct(e.gain_over_random, sign=True) + flag, _num(e.gain_over_random), True),
                        Cell(escape(ci), "" if low != low else low, True),
                        Cell("-" if p != p else f"{p:.3f}", "" if p != p else p, True),
                    ],
                )
            )
        if not rows:
            return '<p class="note">Only the <code>random</code> baseline is ranked under this hash.</p>'
        return (
            f'<p class="note">Against <code>random</code> {escape(base.plugin_version)} (run'
            f" {_link('../' + run_page(base.run_id), base.run_id)}): {_pct(base.mean)}"
            f"{_flag(base.test_set_selection)} %.</p>" + table(columns, rows, tid)
        )

    def grids_section(self, g: ProtocolGroup) -> str:
        shown = []
        for b in g.boards:
            for e in b.entries:
                if e.run_id not in {run for run, _ in shown}:
                    shown.append((e.run_id, e.method))
        if not shown:
            shown = [(r.run_id, r.plugin.name) for r in g.runs if r.status == "complete"]
        by_id = {r.run_id: r for r in g.runs}
        figures = []
        for run_id, method in shown:
            grid = self.grid(by_id[run_id])
            caption = f"{escape(method)} ({_link('../' + run_page(run_id), run_id)})"
            if grid is None:
                where = escape(by_id[run_id].synset.path) if by_id[run_id].synset else "no synthetic set"
                figures.append(f'<p class="note">{caption}: no {GRID} at <code>{where}</code></p>')
            else:
                figures.append(
                    f'<figure class="grid"><img src="../{grid}" alt="synthetic images of {escape(method)}">'
                    f"<figcaption>{caption}</figcaption></figure>"
                )
        return "".join(figures) or '<p class="note">No synthetic sets.</p>'

    def protocol(self, g: ProtocolGroup, groups: list[ProtocolGroup]) -> None:
        parts = [
            f"<p>sha256 <code>{g.hash}</code> &middot; source <code>{escape(g.runs[-1].protocol_source)}</code>"
            f" &middot; {len(g.runs)} run(s)</p>"
        ]
        if not g.boards:
            parts.append(
                '<p class="note">No leaderboard: no complete runs here (runs made by rd3h ablate are left out).</p>'
            )
        expected = self.site.expected.setdefault(self.site.root / protocol_page(g.hash), {})
        for i, b in enumerate(g.boards):
            expected[f"leaderboard-{i}"] = {e.run_id for e in b.entries}
            flagged = any(e.test_set_selection for e in b.entries)
            anchor = f"student-{safe_name(b.student)}"
            parts += [
                f'<h2 id="{anchor}">Leaderboard: student <code>{escape(b.student)}</code></h2>',
                self.leaderboard(b, f"leaderboard-{i}"),
                footnote(flagged),
                "<h3>Per-seed numbers</h3>",
                self.per_seed(b, g.records, f"seeds-{i}"),
                "<h3>Gains over random</h3>",
                self.gains(b, f"gains-{i}"),
                "<h3>Efficiency</h3>",
                self.efficiency(b),
            ]
        parts += ["<h2>Synthetic images</h2>", self.grids_section(g), "<h2>Runs under this hash</h2>"]
        parts.append(
            "<ul>"
            + "".join(
                f"<li>{_link('../' + run_page(r.run_id), r.run_id)} &middot; {escape(r.plugin.name)}"
                f" {escape(r.plugin.version)} &middot; {escape(r.state)}</li>"
                for r in g.runs
            )
            + "</ul>"
        )
        parts.append("<h2>Settings</h2>")
        if g.protocol is not None:
            parts.append(f"<pre>{escape(dump_yaml(g.protocol))}</pre>")
        else:
            parts.append(
                f'<p class="warn">{escape(g.problem or "")}</p><pre>{escape(json.dumps(g.runs[-1].protocol, indent=2))}</pre>'
            )
        others = [o for o in groups if o.hash != g.hash]
        parts.append("<h2>Compare with another protocol</h2>")
        if others:
            parts.append(
                "<ul>"
                + "".join(
                    f"<li>{_link('../' + diff_page(g.hash, o.hash), f'{o.names} ({o.short})')}</li>" for o in others
                )
                + "</ul>"
            )
        else:
            parts.append('<p class="note">The store holds no other protocol.</p>')
        self.write(protocol_page(g.hash), page(f"{g.names} · sha256:{g.short}", "".join(parts), 1))

    def diff(self, a: ProtocolGroup, b: ProtocolGroup) -> None:
        title = f"{a.names} ({a.short}) → {b.names} ({b.short})"
        heads = (
            f"<p>a: {_link('../' + protocol_page(a.hash), a.names)} <code>{a.hash}</code><br>"
            f"b: {_link('../' + protocol_page(b.hash), b.names)} <code>{b.hash}</code></p>"
        )
        if a.protocol is None or b.protocol is None:
            body = heads + f'<p class="warn">No diff: {escape((a.problem or b.problem) or "")}</p>'
        else:
            changes, meta = diff_settings(a.protocol, b.protocol), diff_metadata(a.protocol, b.protocol)
            rows = "".join(
                f"<tr><td><code>{escape(c.path)}</code></td><td><code>{escape(value_text(c.old))}</code></td>"
                f"<td><code>{escape(value_text(c.new))}</code></td></tr>"
                for c in changes
            )
            meta_rows = "".join(
                f"<tr><td><code>{escape(c.path)}</code></td><td>{escape(str(plain(c.old)))}</td>"
                f"<td>{escape(str(plain(c.new)))}</td></tr>"
                for c in meta
            )
            body = (
                heads
                + f"<h2>{len(changes)} setting(s) differ</h2>"
                + f'<table id="diff"><thead><tr><th>setting</th><th>a</th><th>b</th></tr></thead><tbody>{rows}</tbody></table>'
                + (
                    f"<h2>Metadata (not hashed)</h2><table><thead><tr><th>field</th><th>a</th><th>b</th></tr></thead>"
                    f"<tbody>{meta_rows}</tbody></table>"
                    if meta
                    else ""
                )
            )
        self.write(diff_page(a.hash, b.hash), page(title, body, 1))

    def run(self, run: Run, records: list[RunRecord]) -> None:
        doc = export_document(run, records)
        name = safe_name(run.run_id)
        json_path = self.root / "runs" / f"{name}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        flagged = any(r.test_set_selection for r in records)
        summary = "".join(
            f"<tr><td><code>{escape(s.student)}</code></td><td class=n>{s.n}</td>"
            f"<td class=n>{_pct(s.mean)}{'' if s.std is None else f' ± {100 * s.std:.2f}'}{_flag(s.test_set_selection)}</td>"
            f"<td class=n>{'-' if s.ci95_low is None else f'[{_pct(s.ci95_low)}, {_pct(s.ci95_high)}]'}</td>"
            f"<td>{escape(','.join(map(str, s.seeds)))}</td></tr>"
            for s in run.summary
        )
        fields = [k for k in RunRecord.model_fields if k not in ("run_id", "protocol_hash", "protocol_name")]
        record_rows = "".join(
            f"<tr><th>{escape(k)}</th>"
            + "".join(
                f"<td>{escape(str(getattr(r, k)))}{_flag(r.test_set_selection) if k == 'top1' else ''}</td>"
                for r in records
            )
            + "</tr>"
            for k in fields
        )
        grid = self.grid(run)
        info = {
            k: v
            for k, v in json.loads(run.model_dump_json(by_alias=True)).items()
            if k not in ("protocol", "summary", "environment", "settings")
        }
        body = (
            f"<p>{escape(run.plugin.name)} {escape(run.plugin.version)} under"
            f" {_link('../' + protocol_page(run.protocol_hash), run.protocol_name)}"
            f" <code>sha256:{short_hash(run.protocol_hash)}</code> &middot; {escape(run.state)} &middot;"
            f" {_link(name + '.json', 'exported record (JSON)')}</p>"
            + "<h2>Summary</h2><table><thead><tr><th>student</th><th>n</th><th>top-1 % (mean ± std)</th>"
            f"<th>95% CI</th><th>seeds</th></tr></thead><tbody>{summary}</tbody></table>"
            + footnote(flagged)
            + "<h2>Records</h2>"
            + (
                '<div style="overflow:auto"><table id="records"><thead><tr><th>field</th>'
                + "".join(f"<th>{escape(r.student)} seed {r.seed}</th>" for r in records)
                + f"</tr></thead><tbody>{record_rows}</tbody></table></div>"
                if records
                else '<p class="note">No records: the run finished no evaluation.</p>'
            )
            + (
                f'<h2>Synthetic images</h2><figure class="grid"><img src="../{grid}" alt="synthetic images"></figure>'
                if grid
                else ""
            )
            + "<h2>Run</h2>"
            + key_values(info)
            + "<h2>Environment</h2>"
            + key_values(json.loads(run.environment.model_dump_json()))
            + "<h2>Runtime settings</h2>"
            + key_values(run.settings)
        )
        self.write(run_page(run.run_id), page(f"Run {run.run_id}", body, 1))


def build(store, dest: Path, *, protocol_hash: str | None = None, student: str | None = None) -> Site:
    """Write the site for the store (or one protocol hash, one student) into `dest`."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--html {dest}: a file of that name exists; give a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise UsageError(f"--html {dest}: the folder is not empty and holds no earlier report; give a new folder")
    groups = collect(store, protocol_hash, student)
    if not groups:
        where = f" under sha256:{short_hash(protocol_hash)}" if protocol_hash else ""
        raise UsageError(f"no runs in {store.path}{where}")
    for sub in SUBFOLDERS:  # an earlier report's pages of runs or protocols no longer selected must not linger
        if (dest / sub).is_dir():
            shutil.rmtree(dest / sub)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MARKER).write_text("made by rd3h report --html; the folder is rewritten by the next report\n")
    builder = Builder(store, dest)
    for g in groups:
        builder.protocol(g, groups)
        by_run: dict[str, list[RunRecord]] = {}
        for r in g.records:
            by_run.setdefault(r.run_id, []).append(r)
        for run in g.runs:
            builder.run(run, by_run.get(run.run_id, []))
    for i, a in enumerate(groups):
        for b in groups[i + 1 :]:
            first, second = sorted((a, b), key=lambda x: x.hash)
            builder.diff(first, second)
    builder.index(groups)
    largest = max(groups, key=lambda g: sum(len(b.entries) for b in g.boards))
    builder.site.largest = dest / protocol_page(largest.hash)
    return builder.site


def check(site: Site) -> list[str]:
    """Open every protocol page of `site` in headless Chromium and compare each rendered leaderboard
    with the store's: one line per table whose rows are not exactly the leaderboard's entries
    (none when the report is complete)."""
    from rd3_harness.analysis.browser import dump_dom, tables

    problems = []
    for page_file, boards in site.expected.items():
        rendered = tables(dump_dom(page_file))
        for tid, runs in boards.items():
            shown = [attrs.get("data-run") for attrs, _ in rendered.get(tid, [])]
            missing, extra = runs - set(shown), set(shown) - runs
            where = f"{page_file.relative_to(site.root)} #{tid}"
            if missing:
                problems.append(f"{where}: rows missing for run(s) {', '.join(sorted(missing))}")
            if extra or len(shown) != len(set(shown)):
                problems.append(f"{where}: rows not in the store's leaderboard or shown twice: {shown}")
    return problems
