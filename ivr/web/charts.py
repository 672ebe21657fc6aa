"""Small server-side SVG charts (no JavaScript, nothing from the internet). Labels are escaped."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape


def bar_chart(
    title: str, points: Sequence[tuple[str, float | None]], *, unit: str = "", width: int = 360, height: int = 140
) -> Markup:
    """A bar chart of (label, value) points; None values leave a gap."""
    top, bottom, left = 18, 20, 4
    plot_h = height - top - bottom
    values = [v for _, v in points if v is not None]
    peak = max(values) if values and max(values) > 0 else 1.0
    step = (width - left) / max(1, len(points))
    bar_w = max(1.0, step * 0.7)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="12" class="chart-title">{escape(title)}</text>',
    ]
    label_every = max(1, len(points) // 8)
    for i, (label, value) in enumerate(points):
        x = left + i * step
        if value is not None:
            h = plot_h * value / peak
            shown = f"{value:.0%}" if unit == "%" else f"{value:g}{escape(unit)}"
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)}: {shown}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - 6}" class="chart-label">{escape(label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
