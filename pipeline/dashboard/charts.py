"""Charts as SVG written on the server: no script, nothing fetched, readable offline.

A chart is a time axis (the window the page shows) and one line per series; with few points
each gets a dot whose tooltip (`<title>`) gives its value. Colours come from the page's CSS
classes (`series-0`, `series-1`, ...), so the charts follow the stylesheet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 190
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 26, 24
DOTS_UP_TO = 200  # points per series drawn as dots with a tooltip; beyond, the line alone


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[datetime, float]]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (axes end there)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return 10.0 * power


def short_number(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def time_chart(
    title: str, series: Sequence[Series], start: datetime, end: datetime, unit: str = ""
) -> Markup:
    """One SVG chart of `series` over [start, end]."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max((end - start).total_seconds(), 1.0)
    top = nice_ceiling(max((v for s in series for _, v in s.points), default=0.0))

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text class="chart-title" x="{LEFT}" y="14">{escape(title)}</text>',
    ]
    legend_x = WIDTH - RIGHT
    for i, s in reversed(list(enumerate(series))):
        parts.append(
            f'<text class="legend series-{i}" x="{legend_x}" y="14" text-anchor="end">'
            f"■ {escape(s.name)}</text>"
        )
        legend_x -= 14 + 7 * len(s.name)
    steps = 5 if str(f"{top:e}")[0] == "5" else 4  # 0.1 steps up to 0.5, 0.25 up to 1
    for i in range(steps + 1):
        value = top * i / steps
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
            f"{short_number(value)}{escape(unit)}</text>"
        )
    for i in range(6):
        moment = start + timedelta(seconds=span * i / 5)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(
            f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">'
            f"{moment:%d %b}</text>"
        )
    if not any(s.points for s in series):
        parts.append(
            f'<text class="empty" x="{LEFT + plot_w / 2}" y="{TOP + plot_h / 2}" '
            'text-anchor="middle">no runs in this window</text>'
        )
    for i, s in enumerate(series):
        if not s.points:
            continue
        path = " ".join(
            f"{'M' if n == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for n, (t, v) in enumerate(s.points)
        )
        parts.append(f'<path class="line series-{i}" d="{path}"/>')
        if len(s.points) <= DOTS_UP_TO:
            parts += [
                f'<circle class="dot series-{i}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3">'
                f"<title>{escape(s.name)}: {v:,.6g}{escape(unit)} at {t:%Y-%m-%d %H:%M} UTC"
                "</title></circle>"
                for t, v in s.points
            ]
    parts.append("</svg>")
    return Markup("".join(parts))
