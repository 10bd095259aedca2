"""A real headless browser for the tests of the status page: Debian's ``chromium``, its DOM after the
page's script ran (``--dump-dom``), a screenshot, and the screenshot's pixels (a small PNG reader)."""
from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest


def chromium() -> str:
    """The browser's path; the test is skipped, saying why, where none is installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not on PATH (Debian: apt-get install -y chromium; .ci/run installs it)")
    return found


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    # --no-sandbox: the tests may run as root, where chromium's sandbox refuses to start
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--disable-background-networking", f"--user-data-dir={profile}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def dump_dom(page: Path, profile: Path) -> str:
    """The page's DOM as the browser has it after running its scripts."""
    return _run(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], profile).stdout


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int] = (1000, 700)) -> Path:
    _run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", page.as_uri()],
         profile)
    assert png.exists(), f"chromium wrote no screenshot to {png}"
    return png


class Elements(HTMLParser):
    """Every start tag's attributes and the text inside elements with an id, from a DOM dump."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text_of: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "meta", "img", "input", "link"):
            self._open.append(dict(attrs).get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.text_of[ident] = self.text_of.get(ident, "") + data

    def cells(self) -> dict[str, str]:
        """``data-date`` → ``data-state`` of every day cell."""
        return {a["data-date"]: a["data-state"] for t, a in self.tags if t == "td" and a.get("data-date")}


def png_colours(png: Path) -> Counter:
    """How many pixels of each (r, g, b) colour an 8-bit, non-interlaced RGB or RGBA PNG has."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, colour_type, _, _, interlace = header
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, header
    channels = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    previous, counts = bytearray(stride), Counter()
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1:start + 1 + stride]), previous, channels)
        counts.update(zip(row[0::channels], row[1::channels], row[2::channels], strict=True))
        previous = row
    return counts


def _unfilter(kind: int, row: bytearray, above: bytearray, bpp: int) -> bytearray:
    if kind == 0:
        return row
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + above[i]) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + ((left + above[i]) >> 1)) & 0xFF
        else:
            upper_left = above[i - bpp] if i >= bpp else 0
            p = left + above[i] - upper_left
            pa, pb, pc = abs(p - left), abs(p - above[i]), abs(p - upper_left)
            row[i] = (row[i] + (left if pa <= pb and pa <= pc else above[i] if pb <= pc else upper_left)) & 0xFF
    return row
