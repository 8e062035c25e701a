"""Server-side bar charts: geometry computed here, drawn as inline SVG by _charts.html.

No JavaScript and nothing external; colours come from the stylesheet (series
classes), text is escaped by the templates, and every chart also comes with
the same figures as a table for screen readers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str
    series: int


@dataclass
class Chart:
    title: str
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    x_labels: list[tuple[float, float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    legend: list[tuple[int, str]] = field(default_factory=list)
    plot_left: float = 0
    plot_bottom: float = 0
    plot_right: float = 0


def nice_max(value: int) -> int:
    """A round axis maximum at or above value (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def grouped_bars(title: str, categories: list[str], series: dict[str, list[int]],
                 width: int = 640, height: int = 240) -> Chart:
    left, right, top, bottom = 44, 8, 12, 40
    chart = Chart(title, width, height, plot_left=left, plot_bottom=height - bottom,
                  plot_right=width - right)
    top_value = nice_max(max((v for vals in series.values() for v in vals), default=0))
    plot_h, plot_w = height - top - bottom, width - left - right
    group_w = plot_w / max(1, len(categories))
    bar_w = group_w * 0.8 / max(1, len(series))
    for s_index, (name, values) in enumerate(series.items()):
        chart.legend.append((s_index, name))
        for c_index, value in enumerate(values):
            h = plot_h * value / top_value
            x = left + c_index * group_w + group_w * 0.1 + s_index * bar_w
            chart.bars.append(Bar(round(x, 1), round(top + plot_h - h, 1), round(bar_w, 1),
                                  round(h, 1), value, f"{categories[c_index]}: {name} {value}",
                                  s_index))
    chart.x_labels = [(round(left + (i + 0.5) * group_w, 1), height - bottom + 16, c)
                      for i, c in enumerate(categories)]
    fractions = (0, 0.5, 1) if top_value % 2 == 0 else (0, 1)   # whole numbers only
    chart.y_ticks = [(round(top + plot_h * (1 - f), 1), str(int(top_value * f)))
                     for f in fractions]
    return chart


def horizontal_bars(title: str, items: list[tuple[str, int]], width: int = 640) -> Chart:
    # Each row: the reason as text, its bar beneath (reasons are too long for a side axis).
    row_h, label_w, right = 36, 0, 56
    height = max(1, len(items)) * row_h + 4
    chart = Chart(title, width, height, plot_left=label_w, plot_bottom=height,
                  plot_right=width - right)
    top_value = max((n for _, n in items), default=1) or 1
    for i, (label, value) in enumerate(items):
        w = (width - label_w - right) * value / top_value
        chart.bars.append(Bar(label_w, i * row_h + 18, round(max(w, 2), 1), 12, value,
                              label, 1))
    return chart
