"""Rule-based filtering: Gopher, C4 and FineWeb heuristics for prose, BigCode's for code; CJK-aware.

Contract
  in     the document columns, plus ``lang`` from the langid stage when it ran (without it, CJK
         documents are recognised by their share of Han and kana characters).
  kept   rows that pass every enabled rule; ``text`` has C4's bad lines removed.
  removed rows with ``reason``: ``empty_text``, ``c4_emptied`` (cleaning left nothing) or the name
         of the first rule that failed, e.g. ``gopher_too_few_words``, ``c4_curly_bracket``,
         ``fineweb_line_punct``, ``code_data_blob``; their ``text`` is the original.
  order  ``order`` in the config; by default c4 line cleaning -> c4_too_few_sentences ->
         gopher_repetition -> gopher_quality -> fineweb, so every rule judges the text that is kept
         (datatrove's FineWeb order is one config line away). Each family applies to the categories
         its ``categories`` lists: prose families to everything but code, the code family to code.
  CJK    zh/ja documents count each Han or kana character as a word, end sentences with 。！？…,
         use their own stop words and short-line length, and compare n-grams n * cjk_n_scale
         characters long.
  stats  dropped.<reason>.{docs, chars, by_lang.<lang>, by_category.<category>};
         examples.<reason> (up to 5 ids); over kept documents: cleaned.<line rule>.{lines, chars},
         cleaned.unwrapped.{docs, lines_joined} (hard wraps undone) and cleaned_share (histogram of
         the share of characters removed).

Thresholds: ``stages/rules/config.py`` (datatrove's published defaults unless documented there).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.stage import CATEGORIES, Stage, StageOutput, split
from pipeline.stats import Stats, histogram
from stages.rules import c4, code, fineweb, gopher
from stages.rules.base import Cleaned, LineCleaner, Rule, RuleGroup
from stages.rules.config import RulesConfig
from stages.rules.document import Doc, base_lang, cjk_share, guess_cjk_lang

__all__ = ["Rules", "RulesConfig"]

EMPTY = "empty_text"
SHARE_EDGES = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75]
Step = Rule | RuleGroup | LineCleaner


class Rules(Stage):
    """Runs the enabled rule families on every document and keeps or drops it with a reason."""

    name = "rules"
    Config = RulesConfig

    def __init__(self, config: RulesConfig):
        super().__init__(config)
        self.cjk_langs = frozenset(config.cjk.langs)
        steps = {
            "gopher_repetition": gopher.repetition_rules(config.gopher_repetition),
            "gopher_quality": gopher.quality_rules(config.gopher_quality),
            "c4": [c4.C4Cleaner(config.c4), *c4.sentence_rule(config.c4)] if config.c4.enabled else [],
            "fineweb": fineweb.rules(config.fineweb),
            "code": code.rules(config.code),
        }
        self.plans: dict[str, list[Step]] = {
            category: [
                step
                for family in config.order
                if category in getattr(config, family).categories
                for step in steps[family]
            ]
            for category in CATEGORIES
        }

    def process(self, batch: pa.Table) -> StageOutput:
        stats = Stats()
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist() if "lang" in batch.column_names else [None] * batch.num_rows
        reasons: list[str | None] = []
        edited = np.zeros(batch.num_rows, dtype=np.bool_)
        edited_texts: list[str] = []
        shares: list[float] = []
        drops = _Drops()
        for row, (doc_id, text, lang, category) in enumerate(
            zip(batch.column("id").to_pylist(), texts, langs, batch.column("category").to_pylist())
        ):
            doc = self._doc(text or "", lang)
            reason, final, edits = self._judge(doc, self.plans.get(category, []))
            reasons.append(reason)
            if reason is None:
                if final is not doc:  # cleaners make a new Doc only when they change the text
                    edited[row] = True
                    edited_texts.append(final.text)
                shares.append(_record_edits(stats, edits, len(doc.text)))
            else:
                drops.add(reason, doc_id, len(doc.text), doc.lang or "unknown", category)
        drops.record(stats)
        if shares:
            stats.merge({"cleaned_share": histogram(shares, SHARE_EDGES)})
        # Only edited texts are converted back to Arrow; the others keep their original buffers.
        text = batch.column("text")
        if edited_texts:
            replacements = pa.array(edited_texts, type=batch.schema.field("text").type)
            text = pc.replace_with_mask(text, pa.array(edited), replacements)
        return split(batch, reasons, stats, text=text)

    def _doc(self, text: str, lang: str | None) -> Doc:
        base = base_lang(lang)
        if base is not None:
            return Doc(text, base, base in self.cjk_langs)
        if cjk_share(text) >= self.config.cjk.min_char_share:
            return Doc(text, guess_cjk_lang(text), True)
        return Doc(text, self.config.default_lang, False)

    @staticmethod
    def _judge(doc: Doc, plan: list[Step]) -> tuple[str | None, Doc, list[Cleaned]]:
        """(drop reason or None, the document after cleaning, what each cleaner did)."""
        if not doc.text.strip():
            return EMPTY, doc, []
        edits: list[Cleaned] = []
        for step in plan:
            if isinstance(step, LineCleaner):
                cleaned = step.clean(doc)
                if cleaned.reason:
                    return cleaned.reason, doc, edits
                edits.append(cleaned)
                doc = cleaned.doc
                if not doc.text:
                    return f"{step.name}_emptied", doc, edits
            elif isinstance(step, RuleGroup):
                reason = step.first_failing(doc)
                if reason is not None:
                    return reason, doc, edits
            elif step.fails(doc):
                return step.name, doc, edits
        return None, doc, edits


class _Drops:
    """The dropped documents of a batch, counted into ``stats`` at its end: ``dropped.<reason>``'s
    docs, chars, by_lang and by_category, and ``examples.<reason>`` (the first ids), as counting each
    document as it is dropped would, at a fraction of the cost per document (a corpus of short
    documents drops hundreds of thousands)."""

    def __init__(self):
        self.reasons: list[str] = []
        self.ids: list[str] = []
        self.chars: list[int] = []
        self.langs: list[str] = []
        self.categories: list[str] = []

    def add(self, reason: str, doc_id: str, chars: int, lang: str, category: str) -> None:
        self.reasons.append(reason)
        self.ids.append(doc_id)
        self.chars.append(chars)
        self.langs.append(lang)
        self.categories.append(category)

    def record(self, stats: Stats) -> None:
        chars: dict[str, int] = {}
        for reason, size in zip(self.reasons, self.chars):
            chars[reason] = chars.get(reason, 0) + size
        docs = Counter(self.reasons)
        by_lang, by_category = Counter(zip(self.reasons, self.langs)), Counter(zip(self.reasons, self.categories))
        for reason, count in docs.items():
            stats.add("dropped", reason, "docs", count)
            stats.add("dropped", reason, "chars", chars[reason])
        for (reason, lang), count in by_lang.items():
            stats.add("dropped", reason, "by_lang", lang, count)
        for (reason, category), count in by_category.items():
            stats.add("dropped", reason, "by_category", category, count)
        stats.examples("examples", self.reasons, lambda rows: [self.ids[row] for row in rows])


def _record_edits(stats: Stats, edits: list[Cleaned], original_chars: int) -> float:
    """Count the lines and characters each line rule removed from a kept document; return the
    share of its characters that cleaning removed."""
    removed = 0
    for cleaned in edits:
        for line_rule, lines in cleaned.removed_lines.items():
            stats.add("cleaned", line_rule, "lines", lines)
            stats.add("cleaned", line_rule, "chars", cleaned.removed_chars[line_rule])
        removed += sum(cleaned.removed_chars.values())
        if cleaned.joined_lines:
            stats.add("cleaned", "unwrapped", "docs", 1)
            stats.add("cleaned", "unwrapped", "lines_joined", cleaned.joined_lines)
    return removed / original_chars if original_chars else 0.0
