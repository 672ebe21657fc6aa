"""Server-side SVG bar charts: a y axis with round values and gridlines, x labels thinned so they never
overlap, bars that link to the calls behind them, and a table with the same numbers for screen readers and
keyboards. No JavaScript and no inline styles (the console's Content-Security-Policy forbids both); every
text is escaped. A few microseconds per chart, so the supervisor page keeps its 300 ms budget."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 480, 200
TOP, BOTTOM, LEFT, RIGHT = 28, 24, 44, 8
CHAR_WIDTH = 6.0  # of a 10 px label, generously
LABEL_GAP = 8.0


@dataclass(frozen=True)
class Bar:
    """One bar: its x ``label`` (short), ``value`` (None: no data, no bar), the ``full`` name shown in its
    tooltip and table (the label when empty) and ``href``, the page of the calls it counts."""

    label: str
    value: float | None
    full: str = ""
    href: str = ""


def nice_step(span: float, ticks: int = 4, integer: bool = False) -> float:
    """A round step (1, 2 or 5 × 10ⁿ) that cuts ``span`` into about ``ticks`` parts."""
    raw = span / max(1, ticks)
    if raw <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return max(1.0, step) if integer else step


def y_ticks(values: Sequence[float], unit: str) -> list[float]:
    """The y axis values from 0 up to at least the largest of ``values``: 0-100 % for ratios."""
    if unit == "%":
        return [0.0, 0.25, 0.5, 0.75, 1.0]
    peak = max(values, default=0.0)
    step = nice_step(peak if peak > 0 else 1.0, integer=unit == "")
    count = max(1, math.ceil(peak / step - 1e-9))
    return [i * step for i in range(count + 1)]


def fmt(value: float, unit: str) -> str:
    """A value as the chart writes it: 40%, 12.5 s, 7."""
    if unit == "%":
        return f"{value:.0%}"
    text = f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    return f"{text} s" if unit == "s" else text


def label_step(labels: Sequence[str], plot_width: float) -> int:
    """Show every n-th x label so that labels of the longest length never touch."""
    longest = max((len(s) for s in labels), default=0)
    fit = max(1, int(plot_width // (longest * CHAR_WIDTH + LABEL_GAP)))
    return max(1, math.ceil(len(labels) / fit))


def bar_chart(title: str, bars: Sequence[Bar], *, unit: str = "", axis: str = "", chart_id: str = "",
              empty: str = "No calls in this period") -> Markup:  # fmt: skip
    """A figure with a titled bar chart of ``bars`` (``unit`` "%" for 0..1 ratios, "s" for seconds, "" for
    counts; ``axis`` names the y axis) and the same numbers as a table."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_h
    values = [b.value for b in bars if b.value is not None]
    ticks = y_ticks(values, unit)
    top_value = ticks[-1] or 1.0
    slot = plot_w / max(1, len(bars))
    bar_w = max(1.0, slot * 0.72)
    cid = escape(chart_id)
    parts = [f'<figure class="chart" id="{cid}"><figcaption id="{cid}-title">{escape(title)}</figcaption>',
             f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="group" '
             f'aria-labelledby="{cid}-title">']  # fmt: skip
    for tick in ticks:
        y = base - plot_h * tick / top_value
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="y-tick" x="{LEFT - 4}" y="{y + 3:.1f}">{escape(fmt(tick, unit))}</text>')
    if axis:
        parts.append(f'<text class="y-axis" x="2" y="10">{escape(axis)}</text>')
    for i, bar in enumerate(bars):
        if bar.value is None:
            continue
        h = plot_h * max(0.0, bar.value) / top_value
        x = LEFT + i * slot + (slot - bar_w) / 2
        tip = f"{bar.full or bar.label}: {fmt(bar.value, unit)}"
        rect = (f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(tip)}</title></rect>")  # fmt: skip
        parts.append(f'<a href="{escape(bar.href)}">{rect}</a>' if bar.href else rect)
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}"/>')
    every = label_step([b.label for b in bars], plot_w)
    for i, bar in enumerate(bars):
        if i % every == 0:
            x = LEFT + (i + 0.5) * slot
            parts.append(f'<text class="x-label" x="{x:.1f}" y="{base + 14}">{escape(bar.label)}</text>')
    if not values:
        parts.append(f'<text class="chart-empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}">'
                     f"{escape(empty)}</text>")  # fmt: skip
    parts.append("</svg>")
    parts.append(_table(title, bars, unit))
    parts.append("</figure>")
    return Markup("".join(parts))


def _table(title: str, bars: Sequence[Bar], unit: str) -> str:
    rows = []
    for bar in bars:
        shown = "–" if bar.value is None else fmt(bar.value, unit)
        cell = escape(shown)
        if bar.href and bar.value is not None:
            cell = Markup(f'<a href="{escape(bar.href)}">{cell}</a>')
        rows.append(f"<tr><td>{escape(bar.full or bar.label)}</td><td>{cell}</td></tr>")
    return (f'<details class="chart-data"><summary>Table</summary><table><caption>{escape(title)}</caption>'
            f"<tr><th>Period</th><th>Value</th></tr>{''.join(rows)}</table></details>")  # fmt: skip
