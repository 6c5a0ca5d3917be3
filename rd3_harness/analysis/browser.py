"""Headless Chromium for the HTML report: a page's rendered DOM, and a screenshot of it.

Chromium (Debian package `chromium`; `RD3_CHROMIUM` names another binary) runs headless with a
fresh profile in a temporary folder, no GPU, no sandbox (tests and CI run as root in containers),
no background networking, and /tmp instead of a small /dev/shm. Pages are opened from files, so nothing is served.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from rd3_harness.errors import Rd3Error, UsageError

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)
INSTALL = "install Chromium (Debian: apt-get install -y chromium) or set RD3_CHROMIUM to its binary"


def find_chromium() -> str | None:
    """The Chromium binary: `RD3_CHROMIUM`, else the first of `BINARIES` on PATH; None if there is none."""
    named = os.environ.get("RD3_CHROMIUM")
    if named:
        return shutil.which(named)
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def page_url(page: Path, fragment: str = "") -> str:
    """The file:// address of `page`, with `#fragment` when given."""
    return Path(page).resolve().as_uri() + (f"#{fragment}" if fragment else "")


def chromium(*args: str, timeout: float = 60) -> str:
    """Run headless Chromium with `args`; its stdout."""
    binary = find_chromium()
    if binary is None:
        raise UsageError(f"no Chromium found: {INSTALL}")
    with tempfile.TemporaryDirectory(prefix="rd3-chromium-") as profile:
        try:
            done = subprocess.run(
                [binary, *FLAGS, f"--user-data-dir={profile}", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise Rd3Error(f"Chromium did not finish within {timeout:.0f} s: {' '.join(args)}") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise Rd3Error(f"Chromium failed (exit {done.returncode}) on {' '.join(args)}:\n{tail}")
    return done.stdout


def dump_dom(page: Path, fragment: str = "") -> str:
    """The DOM of `page` after its scripts ran (`--dump-dom`), as HTML."""
    return chromium("--dump-dom", page_url(page, fragment))


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 900)) -> Path:
    """Save a `size` screenshot of `page` to `png`."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    chromium(f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page_url(page))
    if not png.is_file():
        raise Rd3Error(f"Chromium wrote no screenshot to {png}")
    return png


class _Tables(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[tuple[dict[str, str], list[str]]]] = {}
        self.current: str | None = None
        self.in_body = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        if tag == "table" and "id" in attrs:
            self.current = attrs["id"]
            self.tables[self.current] = []
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.current and self.in_body:
            self.tables[self.current].append((attrs, []))
        elif tag == "td" and self.current and self.in_body:
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.tables[self.current][-1][1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def tables(html: str) -> dict[str, list[tuple[dict[str, str], list[str]]]]:
    """Every `<table id=...>` of a document: its body rows as (attributes of `<tr>`, cell texts)."""
    parser = _Tables()
    parser.feed(html)
    return parser.tables
