"""`rd3h report`: PNG figures from the results store, drawn with matplotlib (the `plot` extra).

Per protocol hash and student: effectiveness against efficiency (accuracy against
time-to-synthesize on a log axis, RD³'s Figure 3: upper left is best) and accuracy per method with
error bars. Per saved ablation: the step-by-step attribution as a waterfall. Optionally, each
method's number under its own legacy protocol beside its number under the standard (two different
hashes per method, shown side by side, never ranked together).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rd3_harness.analysis.leaderboard import FOOTNOTE, Board, Entry, RunFilter, boards, label, resolve_hash, title
from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash

ABLATIONS = "ablations"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a UsageError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("figures need matplotlib: pip install 'rd3-harness[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # no web address in the file
    fig.clf()
    pyplot().close(fig)
    return path


def _footnote(fig, ax) -> None:
    """The best-of-run footnote, below the axes and their (rotated) tick labels."""
    box = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
    fig.text(0.01, box.y0 - 0.02, FOOTNOTE, fontsize=7, va="top")


def _flagged(e: Entry) -> str:
    """The entry's label, with † when its number is best-of-run."""
    return label(e) + (" †" if e.test_set_selection else "")


def _std(e: Entry) -> float:
    return 100 * (e.std or 0.0)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")


def efficiency_figure(b: Board, path: Path) -> Path:
    """Accuracy (mean ± std) against time-to-synthesize, log time axis; one marker per entry,
    named in the legend (labels beside clustered points would overlap)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    timed = [e for e in b.entries if e.synthesis_wall_s is not None]
    colors = plt.get_cmap("tab10").colors
    for i, e in enumerate(timed):
        ax.errorbar(
            max(e.synthesis_wall_s, 1e-3),
            100 * e.mean,
            yerr=_std(e),
            fmt=MARKERS[i % len(MARKERS)],
            capsize=3,
            color="tab:gray" if e.method == "random" else colors[i % len(colors)],
            label=_flagged(e),
        )
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    if timed:
        times = [max(e.synthesis_wall_s, 1e-3) for e in timed]
        ax.set_xlim(min(times) / 3, max(times) * 5)
    ax.set_xlabel("time-to-synthesize (s, log scale)")
    ax.set_ylabel("top-1 accuracy (%, mean ± std)")
    ax.set_title(f"Effectiveness vs efficiency (upper left is best)\n{title(b)}", fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    if timed:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    if any(e.test_set_selection for e in timed):
        _footnote(fig, ax)
    return _save(fig, path)


def accuracy_figure(b: Board, path: Path) -> Path:
    """Mean accuracy per method with std error bars; the random baseline as a dashed line."""
    plt = pyplot()
    entries = b.entries
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(entries) + 2), 4.2))
    names = [_flagged(e) for e in entries]
    colors = ["tab:gray" if e.method == "random" else "tab:blue" for e in entries]
    ax.bar(names, [100 * e.mean for e in entries], yerr=[_std(e) for e in entries], capsize=3, color=colors)
    random = next((e for e in entries if e.method == "random"), None)
    if random is not None:
        ax.axhline(100 * random.mean, ls="--", color="tab:gray", lw=1, label="random")
        ax.legend(fontsize=8)
    low = min(100 * e.mean - _std(e) for e in entries)
    high = max(100 * e.mean + _std(e) for e in entries)
    pad = max(1.0, 0.15 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    ax.set_ylabel("top-1 accuracy (%, mean ± std)")
    ax.set_title(f"Accuracy per method\n{title(b)}", fontsize=9)
    ax.tick_params(axis="x", rotation=30)
    if any(e.test_set_selection for e in entries):
        _footnote(fig, ax)
    return _save(fig, path)


def ablation_figure(data: dict[str, Any], path: Path) -> Path:
    """Waterfall of an ablation: the baseline, each step's change, and the end point."""
    plt = pyplot()
    steps = data["steps"]
    means = [100 * s["mean"] for s in steps]
    stds = [100 * (s["std"] or 0.0) for s in steps]
    labels = [f"{data['from']['name']}"] + [s["label"].replace(" + ", " +\n") for s in steps[1:]] + [data["to"]["name"]]
    flagged = [s.get("test_set_selection", False) for s in steps]
    labels = [t + (" †" if f else "") for t, f in zip(labels, [*flagged, flagged[-1]])]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 1), 4.6))
    low = min(m - s for m, s in zip(means, stds))
    high = max(m + s for m, s in zip(means, stds))
    pad = max(1.0, 0.2 * (high - low))
    floor = max(0.0, low - pad)
    ax.bar(0, means[0] - floor, bottom=floor, yerr=stds[0], capsize=3, color="tab:gray")
    for i in range(1, len(steps)):
        delta = means[i] - means[i - 1]
        ax.bar(i, delta, bottom=means[i - 1], color="tab:green" if delta >= 0 else "tab:red")
        ax.errorbar(i, means[i], yerr=stds[i], fmt="none", ecolor="black", capsize=3)
        ax.annotate(
            f"{delta:+.2f}",
            (i, max(means[i], means[i - 1])),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    end = len(steps)
    ax.bar(end, means[-1] - floor, bottom=floor, yerr=stds[-1], capsize=3, color="tab:gray")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(floor, min(100.0, high + pad))
    ax.set_ylabel("top-1 accuracy (%, mean ± std)")
    ax.set_title(
        f"{data['method']} on {data['student']}: {data['from']['name']} → {data['to']['name']}\n"
        f"total {100 * data['total_change']:+.2f} pp = sum of step changes; seeds {data['seeds']}",
        fontsize=9,
    )
    ax.grid(True, axis="y", alpha=0.3)
    if any(flagged):
        _footnote(fig, ax)
    return _save(fig, path)


@dataclass
class Pair:
    method: str
    legacy: Entry
    legacy_name: str
    legacy_hash: str
    standard: Entry


def legacy_pairs(registries, store, standard: Board, pattern: str, keep: RunFilter | None = None) -> list[Pair]:
    """Each entry of `standard` with the same method, version and config under the method's own
    legacy protocol, found by formatting `pattern` with the method name (e.g.
    `cpu/legacy-{method}.v1`); entries without one are left out."""
    pairs = []
    for e in standard.entries:
        try:
            h = resolve_hash(registries, store, pattern.format(method=e.method))
        except UsageError:
            continue
        if h == standard.protocol_hash:
            continue
        found = boards(store, h, standard.student, keep)
        same = (e.method, e.plugin_version, e.method_config_hash)
        legacy = next(
            (x for b in found for x in b.entries if (x.method, x.plugin_version, x.method_config_hash) == same), None
        )
        if legacy is not None:
            pairs.append(Pair(label(e), legacy, found[0].protocol_name, h, e))
    return pairs


def legacy_figure(pairs: list[Pair], standard: Board, path: Path) -> Path:
    """Per method: its number under its own legacy protocol beside its number under the standard."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(pairs) + 2), 4.4))
    xs = range(len(pairs))
    ax.bar(
        [x - 0.2 for x in xs],
        [100 * p.legacy.mean for p in pairs],
        0.4,
        yerr=[_std(p.legacy) for p in pairs],
        capsize=3,
        color="tab:orange",
        label="own legacy protocol",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [100 * p.standard.mean for p in pairs],
        0.4,
        yerr=[_std(p.standard) for p in pairs],
        capsize=3,
        color="tab:blue",
        label=f"standard ({standard.protocol_name})",
    )
    names = [p.method + (" †" if p.legacy.test_set_selection else "") for p in pairs]
    ax.set_xticks(list(xs), names, rotation=30, ha="right")
    values = [100 * p.legacy.mean for p in pairs] + [100 * p.standard.mean for p in pairs]
    pad = max(1.0, 0.15 * (max(values) - min(values)))
    ax.set_ylim(max(0.0, min(values) - 2 * pad), min(100.0, max(values) + pad))
    ax.set_ylabel("top-1 accuracy (%, mean ± std)")
    ax.set_title(
        "Legacy-style (each method under its own protocol: different hashes, not a ranking)\n"
        f"vs rectified (one protocol, sha256:{short_hash(standard.protocol_hash)})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    if any(p.legacy.test_set_selection for p in pairs):
        _footnote(fig, ax)
    return _save(fig, path)


def saved_ablations(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((out / ABLATIONS).glob("*.json")):
        try:
            found.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path}: unreadable ablation ({exc})") from None
    return found


def report(
    store,
    out: Path,
    figures: Path,
    *,
    protocol_hash: str | None = None,
    student: str | None = None,
    legacy: str | None = None,
    registries=None,
    keep: RunFilter | None = None,
) -> list[Path]:
    """Draw every figure; returns the files written. `legacy` (a protocol-name pattern resolved in
    `registries`) adds the legacy-versus-standard figure; `keep` chooses the runs."""
    pyplot()
    written = []
    tables = boards(store, protocol_hash, student, keep)
    for b in tables:
        stem = f"{short_hash(b.protocol_hash)}-{b.student}"
        written.append(efficiency_figure(b, figures / f"efficiency-{stem}.png"))
        written.append(accuracy_figure(b, figures / f"accuracy-{stem}.png"))
        if legacy:
            pairs = legacy_pairs(registries, store, b, legacy, keep)
            if pairs:
                written.append(legacy_figure(pairs, b, figures / f"legacy-vs-standard-{stem}.png"))
    for path, data in saved_ablations(out):
        if protocol_hash is None or protocol_hash in (data["from"]["hash"], data["to"]["hash"]):
            written.append(ablation_figure(data, figures / f"ablation-{path.stem}.png"))
    if not written:
        raise UsageError(f"nothing to draw: no complete runs or saved ablations in {out}")
    return written
