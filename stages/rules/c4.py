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
        self.ascii_policy = tuple(phrase for phrase in self.policy if phrase.isascii())

    def _policy_for(self, text: str) -> tuple[str, ...]:
        """The policy phrases ``text`` may hold: an ASCII text lowercases to ASCII, so only ASCII ones."""
        return self.ascii_policy if text.isascii() else self.policy

    def clean(self, doc: Doc) -> Cleaned:
        c = self.config
        terminal = self.cjk_terminal if doc.cjk else self.terminal
        lines, joined_lines = doc.lines, 0
        width = wrap_width(doc.nonblank_lines, c) if c.unwrap else None
        if width is not None:
            lines, joined_lines = unwrap(lines, width, terminal, doc.cjk)
        # The phrase rules come last and hit few documents, so they are first left out: a phrase can
        # only hit a line the other rules keep, and those lines (a third fewer characters than the
        # document) are lowercased and searched once, joined.
        cleaned, passed = self._clean_lines(doc, lines, terminal, _NO_PHRASES)
        phrases = self._phrases_in(doc, passed)
        if any(phrases):
            cleaned, _ = self._clean_lines(doc, lines, terminal, phrases)
        cleaned.joined_lines = joined_lines
        return cleaned

    def _phrases_in(self, doc: Doc, lines: list[str]) -> _Phrases:
        """The phrase rules that can hit one of ``lines``. A phrase must also be in the document
        itself, as it always had to be (a line joined by unwrapping may hold one the document does not)."""
        c = self.config
        text = "\n".join(lines)
        lowered = text.lower()
        return _Phrases(
            javascript=c.filter_javascript and "javascript" in lowered and "javascript" in doc.lowered,
            lorem=c.filter_lorem_ipsum and "lorem ipsum" in lowered and "lorem ipsum" in doc.lowered,
            curly=c.filter_curly_bracket and "{" in text,  # no cleaning step adds a brace
            policy=tuple(
                phrase for phrase in self._policy_for(text) if phrase in lowered and phrase in doc.lowered
            ),
        )

    def _clean_lines(
        self, doc: Doc, lines: list[str], terminal: tuple[str, ...], phrases: _Phrases
    ) -> tuple[Cleaned, list[str]]:
        """Run the line rules on ``lines``: what the document becomes, and the lines that passed all
        but the phrase rules (as they were before their citation marks were removed)."""
        c = self.config
        cjk = doc.cjk
        any_phrase = any(phrases)
        cleaned = Cleaned(doc)
        removed_lines, removed_chars = cleaned.removed_lines, cleaned.removed_chars
        kept: list[str] = []
        passed: list[str] = []
        paragraph_break = False
        conversion = c.resolve_wiki_conversion and "-{" in doc.text
        citations = self.citations
        # In CJK documents every word is one character, never too long.
        max_word = None if cjk else c.max_word_length
        min_words = c.min_words_per_line
        check_end = c.filter_no_terminal_punct
        # The line rules in C4's order, inlined: this loop runs for every line of the corpus.
        for line in map(str.strip, lines):
            if conversion and "-{" in line:
                line = _WIKI_CONVERSION.sub(_first_variant, line)
            if not line:
                paragraph_break = bool(kept)
                continue
            unmarked = citations.sub("", line) if citations is not None and "[" in line else line
            if max_word is not None and len(line) > max_word and max(map(len, line.split())) > max_word:
                hit = "too_long_word"
            elif check_end and (not unmarked.endswith(terminal) or unmarked.endswith(_ELLIPSIS)):
                hit = "no_terminal_punct"
            elif min_words is not None and count_words(line, cjk, min_words) < min_words:
                hit = "too_few_words"
            elif any_phrase:
                hit = _phrase_hit(line, phrases)
                if hit in _DROPS_DOCUMENT:
                    cleaned.reason = f"c4_{hit}"
                    return cleaned, passed
            else:
                hit = None
            if hit is not None:
                removed_lines[hit] = removed_lines.get(hit, 0) + 1
                removed_chars[hit] = removed_chars.get(hit, 0) + len(line)
                continue
            passed.append(line)
            if paragraph_break:
                kept.append("")
                paragraph_break = False
            kept.append(unmarked)
        text = "\n".join(kept)
        if text != doc.text:
            # Kept lines hold no line breaks (they come from splitlines), so they are its lines.
            cleaned.doc = Doc(text, doc.lang, doc.cjk, lines=kept)
        return cleaned, passed


class _Phrases(NamedTuple):
    """Which phrase rules can hit in the current document."""

    javascript: bool
    lorem: bool
    curly: bool
    policy: tuple[str, ...]


_NO_PHRASES = _Phrases(javascript=False, lorem=False, curly=False, policy=())


def _phrase_hit(line: str, phrases: _Phrases) -> str | None:
    """The first of C4's phrase rules that hits ``line``, or None."""
    lowered = line.lower() if phrases.javascript or phrases.lorem or phrases.policy else line
    if phrases.lorem and "lorem ipsum" in lowered:
        return "lorem_ipsum"
    if phrases.javascript and "javascript" in lowered:
        return "javascript"
    if phrases.curly and "{" in line:
        return "curly_bracket"
    if phrases.policy and any(phrase in lowered for phrase in phrases.policy):
        return "policy"
    return None


def wrap_width(lines: list[str], config: C4Config) -> int | None:
    """The column a document is hard-wrapped at, or None: the 90th percentile of its line lengths,
    when enough lines end near it and almost none run past it."""
    if len(lines) < _MIN_WRAPPED_LINES:
        return None
    lengths = sorted(map(len, map(str.rstrip, lines)))
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
    paragraphs: list[list[str]] = []  # joined once at the end: appending to a string copies it
    joined = 0
    continues = False
    for stripped in map(str.strip, lines):
        if continues and stripped:
            paragraphs[-1].append(stripped)
            joined += 1
        else:
            paragraphs.append([stripped])
        continues = bool(stripped) and len(stripped) >= full and not stripped.endswith(terminal)
    return [joiner.join(parts) for parts in paragraphs], joined


def _first_variant(match: re.Match) -> str:
    return "" if match.group(1) == "H" else match.group(2)


def sentence_rule(config: C4Config) -> list[Rule]:
    """``c4_too_few_sentences``, judged on the cleaned text: every kept line holds at least one."""
    if not config.enabled or config.min_num_sentences is None:
        return []
    minimum = config.min_num_sentences

    def fails(doc: Doc) -> bool:
        # Every line counts as at least one sentence, so enough lines settle it without a regex pass.
        return len(doc.nonblank_lines) < minimum and count_sentences(doc) < minimum

    return [Rule("c4_too_few_sentences", fails)]


def count_sentences(doc: Doc) -> int:
    ends = _CJK_SENTENCE_END if doc.cjk else _LATIN_SENTENCE_END
    return sum(max(1, len(ends.findall(line))) for line in doc.nonblank_lines)
