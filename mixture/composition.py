"""The composition table (the report's Table 1) and the phase report, as data, Markdown and CSV.

Counts are exact: sums of the per-shard counts of ``mixture.count``, which tokenized every document.
Tokens here are the tokenizer's output for the text, without separators; phase tables count packed
tokens (each document's tokens plus its end-of-document separator), which is what training sees.
"""
from __future__ import annotations

import csv
import io

from pipeline.stage import CATEGORIES

LABELS = {"web": "Web", "encyclopedia": "Encyclopedia", "books": "Books", "papers": "Academic papers",
          "code": "Code", "others": "Others"}
COMPOSITION_FIELDS = ["table", "key", "tokens", "share", "documents", "bytes", "bytes_per_token"]
PHASE_FIELDS = ["phase", "category", "target_weight", "weight", "target_tokens", "tokens", "documents",
                "partial_documents", "epochs", "cumulative_epochs", "max_epochs", "ran_out", "shortfall_tokens",
                "off_target"]


def composition_table(stats: dict) -> dict:
    """Rows by category (all six, in the report's order), by language and by both, with shares of
    tokens; ``stats`` holds merged ``by_category``/``by_lang``/``by_group`` counters."""
    total = {key: sum(row[key] for row in stats.get("by_category", {}).values())
             for key in ("tokens", "documents", "bytes")}

    def row(counts: dict, **keys) -> dict:
        tokens = counts.get("tokens", 0)
        return {**keys, "tokens": tokens, "share": tokens / total["tokens"] if total["tokens"] else 0.0,
                "documents": counts.get("documents", 0), "bytes": counts.get("bytes", 0),
                "bytes_per_token": round(counts["bytes"] / tokens, 3) if tokens else None}

    by_category = stats.get("by_category", {})
    extra = sorted(set(by_category) - set(CATEGORIES))  # a category the schema does not know is still shown
    by_lang = sorted(stats.get("by_lang", {}).items(), key=lambda item: (-item[1]["tokens"], item[0]))
    return {
        "total": total,
        "by_category": [row(by_category.get(c, {}), category=c, label=LABELS.get(c, c))
                        for c in [*CATEGORIES, *extra]],
        "by_lang": [row(counts, lang=lang) for lang, counts in by_lang],
        "by_category_lang": [row(counts, category=group.split("/", 1)[0], lang=group.split("/", 1)[1])
                             for group, counts in sorted(stats.get("by_group", {}).items())],
    }


def composition_markdown(table: dict, tokenizer: str) -> str:
    """Table 1 of the report, for this corpus: tokens, share, documents and bytes per category; then
    the same per language."""
    lines = [f"## Corpus composition (tokens counted with {tokenizer})", "",
             "| Category | Tokens | Share | Documents | Bytes | Bytes/token |", "|---|---:|---:|---:|---:|---:|"]
    lines += [_composition_line(row["label"], row) for row in table["by_category"]]
    lines.append(_composition_line("**Total**", {**table["total"], "share": 1.0 if table["total"]["tokens"] else 0.0,
                                                  "bytes_per_token": _ratio(table["total"])}))
    lines += ["", "| Language | Tokens | Share | Documents | Bytes | Bytes/token |", "|---|---:|---:|---:|---:|---:|"]
    lines += [_composition_line(row["lang"], row) for row in table["by_lang"]]
    return "\n".join(lines) + "\n"


def _ratio(counts: dict) -> float | None:
    return round(counts["bytes"] / counts["tokens"], 3) if counts["tokens"] else None


def _composition_line(label: str, row: dict) -> str:
    ratio = "-" if row["bytes_per_token"] is None else f"{row['bytes_per_token']:.2f}"
    return (f"| {label} | {row['tokens']:,} | {row['share']:.1%} | {row['documents']:,} | "
            f"{row['bytes']:,} | {ratio} |")


def composition_csv(table: dict) -> str:
    """One CSV row per category and per language (column ``table`` says which)."""
    rows = [{"table": "category", "key": row["category"], **row} for row in table["by_category"]]
    rows += [{"table": "language", "key": row["lang"], **row} for row in table["by_lang"]]
    return _csv(COMPOSITION_FIELDS, rows)


def phases_markdown(phases: list[dict]) -> str:
    """Per phase: target vs realised weight and tokens, documents and epochs per category, and target
    vs realised tokens per language of the categories the phase splits by language."""
    lines = []
    for phase in phases:
        lines += [f"## Phase {phase['name']}: {phase['tokens']:,} tokens "
                  f"(budget {phase['budget']:,}: {phase['budget_from']}) in {phase['sequences']:,} sequences", "",
                  "| Category | Target weight | Weight | Target tokens | Tokens | Documents | Epochs | "
                  "Cumulative epochs | Note |", "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for category, row in phase["categories"].items():
            lines.append(f"| {LABELS.get(category, category)} | {row['target_weight']:.1%} | {row['weight']:.1%} | "
                         f"{row['target_tokens']:,} | {row['tokens']:,} | {row['documents']:,} | "
                         f"{row['epochs']:.3f} | {row['cumulative_epochs']:.3f} | {_note(row)} |")
        split = [group for group in phase["groups"] if group["lang"] is not None]
        if split:  # categories drawn per language: their languages' targets too
            lines += ["", "| Category | Language | Target tokens | Tokens |", "|---|---|---:|---:|"]
            lines += [f"| {LABELS.get(g['category'], g['category'])} | {g['lang']} | {g['target_tokens']:,} | "
                      f"{g['tokens']:,} |" for g in split]
        lines.append("")
    return "\n".join(lines)


def _note(row: dict) -> str:
    notes = []
    if row["ran_out"]:
        short = f"{row['shortfall_tokens']:,} tokens short" if row["shortfall_tokens"] else "nothing left"
        notes.append(f"**ran out**: {short} (max_epochs {row['max_epochs']:g})")
    elif row.get("off_target"):
        gap = row["weight"] - row["target_weight"]
        notes.append(f"**off target** by {gap:+.1%}: {row['off_target_because']}")
    if row["reuses_documents"]:
        notes.append("repeats documents (a further epoch)")
    if row.get("partial_documents"):
        notes.append(f"{row['partial_documents']:,} of its documents in part (cut where its sampling bins "
                     f"begin or end)")
    return "; ".join(notes)


def phases_csv(phases: list[dict]) -> str:
    """One CSV row per phase and category."""
    return _csv(PHASE_FIELDS, [{"phase": phase["name"], "category": category, **row}
                               for phase in phases for category, row in phase["categories"].items()])


def _csv(fields: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
