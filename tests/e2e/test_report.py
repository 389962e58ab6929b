"""`ctrail report run weekly` on the sample audit logs: HTML and Markdown are written, and the
HTML, opened in headless Chromium, draws its charts."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples/k8s-audit").glob("*.json"))
CHROMIUM = Path("/usr/bin/chromium")
PERIOD = ("--from", "2018-10-20T00:00:00Z", "--to", "2018-10-27T00:00:00Z")


@pytest.fixture
def weekly(ctrail, tmp_path: Path) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    assert ctrail("ingest", "--source", "k8s-audit", *map(str, SAMPLES)).status == 0
    result = ctrail("report", "run", "weekly", *PERIOD, "--out", str(tmp_path / "out"))
    assert result.status == 0, result.err
    files = [Path(line) for line in result.out.splitlines()]
    return {path.suffix: path for path in files if path.suffix in (".html", ".md")} | {
        "csv": [p for p in files if p.suffix == ".csv"]}  # type: ignore[dict-item]


def test_weekly_report_renders_html_markdown_and_csv(weekly: dict) -> None:  # type: ignore[type-arg]
    html, md = weekly[".html"].read_text(), weekly[".md"].read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    for title in ("Alerts by severity", "Privileged and host-access workloads",
                  "Exec and attach sessions", "RBAC changes", "Secret reads by humans",
                  "Images by registry", "Unpinned tags", "Unknown provenance"):
        assert title in html and title in md
    # exec_pod.json and attach_pod.json: one session each, by minikube-user
    assert re.search(r"\| \S+ \| minikube-user \| exec \| default \|", md)
    assert re.search(r"\| \S+ \| minikube-user \| attach \| default \|", md)
    names = {p.name.split("T0000-")[1] for p in weekly["csv"]}
    assert {"sessions.csv", "rbac-changes.csv", "unpinned-tags.csv"} <= names


def test_the_svg_charts_have_one_bar_per_value(weekly: dict) -> None:  # type: ignore[type-arg]
    html = weekly[".html"].read_text()
    figure = re.search(r'id="chart-alerts-by-severity".*?</figure>', html, re.S)
    assert figure is not None
    bars = re.findall(r'<rect class="bar"[^>]*><title>([^<]+)</title>', figure.group())
    assert bars and all(re.fullmatch(r"(critical|high|medium|low): \d+", b) for b in bars)
    total = sum(int(b.split(": ")[1]) for b in bars)
    assert f"Alerts<b>{total}</b>" in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed at "
                    "/usr/bin/chromium (apt-get install -y chromium)")
def test_headless_chromium_draws_the_charts(weekly: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    shot = tmp_path / "weekly.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1000,1400", f"--screenshot={shot}",
                    weekly[".html"].as_uri()], capture_output=True, timeout=120,
                   cwd=tmp_path, check=True)
    width, height, pixels = read_png(shot.read_bytes())
    # The severity bars (high #e8590c, medium #f59f00, low #2b8a3e) and the time columns
    # (#2f6fdf) are drawn: count pixels of exactly those colours.
    colours = {(0xe8, 0x59, 0x0c), (0xf5, 0x9f, 0x00), (0x2b, 0x8a, 0x3e), (0x2f, 0x6f, 0xdf)}
    drawn = {c: 0 for c in colours}
    for pixel in pixels:
        if pixel in drawn:
            drawn[pixel] += 1
    assert all(count > 300 for count in drawn.values()), drawn


def read_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """A non-interlaced 8-bit RGB or RGBA PNG, decoded with the standard library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6)
    step = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * step
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - step] if i >= step else 0
            b, c = prev[i], prev[i - step] if i >= step else 0
            line[i] = (line[i] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]) & 0xFF
        rows.append(line)
        prev = line
    return width, height, [tuple(row[i:i + 3]) for row in rows  # type: ignore[misc]
                           for i in range(0, stride, step)]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def test_an_unknown_report_is_a_usage_error(ctrail) -> None:  # type: ignore[no-untyped-def]
    result = ctrail("report", "run", "monthly")
    assert result.status == 2 and "no report named 'monthly'" in result.err


