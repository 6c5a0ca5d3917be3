"""The CPU study in one resumable command: every method under the standard protocol and under its
own legacy protocol, `random` under every hash it touches, the ablation walks, the figures, the
HTML report (OUT/html, every leaderboard row checked in headless Chromium where it is installed)
and the markdown tables of `docs/results-cpu.md`, printed from the store.

Each run is one `rd3h --threads N run` subprocess; a run already complete in the store (same plugin
version and protocol hash) is skipped, an interrupted one continues where it stopped, and the
ablation walks reuse the steps the store holds. So after an interruption the same command goes on.

    python benchmarks/cpu_study.py -o study                      # everything (hours on 2 CPU cores)
    python benchmarks/cpu_study.py -o study --only rded,herding  # a few methods (+ random, the baseline)
    python benchmarks/cpu_study.py -o study --dry-run            # print the planned commands only
    python benchmarks/cpu_study.py -o study --tables-only        # print the tables from the store

Tables go to stdout (markdown, or one JSON object with --json); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rd3_harness.analysis import leaderboard as lb
from rd3_harness.analysis.ablate import step_accuracy
from rd3_harness.analysis.browser import find_chromium
from rd3_harness.analysis.report import ABLATIONS
from rd3_harness.errors import UsageError
from rd3_harness.hashing import short_hash
from rd3_harness.plugins import get_plugins
from rd3_harness.protocol.io import load_protocol, protocol_hash
from rd3_harness.protocol.library import protocol_path
from rd3_harness.results.stats import welch_t_test
from rd3_harness.results.store import Store

METHODS = (
    "sre2l",
    "cda",
    "lpld",
    "rded",
    "gvbsm",
    "edc",
    "dwa",
    "herding",
    "kcenter",
    "d4m",
    "minimax",
    "random",
)
BASELINE = "random"
_SCRIPT = Path(sys.executable).with_name("rd3h")
RD3H = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "rd3_harness"]
"""The CLI next to this interpreter (`python -m rd3_harness` where no `rd3h` script is installed)."""
STANDARD = "cpu/fmnist-ipc10.v1"
LEGACY = "cpu/legacy-{method}.v1"
WALKS = {"sre2l": ("sre2l", BASELINE), "rded": ("rded",)}
"""Ablation walks (legacy -> standard) of the study: per key method, the plugins walked from its
legacy protocol (SRe2L's walk is repeated for `random`, the baseline, on the same path)."""


@dataclass(frozen=True)
class Task:
    """One `rd3h` command of the study."""

    kind: str  # "run" or "ablate"
    plugin: str
    protocol: str  # the protocol as given (a registered name or a file; for an ablation, the walk's source)
    protocol_hash: str
    role: str  # "standard", "legacy" or "walk"
    done: bool = False

    def argv(self, args: argparse.Namespace, standard: str) -> list[str]:
        cmd = [*RD3H, "--threads", str(args.threads)]
        if self.kind == "run":
            cmd += ["run", "--plugin", self.plugin, "-p", self.protocol]
        else:
            cmd += ["ablate", "--plugin", self.plugin, "--from", self.protocol, "--to", standard]
        if args.device:
            cmd += ["--device", args.device]
        return [*cmd, "-o", str(args.out)]


def legacy_protocol(registries, template: str | None, method: str) -> str | None:
    """The method's legacy protocol (as the template names it), or None when it has none."""
    if not template or method == BASELINE:
        return None
    ref = template.format(method=method)
    try:
        protocol_path(registries, ref)
    except UsageError:
        return None
    return ref


def hash_of(registries, ref: str) -> str:
    return protocol_hash(load_protocol(protocol_path(registries, ref)))


def name_of(registries, ref: str) -> str:
    return load_protocol(protocol_path(registries, ref)).name


def plan(args: argparse.Namespace) -> tuple[list[Task], dict]:
    """Every command of the study in run order, each marked done when the store holds it; and the
    protocol of each (method, role) for the tables."""
    plugins = get_plugins()
    registries = plugins.registries
    methods = list(METHODS) if args.only is None else [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"--only: not a method of the study: {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    for m in methods:
        plugins.method(m)  # not installed: stops before anything runs, naming what is installed
    standard = args.standard
    std_hash = hash_of(registries, standard)
    protocols = {"standard": (standard, std_hash), "legacy": {}}
    runs: list[tuple[str, str, str, str]] = []  # plugin, protocol, hash, role
    baseline_hashes: dict[str, str] = {std_hash: standard}
    for m in methods:
        if m == BASELINE:
            continue
        runs.append((m, standard, std_hash, "standard"))
        legacy = legacy_protocol(registries, args.legacy, m)
        if legacy is not None:
            h = hash_of(registries, legacy)
            runs.append((m, legacy, h, "legacy"))
            baseline_hashes.setdefault(h, legacy)
            protocols["legacy"][m] = (legacy, h)
    # the baseline first: cheapest, and every gain needs it
    first = [(BASELINE, f, h, "standard" if h == std_hash else "legacy") for h, f in baseline_hashes.items()]
    runs = first + runs
    done = completed(args.out, plugins)
    tasks = [Task("run", p, f, h, role, (p, plugins.method(p).version, h) in done) for p, f, h, role in runs]
    if not args.no_ablations:
        for key, walkers in WALKS.items():
            if key in methods and key in protocols["legacy"]:
                source, h = protocols["legacy"][key]
                tasks += [Task("ablate", w, source, h, "walk") for w in walkers]
    return tasks, protocols


def study_runs(plugins) -> lb.RunFilter:
    """The study's runs: each method's installed version with its default config, evaluated on
    the protocol's every student (older versions, `-c` variants and `--students` runs are not)."""
    current = lb.current(plugins)
    return lambda r: current(r) and not (r.settings or {}).get("students")


def completed(out: Path, plugins) -> set[tuple[str, str, str]]:
    """(plugin, version, protocol hash) of the study's complete runs in the store (as `rd3h sweep`
    skips)."""
    if not (out / "results.sqlite").is_file():
        return set()
    keep = study_runs(plugins)
    return {
        (r.plugin.name, r.plugin.version, r.protocol_hash)
        for r in Store.in_folder(out).runs(status="complete")
        if not r.protocol_source.startswith(lb.ABLATION_SOURCE) and keep(r)
    }


def execute(tasks: list[Task], args: argparse.Namespace, standard: str) -> list[dict]:
    """Run the pending commands one after another; a failing one is reported, the others go on."""
    failed = []
    pending = [t for t in tasks if not t.done]
    for i, t in enumerate(pending, 1):
        argv = t.argv(args, standard)
        print(f"[{i}/{len(pending)}] {shlex.join(argv)}", file=sys.stderr, flush=True)
        code = subprocess.run(argv, stdout=subprocess.DEVNULL).returncode
        if code != 0:
            failed.append({**asdict(t), "returncode": code})
            print(f"  failed with exit code {code}; rerun the study to retry it", file=sys.stderr)
    return failed


def figures(args: argparse.Namespace, standard: str) -> int:
    cmd = [*RD3H, "report", "-o", str(args.out), "-p", standard, "--current"]
    if args.legacy:
        cmd += ["--legacy", args.legacy]
    if args.figures:
        cmd += ["--figures", str(args.figures)]
    print(shlex.join(cmd), file=sys.stderr, flush=True)
    code = subprocess.run(cmd, stdout=sys.stderr).returncode
    site = [*RD3H, "report", "-o", str(args.out), "--html", str(args.out / "html")]
    if find_chromium() is not None:  # a screenshot, and every leaderboard row checked as rendered
        site += ["--screenshot", str((args.figures or args.out / "figures") / "report-html.png"), "--check"]
    print(shlex.join(site), file=sys.stderr, flush=True)
    return code or subprocess.run(site, stdout=sys.stderr).returncode


def _entry(board: lb.Board | None, method: str) -> lb.Entry | None:
    return next((e for e in board.entries if e.method == method), None) if board is not None else None


def _acc(e: lb.Entry | None) -> str:
    if e is None:
        return "-"
    std = f" ± {100 * e.std:.2f}" if e.std is not None else ""
    return f"{100 * e.mean:.2f}{std}" + (" †" if e.test_set_selection else "")


def _gain(e: lb.Entry | None, base: lb.Entry | None) -> tuple[str, float | None, float | None]:
    if e is None or base is None:
        return "-", None, None
    gain = e.mean - base.mean
    if e is base:
        return "0", 0.0, None
    p = welch_t_test(e.values, base.values)[2] if len(e.values) > 1 and len(base.values) > 1 else float("nan")
    p = None if p != p else p
    return f"{100 * gain:+.2f}" + (f" (p = {p:.3f})" if p is not None else ""), gain, p


def tables(args: argparse.Namespace, protocols: dict, methods: list[str]) -> dict:
    """The study's tables from the store: legacy protocols, results (gains over random under the
    same hash), the leaderboards of the study's hashes, and the saved ablation walks."""
    plugins = get_plugins()
    std_file, std_hash = protocols["standard"]
    student = load_protocol(protocol_path(plugins.registries, std_file)).evaluation.students[0].architecture
    store = Store.in_folder(args.out) if (args.out / "results.sqlite").is_file() else None
    keep = study_runs(plugins)
    boards: dict[str, lb.Board | None] = {}

    def board(h: str) -> lb.Board | None:
        if h not in boards:
            found = lb.boards(store, h, student, keep) if store is not None else []
            boards[h] = found[0] if found else None
        return boards[h]

    legacy_rows: dict[str, list[str]] = {}
    for m, (f, h) in protocols["legacy"].items():
        legacy_rows.setdefault(h, [name_of(plugins.registries, f), h, []])[2].append(m)
    lines = ["| protocol | hash | methods |", "|---|---|---|"]
    lines += [f"| `{name}` | `{short_hash(h)}` | {', '.join(ms)} |" for name, h, ms in legacy_rows.values()]
    protocol_md = "\n".join(lines)

    rows, lines = [], []
    head = "| method | legacy protocol (hash) | legacy: method | legacy: random | legacy: gain over random |"
    head += " standard: method | standard: gain over random |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    std_base = _entry(board(std_hash), BASELINE)
    for m in [m for m in methods if m != BASELINE] + [BASELINE]:
        std = _entry(board(std_hash), m)
        std_gain, sg, sp = _gain(std, std_base)
        row = {"method": m, "standard": asdict(std) if std else None, "standard_gain": sg, "standard_p": sp}
        if m in protocols["legacy"]:
            f, h = protocols["legacy"][m]
            leg, leg_base = _entry(board(h), m), _entry(board(h), BASELINE)
            leg_gain, lg, lp = _gain(leg, leg_base)
            name = name_of(plugins.registries, f)
            cells = [f"`{name}` ({short_hash(h)})", _acc(leg), _acc(leg_base), leg_gain]
            row.update(legacy_protocol=f, legacy_hash=h, legacy=asdict(leg) if leg else None)
            row.update(legacy_random=asdict(leg_base) if leg_base else None, legacy_gain=lg, legacy_p=lp)
        elif m == BASELINE:
            cells = ["", "", "", ""]
        else:
            cells = ["none (selection baseline)", "-", "-", "-"]
        lines.append(f"| {m} | " + " | ".join([*cells, _acc(std), std_gain]) + " |")
        rows.append(row)
    results_md = "\n".join(lines)

    hashes = list(dict.fromkeys([std_hash, *(h for _, h in protocols["legacy"].values())]))
    study_boards = [b for b in (board(h) for h in hashes) if b is not None]
    leaderboard_md = lb.markdown(study_boards).rstrip("\n") if study_boards else ""

    walks, walk_md = [], []
    folder = args.out / ABLATIONS
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = json.loads(path.read_text())
        if data["to"]["hash"] != std_hash or data["from"]["hash"] not in hashes or data["method"] not in methods:
            continue
        walks.append(data)
        walk_md.append(_walk_markdown(data))
    markdown = "\n\n".join(
        [
            "## Legacy protocols\n\n" + protocol_md,
            "## Results\n\n" + results_md,
            "## Leaderboards\n\n" + (leaderboard_md or "(no complete runs yet)"),
            "## Ablation walks\n\n" + ("\n\n".join(walk_md) or "(none saved yet)"),
        ]
    )
    return {
        "student": student,
        "standard": {"protocol": std_file, "hash": std_hash},
        "results": rows,
        "leaderboards": [b.as_dict() for b in study_boards],
        "ablations": walks,
        "markdown": markdown + "\n",
    }


def _walk_markdown(data: dict) -> str:
    """One ablation walk as the doc shows it: step, group, change, top-1, delta."""
    f, t = data["from"], data["to"]
    lines = [
        f"**{data['method']}** (`{f['name']}` → `{t['name']}`, set sha256 `{data['synset_sha256'][:12]}`):",
        "",
        "| step | setting changed | change | top-1 % | Δ (pp) |",
        "|---|---|---|---|---|",
    ]
    for s in data["steps"]:
        change = "; ".join(f"`{c['path']}` {_plain(c['from'])} → {_plain(c['to'])}" for c in s["changes"])
        acc = step_accuracy(s)
        delta = "" if s["delta"] is None else f"{100 * s['delta']:+.2f}"
        label = f"from {f['name']}" if s["index"] == 0 else s["label"]
        lines.append(f"| {s['index']} | {label} | {change} | {acc} | {delta} |")
    lines.append(f"| | **total** | | | **{100 * data['total_change']:+.2f}** |")
    if any(s.get("test_set_selection") for s in data["steps"]):
        lines += ["", lb.FOOTNOTE]
    return "\n".join(lines)


def _plain(value) -> str:
    return "(unset)" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, required=True, help="the results store (folder) to fill")
    ap.add_argument("--only", help=f"comma-separated methods (default: all of {','.join(METHODS)}); random always runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads per run (rd3h --threads)")
    ap.add_argument("--device", help="rd3h --device (default: the environment's)")
    ap.add_argument("--standard", default=STANDARD, help=f"the rectified protocol (default {STANDARD})")
    ap.add_argument("--legacy", default=LEGACY, help=f"legacy protocol per method, '' for none (default {LEGACY!r})")
    ap.add_argument("--figures", type=Path, help="folder for the PNGs (default: OUT/figures)")
    ap.add_argument("--no-ablations", action="store_true", help="skip the ablation walks")
    ap.add_argument("--no-figures", action="store_true", help="skip `rd3h report` (PNGs and the HTML report)")
    ap.add_argument("--dry-run", action="store_true", help="print the planned commands; run nothing")
    ap.add_argument("--tables-only", action="store_true", help="run nothing; print the tables from the store")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of markdown")
    args = ap.parse_args(argv)
    try:
        tasks, protocols = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    std_file = protocols["standard"][0]
    if args.dry_run:
        commands = [{**asdict(t), "argv": t.argv(args, std_file)} for t in tasks]
        if args.json:
            print(json.dumps({"planned": commands}, indent=2))
        else:
            for c in commands:
                print(("# done: " if c["done"] else "") + shlex.join(c["argv"]))
        return 0
    failed = [] if args.tables_only else execute(tasks, args, std_file)
    report_code = 0 if args.tables_only or args.no_figures else figures(args, std_file)
    methods = list(dict.fromkeys([t.plugin for t in tasks if t.kind == "run"]))
    out = tables(args, protocols, methods)
    if args.json:
        ran = [asdict(t) for t in tasks if not t.done] if not args.tables_only else []
        print(json.dumps({"ran": ran, "failed": failed, "report_returncode": report_code, **out}, indent=2))
    else:
        print(out["markdown"], end="")
    return 1 if failed or report_code else 0


if __name__ == "__main__":
    sys.exit(main())
