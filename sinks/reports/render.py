"""Write a Report as self-contained HTML (inline SVG charts, inline CSS: no network, so it
opens in a mail client or an air-gapped audit room), Markdown, and one CSV per table.

Chart geometry is computed here, not in the template, so it is tested as data and the
template only draws rectangles.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Sequence

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from sinks.reports.model import Chart, Report

WIDTH: Final = 640
BAR_HEIGHT: Final = 18
TIME_HEIGHT: Final = 180
CHAR_PX: Final = 7.0              # a wide estimate of an 11px label character
LABEL_PAD: Final = 12             # between the label and its bar
MIN_LABEL_PX: Final = 80
MAX_LABEL_PX: Final = 320
VALUE_PX: Final = 60              # room right of the longest bar for its value
PALETTE: Final = ("#2f6fdf", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285")
SEVERITY_COLOURS: Final = {"critical": "#a61e4d", "high": "#e8590c", "medium": "#f59f00",
                           "low": "#2b8a3e", "informational": "#868e96"}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    label: str                    # the whole label (the tooltip)
    value: int
    colour: str
    shown: str = ""               # the label as drawn, cut to fit its column


@dataclass(frozen=True)
class Drawing:
    chart: Chart
    width: int
    height: int
    bars: list[Bar]
    label_x: float                # where value labels of horizontal bars start


def draw(chart: Chart) -> Drawing:
    """Bars for a chart; an empty chart has no bars (the template says "no data")."""
    top = max(chart.values, default=0) or 1
    if chart.kind == "time":
        n = max(len(chart.values), 1)
        step = (WIDTH - 40) / n
        bars = [Bar(40 + i * step + 1, TIME_HEIGHT - 20 - v / top * (TIME_HEIGHT - 30),
                    max(step - 2, 1), v / top * (TIME_HEIGHT - 30), label, v, PALETTE[0])
                for i, (label, v) in enumerate(zip(chart.labels, chart.values)) if v]
        return Drawing(chart, WIDTH, TIME_HEIGHT, bars, 0)
    labels = [shown_label(label) for label in chart.labels]
    # The label column as wide as its longest label needs (at a generous CHAR_PX a character),
    # within bounds; a longer label is cut to fit and has its full text as a tooltip.
    longest = max((len(label) for label in labels), default=0)
    left = min(max(LABEL_PAD + CHAR_PX * longest, MIN_LABEL_PX), MAX_LABEL_PX)
    fits = int((left - LABEL_PAD) // CHAR_PX)
    room = WIDTH - left - VALUE_PX
    bars = [Bar(left, 4 + i * (BAR_HEIGHT + 4), max(v / top * room, 1), BAR_HEIGHT, label, v,
                SEVERITY_COLOURS.get(label, PALETTE[i % len(PALETTE)]),
                label if len(label) <= fits else label[:fits - 1] + "…")
            for i, (label, v) in enumerate(zip(labels, chart.values))]
    return Drawing(chart, WIDTH, 8 + len(bars) * (BAR_HEIGHT + 4), bars, left)


def shown_label(label: object) -> str:
    """A chart label as text: an absent value (no user, no namespace) says so."""
    return "(none)" if label is None or label == "" else str(label)


def finalize(value: object) -> object:
    """What `{{ }}` prints: nothing for None, never the word "None"."""
    return "" if value is None else value


def environment() -> Environment:
    env = Environment(loader=PackageLoader("sinks.reports", "templates"),
                      autoescape=select_autoescape(["html.j2"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      finalize=finalize)
    env.filters["md"] = _markdown_cell
    env.globals["draw"] = draw
    env.globals["zip"] = zip
    return env


# What a value from the data (a user, a pod, an image, a label) may not do in a Markdown
# report: open raw HTML or an autolink (`&`, `<`, `>` become entities), make a link or an image
# (`[`, `]`), emphasis, code or strikethrough, or end its table cell (`|`). Each is shown as it
# is once rendered. A bare URL stays text here; renderers with GFM's autolink extension may still
# link it, showing its own target.
MD_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
MD_SPECIAL: Final = re.compile(r"[\\`*_\[\]|~&<>]")
# Spreadsheets run a cell starting with one of these as a formula (OWASP, CSV injection).
CSV_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _markdown_cell(value: object) -> str:
    text = str("" if value is None else value).replace("\r\n", " ").replace("\n", " ")
    return MD_SPECIAL.sub(lambda m: MD_ENTITIES.get(m.group(0), "\\" + m.group(0)),
                          text.replace("\r", " "))


def csv_cell(value: object) -> object:
    """A text cell that a spreadsheet would take for a formula (`=HYPERLINK(...)`, `+`, `-`,
    `@`, a tab or a carriage return first) prefixed with `'`, as OWASP recommends; numbers and
    other text as they are (the csv module quotes what needs quoting)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def render(report: Report, out_dir: Path, formats: Sequence[str]) -> list[Path]:
    """Write the report in each format; returns the files written (HTML first)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{report.name}-{report.time_to:%Y%m%dT%H%M}"
    env = environment()
    written: list[Path] = []
    for fmt, template in (("html", "report.html.j2"), ("md", "report.md.j2")):
        if fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            path.write_text(env.get_template(template).render(report=report))
            written.append(path)
    if "csv" in formats:
        for section in report.sections:
            for table in section.tables:
                path = out_dir / f"{stem}-{table.slug}.csv"
                with open(path, "w", newline="") as out:
                    writer = csv.writer(out)
                    writer.writerow([csv_cell(column) for column in table.columns])
                    writer.writerows([csv_cell(cell) for cell in row] for row in table.rows)
                written.append(path)
    return written
