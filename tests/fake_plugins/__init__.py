"""Small fake plugins for the plugin kit's tests (package `rd3_kit_fakes`, one module per plugin).

`install` makes them installed plugins for one test the way pip does it: a `.dist-info` folder with
`entry_points.txt` on sys.path, without building or copying anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rd3_harness.plugins import reset_plugins

HERE = Path(__file__).parent
ENTRY_POINTS = {
    name: f"rd3_kit_fakes.{name.removeprefix('kit-')}"
    for name in (
        "kit-good",
        "kit-badarg",
        "kit-noinfo",
        "kit-unmarked",
        "kit-typo",
        "kit-loose",
        "kit-invalid",
        "kit-flaky",
        "kit-mixes",
        "kit-cpuout",
        "kit-devgen",
        "kit-registry",
    )
}


def install(
    monkeypatch: pytest.MonkeyPatch,
    site: Path,
    distribution: str = "rd3-kit-fakes",
    entry_points: dict[str, str] = ENTRY_POINTS,
    source: Path = HERE,
) -> None:
    """Install `entry_points` (name -> module under `source`) as `distribution` 0.1.0 until the test ends."""
    info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(
        "[rd3_harness]\n" + "".join(f"{name} = {module}\n" for name, module in entry_points.items())
    )
    monkeypatch.syspath_prepend(str(source))
    monkeypatch.syspath_prepend(str(site))
    reset_plugins()
