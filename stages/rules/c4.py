"""C4 line cleaning (Raffel et al. 2020, section 2.2), as datatrove's C4QualityFilter does it.

Each line is stripped, loses its citation marks (and Chinese Wikipedia's -{...}- conversion markup)
and runs through the line rules in C4's order; the first that hits removes the line
(``too_long_word``, ``no_terminal_punct``, ``too_few_words``, ``javascript``, ``policy``) or drops the
whole document (``c4_lorem_ipsum``, ``c4_curly_bracket``).
Kept lines are rejoined; unlike datatrove, a blank line between two kept lines survives as one, so
paragraphs stay paragraphs. Also unlike datatrove, hard-wrapped text (Project Gutenberg, e-mail) is
first unwrapped into one line per paragraph: C4 assumed a paragraph per line and would keep only the
lines that happen to end a sentence. Then ``c4_too_few_sentences`` judges what is left.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import NamedTuple

from stages.rules.base import Cleaned, LineCleaner, Rule
from stages.rules.config import C4Config
from stages.rules.document import Doc, count_words

_LATIN_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_CJK_SENTENCE_END = re.compile(r"[。！？!?]+")
_ELLIPSIS = ("...", "…")
_DROPS_DOCUMENT = ("lorem_ipsum", "curly_bracket")
_MIN_WRAPPED_LINES = 5
# -{甲}-, -{zh-cn:甲;zh-tw:乙}-, -{A|zh-cn:甲;...}- show 甲; -{H|...}- only defines a rule.
_WIKI_CONVERSION = re.compile(r"-\{(?:([A-Za-z])\|)?(?:[a-z]{2,3}(?:-[a-z]+)?:)?([^;{}]*)[^{}]*\}-")


class C4Cleaner(LineCleaner):
    """Removes C4's bad lines from a document."""

    name = "c4"

    def __init__(self, config: C4Config):
        self.config = config
        self.citations = re.compile(config.citation_regex) if config.remove_citations else None
        self.terminal = tuple(config.terminal_punctuation)
        self.cjk_terminal = tuple(config.cjk_terminal_punctuation)
        self.policy = tuple(config.policy_substrings) if config.filter_policy else ()

    def clean(self, doc: Doc) -> Cleaned:
        lowered = doc.lowered
        # Phrases the document does not contain at all need not be looked for line by line.
        active = _Active(
            javascript=self.config.filter_javascript and "javascript" in lowered,
            lorem=self.config.filter_lorem_ipsum and "lorem ipsum" in lowered,
            curly=self.config.filter_curly_bracket and "{" in doc.text,
            policy=tuple(phrase for phrase in self.policy if phrase in lowered),
            terminal=self.cjk_terminal if doc.cjk else self.terminal,
        )
        cleaned = Cleaned(doc)
        kept: list[str] = []
        paragraph_break = False
        conversion = self.config.resolve_wiki_conversion and "-{" in doc.text
        lines = doc.lines
        width = wrap_width(doc.nonblank_lines, self.config) if self.config.unwrap else None
        if width is not None:
            lines, cleaned.joined_lines = unwrap(lines, width, active.terminal, doc.cjk)
        for raw in lines:
            line = raw.strip()
            if conversion and "-{" in line:
                line = _WIKI_CONVERSION.sub(_first_variant, line)
            if not line:
                paragraph_break = bool(kept)
                continue
            hit = self._line_hit(line, doc.cjk, active)
            if hit in _DROPS_DOCUMENT:
                cleaned.reason = f"c4_{hit}"
                return cleaned
            if hit:
                cleaned.count(hit, line)
                continue
            if paragraph_break:
                kept.append("")
                paragraph_break = False
            kept.append(self._strip_citations(line))
        text = "\n".join(kept)
        if text != doc.text:
            cleaned.doc = Doc(text, doc.lang, doc.cjk)
        return cleaned

    def _strip_citations(self, line: str) -> str:
        return self.citations.sub("", line) if self.citations is not None and "[" in line else line

    def _line_hit(self, line: str, cjk: bool, active: "_Active") -> str | None:
        """The first C4 line rule that hits ``line`` (already stripped), or None to keep it."""
        c = self.config
        # In CJK documents every word is one character, never too long.
        if (
            c.max_word_length is not None
            and not cjk
            and len(line) > c.max_word_length
            and any(len(word) > c.max_word_length for word in line.split())
        ):
            return "too_long_word"
        if c.filter_no_terminal_punct:
            unmarked = self._strip_citations(line)
            if not unmarked.endswith(active.terminal) or unmarked.endswith(_ELLIPSIS):
                return "no_terminal_punct"
        if (
            c.min_words_per_line is not None
            and count_words(line, cjk, c.min_words_per_line) < c.min_words_per_line
        ):
            return "too_few_words"
        lowered = line.lower() if active.javascript or active.lorem or active.policy else line
        if active.lorem and "lorem ipsum" in lowered:
            return "lorem_ipsum"
        if active.javascript and "javascript" in lowered:
            return "javascript"
        if active.curly and "{" in line:
            return "curly_bracket"
        if active.policy and any(phrase in lowered for phrase in active.policy):
            return "policy"
        return None


class _Active(NamedTuple):
    """Which line rules can hit in the current document, and its terminal punctuation."""

    javascript: bool
    lorem: bool
    curly: bool
    policy: tuple[str, ...]
    terminal: tuple[str, ...]


def wrap_width(lines: list[str], config: C4Config) -> int | None:
    """The column a document is hard-wrapped at, or None: the 90th percentile of its line lengths,
    when enough lines end near it and almost none run past it."""
    if len(lines) < _MIN_WRAPPED_LINES:
        return None
    lengths = sorted(len(line.rstrip()) for line in lines)
    width = lengths[(len(lengths) - 1) * 9 // 10]
    low, high = config.wrap_widths
    if not low <= width <= high:
        return None
    near_width = bisect_right(lengths, width) - bisect_left(lengths, 0.75 * width)
    beyond = len(lengths) - bisect_right(lengths, 1.2 * width)
    if near_width < config.min_wrapped_share * len(lengths) or beyond > 0.05 * len(lengths):
        return None
    return width


def unwrap(lines: list[str], width: int, terminal: tuple[str, ...], cjk: bool) -> tuple[list[str], int]:
    """Join each line to the previous one when that one runs to the wrap width without ending a
    sentence; short lines (headings, a paragraph's last line) and blank lines end a paragraph."""
    full = 0.6 * width
    joiner = "" if cjk else " "
    out: list[str] = []
    joined = 0
    continues = False
    for line in lines:
        stripped = line.strip()
        if continues and stripped:
            out[-1] = out[-1] + joiner + stripped
            joined += 1
        else:
            out.append(stripped)
        continues = bool(stripped) and len(stripped) >= full and not stripped.endswith(terminal)
    return out, joined


def _first_variant(match: re.Match) -> str:
    return "" if match.group(1) == "H" else match.group(2)


def sentence_rule(config: C4Config) -> list[Rule]:
    """``c4_too_few_sentences``, judged on the cleaned text: every kept line holds at least one."""
    if not config.enabled or config.min_num_sentences is None:
        return []
    return [Rule("c4_too_few_sentences", lambda d: count_sentences(d) < config.min_num_sentences)]


def count_sentences(doc: Doc) -> int:
    ends = _CJK_SENTENCE_END if doc.cjk else _LATIN_SENTENCE_END
    return sum(max(1, len(ends.findall(line))) for line in doc.nonblank_lines)
