"""Inline SVG charts for the HTML report: horizontal bars and histograms, no dependencies.

Every chart is a self-contained ``<svg>`` element meant to be pasted into the page (no external
fonts, scripts or images), so the report renders offline in any browser. Every label passes through
``html.escape``: category, language and reason names come from configs and data.
"""
from __future__ import annotations

from html import escape
from typing import Sequence

KEPT = "#4c72b0"
REMOVED = "#dd8452"
SERIES = [KEPT, REMOVED, "#55a868", "#c44e52", "#8172b3", "#937860"]
THRESHOLD = "#c0392b"


def _fmt(value: float) -> str:
    """A compact number for bar ends: 1,234 or 12.3 or 0.123."""
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def hbars(rows: Sequence[tuple[str, Sequence[float]]], series: Sequence[str], stacked: bool = True,
          colors: Sequence[str] = SERIES, label_width: int = 190, plot_width: int = 420,
          value_label=None, title: str = "") -> str:
    """Horizontal bars, one row per (label, values). ``stacked``: the values of a row are segments of
    one bar (kept + removed); otherwise one thinner bar per series (target vs realised).
    ``value_label(values)`` gives the text printed after the bar (default: the total)."""
    bar, gap = (16, 6) if stacked else (11, 8)
    per_row = bar if stacked else bar * len(series)
    legend = 20 if len(series) > 1 else 0
    top = legend + (22 if title else 4)
    width = label_width + plot_width + 110
    height = top + len(rows) * (per_row + gap) + 4
    largest = max([1e-12] + [sum(v) if stacked else max(v, default=0) for _, v in rows])
    scale = plot_width / largest
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img">']
    if title:
        out.append(f'<text x="4" y="15" font-weight="bold">{escape(title)}</text>')
    if len(series) > 1:
        for index, name in enumerate(series):
            x = label_width + index * 130
            out.append(f'<rect x="{x}" y="{top - legend}" width="11" height="11" fill="{colors[index % len(colors)]}"/>'
                       f'<text x="{x + 15}" y="{top - legend + 10}">{escape(name)}</text>')
    for row_index, (label, values) in enumerate(rows):
        y = top + row_index * (per_row + gap)
        out.append(f'<text x="{label_width - 6}" y="{y + per_row / 2 + 4:.1f}" text-anchor="end">'
                   f'<title>{escape(label)}</title>{escape(_clip(label, 30))}</text>')
        x = label_width
        end = label_width
        for index, value in enumerate(values):
            length = max(0.0, value) * scale
            color = colors[index % len(colors)]
            if stacked:
                out.append(f'<rect x="{x:.1f}" y="{y}" width="{length:.1f}" height="{bar}" fill="{color}">'
                           f'<title>{escape(series[index])}: {_fmt(value)}</title></rect>')
                x += length
                end = x
            else:
                bar_y = y + index * bar
                out.append(f'<rect x="{label_width}" y="{bar_y}" width="{length:.1f}" height="{bar - 1}" '
                           f'fill="{color}"><title>{escape(series[index])}: {_fmt(value)}</title></rect>')
                end = max(end, label_width + length)
        text = value_label(values) if value_label else _fmt(sum(values))
        out.append(f'<text x="{end + 5:.1f}" y="{y + per_row / 2 + 4:.1f}">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(edges: Sequence[float], series: Sequence[tuple[str, Sequence[float], str]],
              thresholds: Sequence[tuple[float, str]] = (), title: str = "", width: int = 300,
              height: int = 150) -> str:
    """A histogram of stacked bins (``series``: name, count per bin, colour) over ``edges`` (one more
    than the bins), with a dashed vertical line and a label for each (value, label) threshold."""
    left, right, top, bottom = 34, 8, 20, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    bins = len(edges) - 1
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0
    totals = [sum(s[1][i] for s in series) for i in range(bins)]
    peak = max(totals + [1e-12])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" role="img">',
           f'<text x="{left}" y="12" font-size="11" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>',
           f'<text x="{left - 3}" y="{top + 8}" text-anchor="end">{_fmt(peak)}</text>',
           f'<text x="{left - 3}" y="{top + plot_h}" text-anchor="end">0</text>']
    bin_w = plot_w / max(bins, 1)
    for i in range(bins):
        y = top + plot_h
        for name, counts, color in series:
            h = counts[i] / peak * plot_h
            if h <= 0:
                continue
            y -= h
            out.append(f'<rect x="{left + i * bin_w + 0.5:.1f}" y="{y:.1f}" width="{max(bin_w - 1, 0.5):.1f}" '
                       f'height="{h:.1f}" fill="{color}"><title>{escape(name)} [{edges[i]:.3g}, '
                       f'{edges[i + 1]:.3g}): {_fmt(counts[i])}</title></rect>')
    for value, anchor in ((low, "start"), ((low + high) / 2, "middle"), (high, "end")):  # ends inside the box
        x = left + (value - low) / span * plot_w
        out.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}">{value:.3g}</text>')
    for index, (value, label) in enumerate(thresholds):
        if not low <= value <= high:
            continue
        x = left + (value - low) / span * plot_w
        out.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 2}" x2="{x:.1f}" y2="{top + plot_h}" '
                   f'stroke="{THRESHOLD}" stroke-width="1.5" stroke-dasharray="4 2"/>')
        anchor = "end" if x > left + plot_w * 0.6 else "start"
        dx = -3 if anchor == "end" else 3
        out.append(f'<text x="{x + dx:.1f}" y="{top + 9 + index * 11}" fill="{THRESHOLD}" '
                   f'text-anchor="{anchor}">{escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
