"""Charts drawn on the server as SVG: no front-end build, no script, readable without one.

Every chart is plain SVG text (escaped, so a label can never inject markup) with a ``<title>``
per mark, which browsers show on hover, and an ``aria-label`` that says what it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup


@dataclass(frozen=True, slots=True)
class Point:
    """One bar: its axis label, its value, and what its hover title says."""

    label: str
    value: float
    title: str


def bars(
    points: Sequence[Point],
    *,
    caption: str,
    width: int = 720,
    height: int = 180,
    unit: str = "$",
) -> Markup:
    """A bar chart of ``points`` (left to right), its largest value on the axis."""
    if not points:
        return Markup(f'<p class="empty">{escape(caption)}: nothing yet.</p>')
    left, bottom, top = 76, 22, 8
    inner_w, inner_h = width - left - 8, height - bottom - top
    peak = max(p.value for p in points) or 1.0
    step = inner_w / len(points)
    gap = min(4.0, step * 0.2)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(caption)}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{left}" y1="{top + inner_h}" x2="{width - 8}"'
        f' y2="{top + inner_h}"/>',
        f'<text class="tick" x="{left - 6}" y="{top + 10}" text-anchor="end">'
        f"{escape(_short(peak, unit))}</text>",
        f'<text class="tick" x="{left - 6}" y="{top + inner_h}" text-anchor="end">'
        f"{escape(_short(0, unit))}</text>",
    ]
    every = max(1, len(points) // 8)  # at most about eight labels on the axis
    for i, point in enumerate(points):
        h = inner_h * (point.value / peak) if point.value > 0 else 0
        x = left + i * step + gap / 2
        y = top + inner_h - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{step - gap:.1f}"'
            f' height="{max(h, 0.5 if point.value > 0 else 0):.1f}">'
            f"<title>{escape(point.title)}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + (step - gap) / 2:.1f}" y="{height - 6}"'
                f' text-anchor="middle">{escape(point.label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def meter(used: float, limit: float, *, caption: str) -> Markup:
    """A burn bar: ``used`` of ``limit``, past 80% amber, past 100% red."""
    share = used / limit if limit > 0 else 0.0
    level = "over" if share >= 1 else "high" if share >= 0.8 else "ok"
    shown = min(share, 1.0) * 100
    return Markup(
        f'<svg class="meter {level}" viewBox="0 0 100 8" preserveAspectRatio="none"'
        f' role="img" aria-label="{escape(caption)}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect class="track" x="0" y="0" width="100" height="8"/>'
        f'<rect class="fill" x="0" y="0" width="{shown:.2f}" height="8"/>'
        f"<title>{escape(caption)}</title></svg>"
    )


def _short(value: float, unit: str) -> str:
    if unit != "$":
        return f"{value:,.0f}"
    if value >= 1000:
        return f"${value / 1000:,.1f}k"
    places = 2  # below a cent, to two significant digits
    while value and places < 8 and value < 10 ** (1 - places):
        places += 1
    return f"${value:,.{places}f}"
