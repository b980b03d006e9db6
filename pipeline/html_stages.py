"""The report's sections about the document stages: funnel, removal reasons, examples, histograms.

Each function takes the data of ``pipeline.report_data.collect`` and returns one ``<section>``.
"""
from __future__ import annotations

from pipeline import report_svg as svg
from pipeline.html_util import cell, esc, mb, missing, num, pct, section, table
from pipeline.stage import CATEGORIES

SCORE_FORMAT = "{:.3f}"


def _done(stages: list[dict]) -> list[dict]:
    return [stage for stage in stages if "totals" in stage]


def funnel(stages: list[dict]) -> str:
    """Documents and bytes in, kept and removed per stage; then per category and per language."""
    done = _done(stages)
    if not done:
        return section("funnel", "Funnel", missing("No stage has finished yet."))
    chart = svg.hbars([(f"{s['index']:02d} {s['stage']}", [s["totals"]["kept_rows"], s["totals"]["removed_rows"]])
                       for s in done], ["kept", "removed"], value_label=lambda v: f"{num(v[0])} kept of {num(sum(v))}")
    rows = []
    for s in stages:
        t = s.get("totals")
        state = cell(esc(s["state"]), "stale" if s["state"] == "stale" else "")
        if t is None:
            rows.append([f"{s['index']:02d} {esc(s['stage'])}", state] + ["-"] * 7)
            continue
        rows.append([f"{s['index']:02d} {esc(s['stage'])}", state, num(t["input_rows"]),
                     num(t["kept_rows"]), num(t["removed_rows"]), pct(t["kept_rows"], t["input_rows"]),
                     mb(t["input_bytes"]), mb(t["kept_bytes"]), mb(t["removed_bytes"])])
    body = chart + table(["stage", "state", "docs in", "kept", "removed", "% kept", "bytes in", "kept",
                          "removed"], rows, numeric_from=2)
    body += "<h3>Per category</h3>" + _breakdown(done, "by_category", _category_order(done))
    body += "<h3>Per language</h3>" + _breakdown(done, "by_lang", _lang_order(done))
    if any(st["state"] == "stale" for st in done):
        body = ('<p class="stale">Stages marked stale hold outputs of another config (the config or the code '
                'changed since they ran): rerun `python -m pipeline run CONFIG` to bring them up to date.</p>' + body)
    return section("funnel", "Funnel", body, "Each cell: documents kept by that stage, "
                   "<span class=\"rm\">−removed</span> there, and the same in bytes of text. A language "
                   "column appears from the stage that assigns languages on.")


def _category_order(done: list[dict]) -> list[str]:
    seen = {key for s in done for key in s["stats"].get("by_category", {})}
    return [c for c in CATEGORIES if c in seen] + sorted(seen - set(CATEGORIES))


def _lang_order(done: list[dict]) -> list[str]:
    last = done[-1]["stats"].get("by_lang", {})
    seen = {key for s in done for key in s["stats"].get("by_lang", {})}
    return sorted(seen, key=lambda lang: (-last.get(lang, {}).get("kept_docs", 0), lang))


def _breakdown(done: list[dict], heading: str, keys: list[str]) -> str:
    stages = [s for s in done if heading in s["stats"]]
    if not keys or not stages:
        return missing("No counts recorded.")
    rows = []
    for key in keys:
        first = stages[0]["stats"][heading].get(key, {})
        row = [esc(key), num(first.get("kept_docs", 0) + first.get("removed_docs", 0))]
        for s in stages:
            counts = s["stats"][heading].get(key, {})
            removed = counts.get("removed_docs", 0)
            if not removed and not counts.get("kept_docs"):
                row.append(cell("", "n"))  # none left: a blank reads faster than a column of zeros
                continue
            minus = f' <span class="rm">−{num(removed)}</span>' if removed else ""
            bytes_minus = f' <span class="rm">−{mb(counts.get("removed_bytes", 0))}</span>' if removed else ""
            row.append(f'{num(counts.get("kept_docs", 0))}{minus}'
                       f'<span class="sub">{mb(counts.get("kept_bytes", 0))}{bytes_minus}</span>')
        rows.append(row)
    headers = [heading.split("_", 1)[1].replace("lang", "language"), f"into {stages[0]['stage']}"]
    return table(headers + [f"{s['index']:02d} {s['stage']}" for s in stages], rows)


def reasons(stages: list[dict]) -> str:
    """Removed documents per reason, one bar chart per stage (bytes in the label)."""
    parts = []
    for s in _done(stages):
        by_reason = s["stats"].get("by_reason", {})
        if not by_reason:
            parts.append(f"<h3>{s['index']:02d} {esc(s['stage'])}</h3><p class=\"note\">nothing removed</p>")
            continue
        ordered = sorted(by_reason.items(), key=lambda kv: (-kv[1].get("removed_docs", 0), kv[0]))
        chart = svg.hbars([(reason, [c.get("removed_docs", 0)]) for reason, c in ordered], ["removed"],
                          colors=[svg.REMOVED], value_label=None)
        detail = ", ".join(f"{esc(r)} {mb(c.get('removed_bytes', 0))}" for r, c in ordered)
        parts.append(f"<h3>{s['index']:02d} {esc(s['stage'])}: {num(s['totals']['removed_rows'])} removed "
                     f"({pct(s['totals']['removed_rows'], s['totals']['input_rows'])})</h3>{chart}"
                     f'<p class="note">bytes: {detail}</p>')
    return section("reasons", "Why documents were removed", "".join(parts) or missing("No stage has finished yet."))


