"""Leaderboards from the results store: one table per protocol hash and student, never mixing
hashes. Each method's entry is its latest complete run (per plugin version and config) with mean,
std (ddof=1) and 95% t-interval over seeds, the gain over `random` under the same hash, Welch's
t-test against the best entry, time-to-synthesize and storage."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.results.record import Run, RunRecord, nan_to_none
from rd3_harness.results.stats import summarize, welch_t_test

BASELINE = "random"
ABLATION_SOURCE = "rd3h ablate "
"""Runs made by `rd3h ablate` (their `protocol_source` starts so) are analyses, not entries."""


class MixedProtocols(UsageError):
    """Records of more than one protocol hash were offered to one table."""


@dataclass
class Entry:
    method: str
    plugin_version: str
    method_config_hash: str
    run_id: str
    seeds: list[int]
    values: list[float]
    """Reported top-1 per seed (fractions), in seed order."""
    mean: float
    std: float | None
    ci95_low: float | None
    ci95_high: float | None
    test_set_selection: bool
    """The reported numbers are best-of-run (selected on the test set)."""
    synthesis_wall_s: float | None
    storage_bytes: int | None
    label_storage_bytes: int
    gain_over_random: float | None = None
    p_vs_best: float | None = None
    """Two-sided Welch p-value against the best entry (None for the best itself or n < 2)."""
    best: bool = False
    variant: str = ""
    """What tells this entry from the other entries of the same method in its table: the plugin
    version when versions differ, then the config settings that differ (`key=value`); empty when
    the method has one entry."""


@dataclass
class Board:
    """One table: a single protocol hash and student."""

    protocol_hash: str
    protocol_name: str
    protocol_source: str
    student: str
    entries: list[Entry] = field(default_factory=list)
    random_hint: str | None = None
    """How to run the baseline when no `random` entry exists under this hash."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(run: Run, records: list[RunRecord]) -> Entry:
    records = sorted(records, key=lambda r: r.seed)
    values = [r.top1 for r in records]
    s = summarize(values)
    return Entry(
        method=run.plugin.name,
        plugin_version=run.plugin.version,
        method_config_hash=run.method_config_hash,
        run_id=run.run_id,
        seeds=[r.seed for r in records],
        values=values,
        mean=s.mean,
        std=nan_to_none(s.std),
        ci95_low=nan_to_none(s.ci95_low),
        ci95_high=nan_to_none(s.ci95_high),
        test_set_selection=any(r.test_set_selection for r in records),
        synthesis_wall_s=run.synthesis.wall_s if run.synthesis else None,
        storage_bytes=run.synset.storage_bytes if run.synset else None,
        label_storage_bytes=run.synset.label_storage_bytes if run.synset else 0,
    )


def board(runs: list[Run], records: list[RunRecord], student: str) -> Board:
    """The table of `student` from runs and records of one protocol hash; refuses several hashes."""
    hashes = sorted({r.protocol_hash for r in runs} | {r.protocol_hash for r in records})
    if len(hashes) > 1:
        raise MixedProtocols(
            f"one leaderboard table holds one protocol hash, got {len(hashes)}: "
            + ", ".join(short_hash(h) for h in hashes)
            + "; numbers under different protocols are not comparable"
        )
    if not runs:
        raise UsageError("no runs to rank")
    latest: dict[tuple[str, str, str], tuple[Run, list[RunRecord]]] = {}
    for run in sorted(runs, key=lambda r: (r.created, r.run_id)):
        mine = [r for r in records if r.run_id == run.run_id and r.student == student]
        if run.status == "complete" and mine:
            latest[(run.plugin.name, run.plugin.version, run.method_config_hash)] = (run, mine)
    entries = sorted((_entry(run, recs) for run, recs in latest.values()), key=lambda e: -e.mean)
    _name_variants(entries, {run.run_id: run.method_config for run, _ in latest.values()})
    last = runs[-1]
    names = " = ".join(dict.fromkeys(r.protocol_name for r in runs))  # files that differ only in metadata
    result = Board(last.protocol_hash, names, last.protocol_source, student, entries)
    if not entries:
        return result
    baseline = baseline_entry(entries)
    if baseline is None:
        result.random_hint = f"rd3h run --plugin {BASELINE} --protocol {last.protocol_source}"
    best = entries[0]
    best.best = True
    for e in entries:
        if baseline is not None:
            e.gain_over_random = e.mean - baseline.mean
        if e is not best:
            e.p_vs_best = nan_to_none(welch_t_test(e.values, best.values)[2])
    return result


