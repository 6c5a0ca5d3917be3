"""`rd3h ablate`, `rd3h leaderboard` and `rd3h report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rd3_harness.cli.common import (
    DeviceOpt,
    JsonOpt,
    OutOpt,
    err,
    out,
    parse_pairs,
    plugins,
    print_json,
    registries,
    runtime_settings,
)
from rd3_harness.errors import Rd3Error, UsageError
from rd3_harness.hashing import short_hash

CurrentOpt = Annotated[
    bool,
    typer.Option(
        "--current",
        help="Only runs of each method's installed plugin version with its default config"
        " (older versions and -c variants in the store are left out).",
    ),
]

StudentOpt = Annotated[
    str | None, typer.Option("--student", help="Student architecture to follow [default: see the command's help].")
]


def ablate(
    source: Annotated[str, typer.Option("--from", help="Protocol the walk starts from (the set is made under it).")],
    target: Annotated[str, typer.Option("--to", help="Protocol the walk ends at (its seeds are used throughout).")],
    plugin: Annotated[str | None, typer.Option("--plugin", help="Method plugin that makes the set.")] = None,
    synset: Annotated[Path | None, typer.Option("--synset", help="A synthetic set folder made by rd3h.")] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="Method config override key=value (repeatable).")
    ] = None,
    student: StudentOpt = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Evaluate every step again, even when the store has it.")
    ] = False,
    chart: Annotated[Path | None, typer.Option("--chart", help="Also draw the attribution chart to this PNG.")] = None,
    device: DeviceOpt = None,
    out_dir: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Walk from --from to --to one group of settings at a time, evaluating the same synthetic set.

    Groups, in this order, each applied on top of the previous ones: student architecture, labels and
    teachers, loss, batch size, epochs, optimizer, LR schedule, augmentation, student EMA, precision,
    reported epoch. Coupled settings move together; a step also takes the next group when the
    protocol would not validate otherwise. The followed student is --student, else the target's
    first student that the source also trains. Steps found in the store (same protocol hash and
    synthetic set) are reused. The attribution is saved under OUT/ablations/ for `rd3h report`.
    """
    from rd3_harness.analysis import ablate as ab
    from rd3_harness.analysis import leaderboard as lb
    from rd3_harness.analysis.report import ABLATIONS
    from rd3_harness.progress import rich_progress

    s = runtime_settings(out_dir, device)
    with rich_progress(err):
        result = ab.ablate(
            source,
            target,
            plugins=plugins(),
            settings=s,
            plugin=plugin,
            synset_dir=synset,
            config=parse_pairs(config),
            student=student,
            reuse=not fresh,
        )
    saved = ab.save(result, s.out / ABLATIONS)
    data = result.as_dict()
    if chart is not None:
        from rd3_harness.analysis.report import ablation_figure

        ablation_figure(data, chart)
    if as_json:
        print_json({**data, "saved": str(saved), "chart": str(chart) if chart else None})
        return
    title = (
        f"{result.method} on {result.plan.student}: {data['from']['name']} sha256:{short_hash(data['from']['hash'])}"
        f" -> {data['to']['name']} sha256:{short_hash(data['to']['hash'])}"
    )
    table = Table(
        "step", "setting(s) changed", "top-1 % (mean ± std)", "Δ vs previous (pp)", "hash", "run", title=title
    )
    for step in data["steps"]:
        changed = "\n".join(f"{c['path']}: {c['from']} -> {c['to']}" for c in step["changes"][:6])
        if len(step["changes"]) > 6:
            changed += f"\n(+{len(step['changes']) - 6} more)"
        acc = ab.step_accuracy(step)
        delta = "" if step["delta"] is None else f"{100 * step['delta']:+.2f}"
        run = step["run_id"] + (" (stored)" if step["reused"] else "")
        table.add_row(
            f"{step['index']} {step['label']}", changed or "-", acc, delta, short_hash(step["protocol_hash"]), run
        )
    out.print(table)
    if any(s["test_set_selection"] for s in data["steps"]):
        err.print(lb.FOOTNOTE, highlight=False, markup=False)
    err.print(
        f"total change {100 * data['total_change']:+.2f} pp = sum of the step changes; seeds {data['seeds']}"
        + ("; other students of the protocols were left out" if data["students_narrowed"] else "")
        + f"; saved {saved}",
        highlight=False,
    )


def _store(out_dir):
    from rd3_harness.cli.results import open_store

    return open_store(out_dir)


LEADERBOARD_FORMATS = ("table", "markdown", "csv", "json", "latex")