def _card(row: dict, side: str, stage: str) -> str:
    scores = [f"{esc(k)} <b>{SCORE_FORMAT.format(v)}</b>" for k, v in row.items()
              if (k == "lang_score" or k.startswith("quality_")) and isinstance(v, float)]
    meta = [f"<b>{esc(row.get('id'))}</b>", f"source {esc(row.get('source'))}", esc(row.get("category"))]
    if row.get("lang"):
        meta.append(f"lang {esc(row['lang'])}")
    if "_threshold" in row:
        meta.append(f"threshold {SCORE_FORMAT.format(row['_threshold'])} on {esc(row['_column'])}")
    if row.get("dup_kept_id"):
        meta.append(f"duplicate of {esc(row['dup_kept_id'])}")
    length = row.get("text_chars")
    more = f" · {num(length)} chars" if length is not None else " · no text"
    text = row.get("text")
    shown = esc(text) + ("…" if length and length > len(text or "") else "") if text is not None else "<i>(none)</i>"
    items = [meta[0]] + [f'<span class="m">{item}</span>' for item in meta[1:] + scores + [more.strip(" ·")]]
    return (f'<div class="doc {side}" data-stage="{esc(stage)}"><div class="meta">{" · ".join(items)}'
            f'</div><pre>{shown}</pre></div>')


def examples(stages: list[dict]) -> str:
    """A few removed documents per stage and reason, and kept ones just above a threshold."""
    parts = []
    for s in _done(stages):
        blocks = []
        for reason, rows in s.get("examples", {}).items():
            total = s["stats"].get("by_reason", {}).get(reason, {}).get("removed_docs")
            count = f"{num(total)} document{'' if total == 1 else 's'}"
            blocks.append(f'<h4>removed: {esc(reason)} <span class="pill">{count}</span></h4>'
                          f'<div class="cards">{"".join(_card(r, "removed", s["stage"]) for r in rows)}</div>')
        if s.get("near_threshold"):
            blocks.append('<h4>kept, nearest above their threshold</h4><div class="cards">'
                          + "".join(_card(r, "kept", s["stage"]) for r in s["near_threshold"]) + "</div>")
        if blocks:
            sampled = s.get("sampled", {})
            note = ", ".join(f"{side}: first rows of {v['files']} shard(s), {num(v['rows'])} of {num(v['total'])} rows"
                             for side, v in sampled.items())
            parts.append(f"<h3>{s['index']:02d} {esc(s['stage'])}</h3><p class=\"note\">from a sample ({note}); "
                         f"first 300 characters</p>" + "".join(blocks))
    return section("examples", "Removed documents, and kept ones near the threshold",
                   "".join(parts) or missing("No document was removed."))


def histograms(sets: list[dict]) -> str:
    """Per score column and language: kept and removed documents per bin, thresholds dashed red."""
    if not sets:
        return section("histograms", "Score distributions", missing("No score columns in the sampled rows."))
    parts = ['<p class="legend"><i style="background:%s"></i>kept<i style="background:%s"></i>removed'
             '<i style="background:%s;height:2px"></i>threshold (categories it applies to)</p>'
             % (svg.KEPT, svg.REMOVED, svg.THRESHOLD)]
    for h in sets:
        charts = []
        for entry in h["langs"]:
            marks = [(t["value"], f"{t['value']:.2f}" + ("" if t["all_categories"] else " " + ",".join(t["categories"])))
                     for t in entry["thresholds"]]
            charts.append(svg.histogram(h["edges"], [("kept", entry["kept"], svg.KEPT),
                                                     ("removed", entry["removed"], svg.REMOVED)],
                                        marks, title=f"{entry['lang']} ({num(entry['rows'])} sampled)"))
        exact = h["sampled"] == h["total"]
        scale = "all rows" if exact else (f"estimated from {num(h['sampled']['kept'])} of {num(h['total']['kept'])} "
                                          f"kept and {num(h['sampled']['removed'])} of {num(h['total']['removed'])} "
                                          "removed rows")
        more = f"; {h['more_langs']} smaller languages not shown" if h["more_langs"] else ""
        parts.append(f'<h3 id="hist-{esc(h["column"])}">{esc(h["column"])}</h3><p class="note">at stage '
                     f'{esc(h["stage"])}, documents per bin: {scale}{more}</p><div class="grid">{"".join(charts)}</div>')
    return section("histograms", "Score distributions", "".join(parts),
                   "Every float column named <code>lang_score</code> or <code>quality_*</code>, per language, "
                   "at the stage that adds it (kept and removed there together, so the cut is visible).")