def _name_variants(entries: list[Entry], configs: dict[str, dict[str, Any]]) -> None:
    """Label entries that share a method: by version when versions differ, and by the settings in
    which their configs differ."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.method, []).append(e)
    for same in (g for g in groups.values() if len(g) > 1):
        versions = len({e.plugin_version for e in same}) > 1
        keys = sorted({k for e in same for k in configs[e.run_id]})
        differ = [k for k in keys if len({json.dumps(configs[e.run_id].get(k), sort_keys=True) for e in same}) > 1]
        for e in same:
            c = configs[e.run_id]
            parts = ([e.plugin_version] if versions else []) + [f"{k}={json.dumps(c.get(k))}" for k in differ]
            e.variant = ", ".join(parts) or e.method_config_hash[:12]


def label(e: Entry) -> str:
    """The entry's name in tables and figures: the method, with its variant when it has one."""
    return f"{e.method} [{e.variant}]" if e.variant else e.method


def baseline_entry(entries: list[Entry]) -> Entry | None:
    """The `random` entry gains are measured against (the lowest-ranked one if there are several)."""
    return next((e for e in reversed(entries) if e.method == BASELINE), None)


RunFilter = Callable[[Run], bool]


def current(plugins) -> RunFilter:
    """Keeps the runs of each method's installed plugin version with its default config (no `-c`
    overrides): a store's tables as the installed plugins would make them today."""
    from rd3_harness.synthesis import config_hash, parse_config  # imports torch: only when asked

    installed: dict[str, tuple[str, str] | None] = {}

    def of(name: str) -> tuple[str, str] | None:
        if name not in installed:
            try:
                record = plugins.method(name)
            except UsageError:  # no longer installed
                installed[name] = None
            else:
                installed[name] = (record.version, config_hash(parse_config(record.method, {})))
        return installed[name]

    return lambda run: of(run.plugin.name) == (run.plugin.version, run.method_config_hash)


def boards(
    store, protocol_hash: str | None = None, student: str | None = None, keep: RunFilter | None = None
) -> list[Board]:
    """Every table of the store (or of one protocol hash), one per hash and student; `keep`
    chooses the runs (e.g. `current(plugins)`)."""
    runs = [
        r
        for r in store.runs(protocol_hash=protocol_hash, status="complete")
        if not r.protocol_source.startswith(ABLATION_SOURCE) and (keep is None or keep(r))
    ]
    by_hash: dict[str, list[Run]] = {}
    for run in runs:
        by_hash.setdefault(run.protocol_hash, []).append(run)
    out = []
    for h, group in by_hash.items():
        records = store.records(protocol_hash=h)
        students = list(dict.fromkeys(r.student for r in records))
        for name in [student] if student else students:
            b = board(group, records, name)
            if b.entries:
                out.append(b)
    return out


def resolve_hash(registries, store, ref: str) -> str:
    """A protocol's hash from a file or registered name, or a unique hash prefix found in the store."""
    from rd3_harness.protocol.io import protocol_hash
    from rd3_harness.protocol.library import resolve_protocol

    try:
        protocol, _ = resolve_protocol(registries, ref, check=False)
        return protocol_hash(protocol)
    except UsageError:
        prefix = ref.lower()
        if len(prefix) < 6 or prefix.strip("0123456789abcdef"):
            raise
        matches = {r.protocol_hash for r in store.runs() if r.protocol_hash.startswith(prefix)}
        if len(matches) == 1:
            return matches.pop()
        raise


