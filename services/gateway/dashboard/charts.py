"""Charts as inline SVG, drawn here (no chart library, nothing fetched): a line chart with
axes, ticks, units and a legend, and a horizontal bar chart. Pure functions returning markup;
every text is escaped. Colours come from CSS classes (`s0`...`s7`), so the page's style sheet
decides them and the CSP needs no inline styles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 56


@dataclass(frozen=True)
class Line:
    name: str
    points: Sequence[float | None]  # one per x label; None: no value there


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:g}%"
    return f"{value:g}"


def line_chart(
    *,
    title: str,
    x_labels: Sequence[str],
    lines: Sequence[Line],
    x_title: str,
    y_title: str,
    unit: str = "",
    y_max: float | None = None,
    ident: str = "chart",
) -> str:
    """A line chart: y from 0 to y_max (or a round maximum of the data), four gridlines, the x
    labels (thinned to fit), a point per value with a tooltip (<title>), a legend."""
    values = [v for line in lines for v in line.points if v is not None]
    top = y_max if y_max is not None else nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(x_labels), 1)

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * (v / top if top else 0)

    parts = [
        f'<svg class="chart" id="{escape(ident)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{escape(ident)}-title">',
        f'<title id="{escape(ident)}-title">{escape(title)}</title>',
    ]
    for k in range(5):  # gridlines and y ticks
        value = top * k / 4
        yy = y(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{yy + 4:.1f}" text-anchor="end">'
            f"{escape(_fmt(round(value, 2), unit))}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + plot_h}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" '
        f'y2="{TOP + plot_h}"/>'
    )
    every = max(1, math.ceil(len(x_labels) / 10))
    for i, label in enumerate(x_labels):
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x(i):.1f}" y="{TOP + plot_h + 16}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append(
        f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 24}" '
        f'text-anchor="middle">{escape(x_title)}</text>'
        f'<text class="axis-title" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(y_title)}</text>'
    )
    for s, line in enumerate(lines):
        cls = f"s{s % 8}"
        segment: list[str] = []
        segments: list[list[str]] = []
        for i, v in enumerate(line.points):
            if v is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            segment.append(f"{x(i):.1f},{y(v):.1f}")
        if segment:
            segments.append(segment)
        for seg in segments:
            parts.append(f'<polyline class="line {cls}" points="{" ".join(seg)}"/>')
        for i, v in enumerate(line.points):
            if v is not None:
                parts.append(
                    f'<circle class="dot {cls}" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3">'
                    f"<title>{escape(line.name)}, {escape(x_labels[i])}: "
                    f"{escape(_fmt(round(v, 2), unit))}</title></circle>"
                )
    legend_x = LEFT
    for s, line in enumerate(lines):  # legend under the x title
        cls = f"s{s % 8}"
        parts.append(
            f'<rect class="key {cls}" x="{legend_x}" y="{HEIGHT - 12}" width="10" height="10"/>'
            f'<text class="legend" x="{legend_x + 14}" y="{HEIGHT - 3}">{escape(line.name)}</text>'
        )
        legend_x += 24 + 7 * len(line.name)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    *, title: str, bars: Sequence[tuple[str, int]], unit: str, ident: str = "bars"
) -> str:
    """Horizontal bars, one per (label, value), a value axis from 0 with its unit."""
    top = nice_max(max((v for _, v in bars), default=0))
    row, label_w = 28, 150
    plot_w = WIDTH - label_w - RIGHT - 40
    height = TOP + row * len(bars) + 40
    parts = [
        f'<svg class="chart" id="{escape(ident)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{escape(ident)}-title">',
        f'<title id="{escape(ident)}-title">{escape(title)}</title>',
    ]
    base = TOP + row * len(bars)
    for k in range(5):
        xx = label_w + plot_w * k / 4
        parts.append(
            f'<line class="grid" x1="{xx:.1f}" x2="{xx:.1f}" y1="{TOP}" y2="{base}"/>'
            f'<text class="tick" x="{xx:.1f}" y="{base + 16}" text-anchor="middle">'
            f"{top * k / 4:g}</text>"
        )
    parts.append(
        f'<text class="axis-title" x="{label_w + plot_w / 2:.1f}" y="{base + 34}" '
        f'text-anchor="middle">{escape(unit)}</text>'
    )
    for i, (label, value) in enumerate(bars):
        yy = TOP + row * i + 4
        w = plot_w * value / top if top else 0
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{yy + 15}" text-anchor="end">'
            f"{escape(label)}</text>"
            f'<rect class="bar s{i % 8}" x="{label_w}" y="{yy}" width="{w:.1f}" height="20">'
            f"<title>{escape(label)}: {value}</title></rect>"
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{yy + 15}">{value}</text>'
        )
    parts.append(f'<line class="axis" x1="{label_w}" x2="{label_w}" y1="{TOP}" y2="{base}"/></svg>')
    return "".join(parts)
