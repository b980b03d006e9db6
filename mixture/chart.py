"""A dependency-free SVG bar chart: horizontal bars, one group per row, one bar per series."""
from __future__ import annotations

from html import escape

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
ROW_LABEL_WIDTH = 170
PLOT_WIDTH = 460
VALUE_WIDTH = 70
BAR_HEIGHT = 16
GAP = 10


def bar_chart(title: str, rows: list[tuple[str, list[float]]], series: list[str]) -> str:
    """An SVG document: for each (label, values) row, one bar per series, values being shares in
    [0, 1] drawn against a 0-100% axis and printed as percentages beside the bars."""
    group_height = BAR_HEIGHT * len(series) + GAP
    legend_height = 22 if len(series) > 1 else 0
    top = 34 + legend_height
    width = ROW_LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH
    height = top + group_height * len(rows) + 10
    scale = PLOT_WIDTH / max([1e-9] + [value for _, values in rows for value in values])
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    if len(series) > 1:
        for index, name in enumerate(series):
            x = ROW_LABEL_WIDTH + index * 140
            parts.append(f'<rect x="{x}" y="28" width="12" height="12" fill="{COLORS[index % len(COLORS)]}"/>')
            parts.append(f'<text x="{x + 16}" y="38">{escape(name)}</text>')
    for row_index, (label, values) in enumerate(rows):
        y = top + row_index * group_height
        middle = y + BAR_HEIGHT * len(series) / 2 + 4
        parts.append(f'<text x="{ROW_LABEL_WIDTH - 8}" y="{middle:.1f}" text-anchor="end">{escape(label)}</text>')
        for index, value in enumerate(values):
            bar_y = y + index * BAR_HEIGHT
            length = max(0.0, value) * scale
            parts.append(f'<rect x="{ROW_LABEL_WIDTH}" y="{bar_y}" width="{length:.1f}" '
                         f'height="{BAR_HEIGHT - 2}" fill="{COLORS[index % len(COLORS)]}"/>')
            parts.append(f'<text x="{ROW_LABEL_WIDTH + length + 4:.1f}" y="{bar_y + BAR_HEIGHT - 4}">'
                         f'{value:.1%}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