def _pct(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.2f}" if sign else f"{100 * value:.2f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size, unit = float(n), "B"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            break
        size /= 1000
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def row(e: Entry) -> dict[str, str]:
    """An entry as display strings (shared by the rich and markdown tables)."""
    acc = _pct(e.mean) + (f" ± {100 * e.std:.2f}" if e.std is not None else "") + (" †" if e.test_set_selection else "")
    ci = f"[{_pct(e.ci95_low)}, {_pct(e.ci95_high)}]" if e.ci95_low is not None else "-"
    p = "best" if e.best else ("-" if e.p_vs_best is None else f"{e.p_vs_best:.3f}")
    synth = "-" if e.synthesis_wall_s is None else f"{e.synthesis_wall_s:.1f}"
    return {
        "method": label(e),
        "version": e.plugin_version,
        "top-1 % (mean ± std)": acc,
        "95% CI": ci,
        "gain vs random (pp)": _pct(e.gain_over_random, sign=True),
        "p vs best": p,
        "synthesis s": synth,
        "storage": _bytes(e.storage_bytes),
        "seeds": ",".join(map(str, e.seeds)),
    }


def title(b: Board) -> str:
    return f"{b.protocol_name}  sha256:{short_hash(b.protocol_hash)}  student {b.student}"


FOOTNOTE = (
    "† best-of-run: selected on the test set (protocol report mode `best`), not comparable to final-epoch numbers."
)


def markdown(tables: list[Board]) -> str:
    """GitHub-flavoured tables, one per board."""
    parts = []
    for b in tables:
        rows = [row(e) for e in b.entries]
        head = list(rows[0])
        lines = [f"### {title(b)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r[h] for h in head) + " |" for r in rows]
        if any(e.test_set_selection for e in b.entries):
            lines += ["", FOOTNOTE]
        if b.random_hint:
            lines += ["", f"No `random` baseline under this hash: `{b.random_hint}`"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


CSV_COLUMNS = (
    "protocol_hash",
    "protocol_name",
    "student",
    "method",
    "plugin_version",
    "method_config_hash",
    "variant",
    "run_id",
    "n",
    "mean",
    "std",
    "ci95_low",
    "ci95_high",
    "gain_over_random",
    "p_vs_best",
    "best",
    "test_set_selection",
    "synthesis_wall_s",
    "storage_bytes",
    "label_storage_bytes",
    "seeds",
    "values",
)


def csv_text(tables: list[Board]) -> str:
    """One row per entry, every number as stored (accuracies as fractions); each row names its
    protocol hash and student, so rows of different tables stay apart."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for b in tables:
        for e in b.entries:
            d = {**asdict(e), "protocol_hash": b.protocol_hash, "protocol_name": b.protocol_name, "student": b.student}
            d["n"] = len(e.values)
            d["seeds"] = " ".join(map(str, e.seeds))
            d["values"] = " ".join(repr(v) for v in e.values)
            writer.writerow(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "`": r"\textasciigrave{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
}


def latex_escape(text: str) -> str:
    """`text` for LaTeX: special characters escaped, ± and † as math symbols."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in text)


def latex_text(text: str) -> str:
    """Prose for LaTeX: escaped, with `code` spans as \\texttt."""
    pieces = text.split("`")
    return "".join(f"\\texttt{{{latex_escape(p)}}}" if i % 2 else latex_escape(p) for i, p in enumerate(pieces))


def latex(tables: list[Board]) -> str:
    """One booktabs `table` per board, the protocol hash in its caption (needs `\\usepackage{booktabs}`)."""
    parts = ["% rd3h leaderboard --format latex: needs \\usepackage{booktabs}"]
    for b in tables:
        rows = [row(e) for e in b.entries]
        head = list(rows[0])
        align = "".join("l" if h in ("method", "version", "seeds") else "r" for h in head)
        caption = (
            f"{latex_escape(b.protocol_name)}, protocol \\texttt{{sha256:{short_hash(b.protocol_hash)}}},"
            f" student \\texttt{{{latex_escape(b.student)}}}."
        )
        lines = [
            "",
            f"% protocol sha256:{b.protocol_hash}",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{caption}}}",
            f"\\label{{tab:rd3-{short_hash(b.protocol_hash)}-{b.student}}}",
            f"\\begin{{tabular}}{{{align}}}",
            "\\toprule",
            " & ".join(latex_escape(h) for h in head) + " \\\\",
            "\\midrule",
            *(" & ".join(latex_escape(r[h]) for h in head) + " \\\\" for r in rows),
            "\\bottomrule",
            "\\end{tabular}",
        ]
        if any(e.test_set_selection for e in b.entries):
            lines += ["\\par\\smallskip{\\footnotesize " + latex_text(FOOTNOTE) + "}"]
        if b.random_hint:
            lines += [f"% no random baseline under this hash: {b.random_hint}"]
        lines += ["\\end{table}"]
        parts.append("\n".join(lines))
    return "\n".join(parts) + "\n"
