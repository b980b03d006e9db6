"""FineWeb's own quality rules (Penedo et al. 2024), as datatrove's FineWebQualityFilter does them,
run after C4 cleaning. One deliberate difference: the list ratio counts line breaks between non-blank
lines, not raw newlines, so the blank lines C4 cleaning keeps between paragraphs do not count."""

from __future__ import annotations

from itertools import repeat
from operator import le

from stages.rules.base import Rule, ratio
from stages.rules.config import FineWebConfig
from stages.rules.document import Doc


def rules(config: FineWebConfig) -> list[Rule]:
    """The enabled FineWeb rules, in datatrove's order."""
    c = config
    if not c.enabled:
        return []
    stop_chars = tuple(c.stop_chars)
    found = []
    if c.line_punct_thr is not None:
        found.append(Rule("fineweb_line_punct", lambda d: _too_few_punctuated(d, stop_chars, c)))
    if c.short_line_thr is not None:
        found.append(Rule("fineweb_short_lines", lambda d: _short_line_share(d, c) > c.short_line_thr))
    if c.char_duplicates_ratio is not None:
        found.append(
            Rule(
                "fineweb_dup_line_chars",
                lambda d: ratio(d.line_dups[1], len(d.text) - d.text.count("\n")) > c.char_duplicates_ratio,
            )
        )
    if c.new_line_ratio is not None:
        found.append(
            Rule(
                "fineweb_list_ratio",
                lambda d: ratio(max(len(d.nonblank_lines) - 1, 0), d.n_words) > c.new_line_ratio,
            )
        )
    return found


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