def leaderboard(
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", "-p", help="Protocol file, registered name or hash prefix [default: every hash]."),
    ] = None,
    student: StudentOpt = None,
    out_dir: OutOpt = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="table (rich), markdown (GitHub), csv (numbers as stored, one row per entry), json,"
            " latex (booktabs, one table per hash and student).",
        ),
    ] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Same as --format markdown.")] = False,
    current: CurrentOpt = False,
) -> None:
    """Rank methods: one table per protocol hash and student, never mixing hashes.

    Columns: mean ± std over seeds, 95% CI, gain over `random` under the same hash, Welch p-value
    against the best entry, time-to-synthesize and storage. Runs made by `rd3h ablate` are left out.
    """
    from rd3_harness.analysis import leaderboard as lb

    fmt = fmt.lower()
    if fmt not in LEADERBOARD_FORMATS:
        raise UsageError(f"--format {fmt!r}: use one of {', '.join(LEADERBOARD_FORMATS)}")
    aliases = {name for name, on in (("json", as_json), ("markdown", markdown)) if on}
    if len(aliases | ({fmt} if fmt != "table" else set())) > 1:
        raise UsageError("choose one output format: --format, --json and --markdown disagree")
    fmt = aliases.pop() if aliases else fmt
    store = _store(out_dir)
    h = lb.resolve_hash(registries(), store, protocol) if protocol else None
    tables = lb.boards(store, h, student, lb.current(plugins()) if current else None)
    if not tables:
        where = f"under sha256:{short_hash(h)} " if h else ""
        which = "complete runs of the installed plugins' defaults" if current else "complete runs"
        raise UsageError(f"no {which} {where}in {store.path}" + (f" for student {student}" if student else ""))
    if fmt == "json":
        print_json([t.as_dict() for t in tables])
        return
    if fmt in ("markdown", "csv", "latex"):
        text = {"markdown": lb.markdown, "csv": lb.csv_text, "latex": lb.latex}[fmt](tables)
        out.file.write(text)
        return
    for t in tables:
        rows = [lb.row(e) for e in t.entries]
        table = Table(*rows[0], title=lb.title(t), box=None)
        for r in rows:
            table.add_row(*r.values())
        out.print(table)
        if any(e.test_set_selection for e in t.entries):
            err.print(lb.FOOTNOTE, highlight=False, markup=False)
        if t.random_hint:
            err.print(f"no random baseline under this hash; run: {t.random_hint}", highlight=False, markup=False)


def report(
    protocol: Annotated[
        str | None,
        typer.Option("--protocol", "-p", help="Only this protocol (file, name or hash prefix) [default: every hash]."),
    ] = None,
    student: StudentOpt = None,
    legacy: Annotated[
        str | None,
        typer.Option("--legacy", help="Pair each method with its own legacy protocol, e.g. 'cpu/legacy-{method}.v1'."),
    ] = None,
    figures: Annotated[
        Path | None, typer.Option("--figures", help="Folder for the PNGs [default: OUT/figures].")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write a self-contained static site (open DIR/index.html) instead of the PNGs."),
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            "--screenshot",
            help="With --html: also save a 1280x900 PNG of the protocol page with the most entries (needs chromium).",
        ),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="With --html: open every protocol page in headless Chromium and fail unless each"
            " leaderboard shows exactly the store's entries (needs chromium).",
        ),
    ] = False,
    current: CurrentOpt = False,
    out_dir: OutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw PNG figures from the store (needs matplotlib: the `plot` extra), or with --html a static site.

    Per protocol hash and student: accuracy vs time-to-synthesize on a log axis and accuracy per
    method with error bars; every ablation saved under OUT/ablations; with --legacy, each method's
    number under its own legacy protocol beside its number under the standard.

    --html DIR writes pages that need no server and no network: the protocols by hash, per hash the
    sortable leaderboards, per-seed numbers, gains over random with 95% intervals, the efficiency
    figure (when matplotlib is installed) and each method's image grid, the protocol's settings and
    its diff against every other protocol, and a page per run with its record and environment.
    """
    from rd3_harness.analysis import leaderboard as lb

    store = _store(out_dir)
    folder = runtime_settings(out_dir).out
    h = lb.resolve_hash(registries(), store, protocol) if protocol else None
    if html is None:
        if screenshot is not None or check:
            raise UsageError("--screenshot and --check need --html DIR")
        from rd3_harness.analysis.report import report as draw

        written = draw(
            store,
            folder,
            figures or folder / "figures",
            protocol_hash=h,
            student=student,
            legacy=legacy,
            registries=registries(),
            keep=lb.current(plugins()) if current else None,
        )
    else:
        if legacy or figures or current:
            raise UsageError(
                "--legacy, --figures and --current belong to the PNG figures (the HTML report shows the"
                " whole store); drop them with --html"
            )
        from rd3_harness.analysis import html_report

        site = html_report.build(store, html, protocol_hash=h, student=student)
        for note in site.notes:
            err.print(note, markup=False, highlight=False)
        written = [site.index]
        if screenshot is not None:
            from rd3_harness.analysis.browser import screenshot as shoot

            written.append(shoot(site.largest, screenshot))
        if check:
            problems = html_report.check(site)
            if problems:
                raise Rd3Error("the rendered report does not match the store:\n" + "\n".join(problems))
            rows = sum(len(runs) for boards in site.expected.values() for runs in boards.values())
            err.print(
                f"checked in Chromium: {len(site.expected)} protocol page(s), {rows} leaderboard row(s), all present",
                markup=False,
                highlight=False,
            )
    if as_json:
        print_json([str(p) for p in written])
    else:
        for path in written:
            out.print(str(path), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(ablate)
    app.command()(leaderboard)
    app.command()(report)
