"""Small HTML builders for the report: escaping, number formats, tables, sections.

The one rule: every string that did not come from this code goes through ``esc`` (document text,
ids, sources, reasons, language codes, config values, paths), so a document holding ``<script>``
shows as text. Builders take cells that are already HTML; ``esc`` them on the way in.
"""
from __future__ import annotations

from html import escape
from typing import Any, Iterable, Sequence


def esc(value: Any) -> str:
    """HTML-escape anything (quotes too, so it is safe in attribute values)."""
    return escape("" if value is None else str(value), quote=True)


def num(value: Any) -> str:
    """An integer with thousands separators; '-' for None."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if isinstance(value, float) else f"{value:,}"


def mb(value: float | None) -> str:
    """Bytes as MB, or kB below 0.1 MB and B below 1 kB (the sample run is that small)."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:,.0f} B"
    return f"{value / 1e6:,.2f} MB" if value >= 100_000 else f"{value / 1e3:,.1f} kB"


def pct(part: float | None, whole: float | None) -> str:
    return "-" if not whole or part is None else f"{part / whole:.1%}"


def cell(html: str, cls: str = "") -> tuple[str, str]:
    """A table cell with a CSS class (``n``: a number, right-aligned; ``short``: a shortfall)."""
    return (html, cls)


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]], cls: str = "", numeric_from: int = 1,
          text_columns: Sequence[int] = ()) -> str:
    """A table; cells are HTML strings or ``cell(...)`` pairs. Columns from ``numeric_from`` on are
    right-aligned numbers, except ``text_columns`` and cells that say otherwise. No ``headers``: no
    header row."""
    def numeric(i: int) -> bool:
        return i >= numeric_from and i not in text_columns

    head = "" if headers is None else "<thead><tr>" + "".join(
        f'<th class="{"n" if numeric(i) else ""}">{esc(h)}</th>' for i, h in enumerate(headers)) + "</tr></thead>"
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            html, klass = value if isinstance(value, tuple) else (value, "n" if numeric(i) else "")
            cells.append(f'<td class="{klass}">{html}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="{cls}">{head}<tbody>{"".join(body)}</tbody></table>'


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    """A top-level section; ``anchor`` is its id (the navigation and the tests use it)."""
    lead = f'<p class="intro">{intro}</p>' if intro else ""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{lead}{body}</section>'


def missing(what: str) -> str:
    """The body of a section whose source files are not there (yet)."""
    return f'<p class="missing">{what}</p>'


CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;
  margin:0;color:#1d2330;background:#f4f5f7}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
header .sub{color:#b8c0cc;font-size:12px;margin-top:4px;word-break:break-all}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid #d9dde3;padding:6px 24px;
  display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px}
nav a{color:#2a5db0;text-decoration:none}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border:1px solid #d9dde3;border-radius:6px;padding:12px 18px;margin:14px 0}
h2{font-size:18px;margin:4px 0 8px}
h3{font-size:15px;margin:16px 0 6px}
h4{font-size:13px;margin:12px 0 4px;color:#394150}
p.intro,p.note{color:#505a6b;font-size:12.5px;margin:4px 0 10px}
p.missing{color:#8a5a00;background:#fff7e0;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:12.5px}
th,td{border-bottom:1px solid #e5e8ec;padding:3px 9px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td .rm{color:#b5531c;font-size:11.5px}
td .sub{color:#6b7483;font-size:11px;display:block}
tr.total td{font-weight:600;border-top:2px solid #c9ced6}
.short,td.short{color:#c0392b;font-weight:600}
.stale{color:#c0392b}
.grid{display:flex;flex-wrap:wrap;gap:8px 14px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:8px;margin-bottom:8px}
.doc{border:1px solid #e1e4e8;border-radius:5px;padding:6px 8px;background:#fbfbfc;min-width:0}
.doc .meta{font-size:11.5px;color:#505a6b;margin-bottom:4px;overflow-wrap:anywhere}
.doc .meta .m{white-space:nowrap}
.doc .meta b{color:#1d2330}
.doc pre{margin:0;white-space:pre-wrap;word-break:break-word;font:12px/1.4 ui-monospace,Menlo,Consolas,
  "Noto Sans Mono CJK SC",monospace;max-height:9.5em;overflow:auto}
.doc.kept{border-left:4px solid #4c72b0}.doc.removed{border-left:4px solid #dd8452}
.pill{display:inline-block;padding:0 6px;border-radius:9px;background:#eef1f5;font-size:11px;margin-right:3px}
.legend{font-size:12px;color:#505a6b}
.legend i{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;vertical-align:-1px}
svg.chart,svg.hist{max-width:100%;height:auto;background:#fff}
.facts{display:flex;flex-wrap:wrap;gap:10px}
.fact{border:1px solid #e1e4e8;border-radius:6px;padding:8px 14px;min-width:150px}
.fact .v{font-size:20px;font-weight:600}.fact .k{color:#505a6b;font-size:12px}
code{font-size:12px;background:#f0f2f5;padding:0 3px;border-radius:3px;word-break:break-all}
"""
