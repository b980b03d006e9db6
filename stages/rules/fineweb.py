"""FineWeb's own quality rules (Penedo et al. 2024), as datatrove's FineWebQualityFilter does them,
run after C4 cleaning. One deliberate difference: the list ratio counts line breaks between non-blank
lines, not raw newlines, so the blank lines C4 cleaning keeps between paragraphs do not count."""

from __future__ import annotations

from itertools import repeat
from operator import le

from stages.rules.base import RuleGroup, ratio
from stages.rules.config import FineWebConfig
from stages.rules.document import Doc


def rules(config: FineWebConfig) -> list[RuleGroup]:
    """The enabled FineWeb rules, in datatrove's order, as one check (see ``gopher.quality_rules``)."""
    c = config
    if not c.enabled:
        return []
    stop_chars = tuple(c.stop_chars)
    punct, short, duplicates, new_lines = c.line_punct_thr, c.short_line_thr, c.char_duplicates_ratio, c.new_line_ratio

    def first_failing(d: Doc) -> str | None:
        if punct is not None and _too_few_punctuated(d, stop_chars, c):
            return "fineweb_line_punct"
        if short is not None and _short_line_share(d, c) > short:
            return "fineweb_short_lines"
        if duplicates is not None and ratio(d.line_dups[1], len(d.text) - d.text.count("\n")) > duplicates:
            return "fineweb_dup_line_chars"
        if new_lines is not None and ratio(max(len(d.nonblank_lines) - 1, 0), d.n_words) > new_lines:
            return "fineweb_list_ratio"
        return None

    return [RuleGroup(first_failing)]


def _too_few_punctuated(doc: Doc, stop_chars: tuple[str, ...], config: FineWebConfig) -> bool:
    lines = doc.nonblank_lines
    share = ratio(sum(map(str.endswith, lines, repeat(stop_chars))), len(lines))
    if share == 0 and config.line_punct_exclude_zero:
        return False
    return share < config.line_punct_thr


def _short_line_share(doc: Doc, config: FineWebConfig) -> float:
    limit = config.cjk_short_line_length if doc.cjk else config.short_line_length
    lines = doc.nonblank_lines
    return ratio(sum(map(le, map(len, lines), repeat(limit))), len(lines))
