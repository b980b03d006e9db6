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
from typing import NamedTuple

import numpy as np

from stages.rules import line_kernels
from stages.rules.base import Cleaned, LineCleaner, Rule
from stages.rules.config import C4Config
from stages.rules.document import Doc, char_classes, code_points, lowercase_table

_LATIN_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_CJK_SENTENCE_END = re.compile(r"[。！？!?]+")
_DROPS_DOCUMENT = ("lorem_ipsum", "curly_bracket")
# -{甲}-, -{zh-cn:甲;zh-tw:乙}-, -{A|zh-cn:甲;...}- show 甲; -{H|...}- only defines a rule.
_WIKI_CONVERSION = re.compile(r"-\{(?:([A-Za-z])\|)?(?:[a-z]{2,3}(?:-[a-z]+)?:)?([^;{}]*)[^{}]*\}-")
# The line rules by their code in ``line_kernels.clean_lines``.
LINE_RULES = (None, "too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")
_CODES = {rule: code for code, rule in enumerate(LINE_RULES) if rule}
_NOT_FORCED = np.zeros(0, dtype=np.int8)
# What lets a pattern's match depend on the text around it (anchors, word boundaries, lookarounds,
# inline flags): a pattern without any matches a line's text wherever the line lies in a document.
_CONTEXT_TOKENS = ("^", "$", "\\b", "\\B", "\\A", "\\Z", "(?")


class C4Cleaner(LineCleaner):
    """Removes C4's bad lines from a document."""

    name = "c4"

    def __init__(self, config: C4Config):
        c = self.config = config
        self.citations = re.compile(c.citation_regex) if c.remove_citations else None
        self.search_text_for_marks = self.citations is not None and not any(
            token in c.citation_regex for token in _CONTEXT_TOKENS)
        self.terminal_points = code_points(c.terminal_punctuation)
        self.cjk_terminal_points = code_points(c.cjk_terminal_punctuation)
        self.policy = tuple(c.policy_substrings) if c.filter_policy else ()
        # What the phrase rules look for, the three fixed ones first (None: switched off).
        self.phrases = (
            "javascript" if c.filter_javascript else None,
            "lorem ipsum" if c.filter_lorem_ipsum else None,
            "{" if c.filter_curly_bracket else None,
            *self.policy,
        )
        # The kernel looks for a phrase in the kept lines by lowercasing each character on its own;
        # the others are taken to be there: the empty phrase, and those holding what only "İ" or a
        # capital sigma lowercase to (U+0307 after "i", a final sigma).
        self.unsearched = np.array([p is not None and (not p or "\u0307" in p or "ς" in p) for p in self.phrases])
        self.any_unsearched = bool(self.unsearched.any())
        searched = [k for k, (p, skip) in enumerate(zip(self.phrases, self.unsearched)) if p is not None and not skip]
        searched.sort(key=lambda k: ord(self.phrases[k][0]) & 63)  # the kernel's lookup order
        self.searched = np.array(searched, dtype=np.int64)
        points = [code_points(self.phrases[k]) for k in searched]
        self.phrase_points = np.concatenate([np.zeros(0, dtype=np.uint32), *points])
        self.phrase_offsets = np.cumsum([0, *map(len, points)], dtype=np.int64)
        self.phrases_by_first = np.searchsorted([ord(self.phrases[k][0]) & 63 for k in searched], np.arange(65))

    def clean(self, doc: Doc) -> Cleaned:
        c = self.config
        terminal = self.cjk_terminal_points if doc.cjk else self.terminal_points
        unwrapped, joined_lines = None, 0
        if c.unwrap:
            low, high = c.wrap_widths
            width, text, joined_lines = line_kernels.unwrap(
                doc.points, char_classes(), low, high, c.min_wrapped_share, terminal, doc.cjk
            )
            unwrapped = text if width >= 0 else None
        points, marked, stripped = self._line_texts(doc, unwrapped)
        strip = stripped is None
        hits, removed, kept, found = self._clean_lines(doc, points, marked, strip, terminal, _NOT_FORCED)
        # The phrase rules come last and hit few documents, so the kernel leaves them out and only
        # says which phrases a kept line holds; a phrase must also be in the document itself, as it
        # always had to be (a line joined by unwrapping may hold one the document does not).
        phrases = self._phrases_in(doc, found)
        if any(phrases):
            if strip:
                stripped = [line.strip() for line in self._lines(doc, unwrapped)]
            forced = np.zeros(hits.size, dtype=np.int8)
            for i in np.flatnonzero(hits == line_kernels.KEPT).tolist():
                hit = _phrase_hit(stripped[i], phrases)
                if hit in _DROPS_DOCUMENT:
                    return Cleaned(doc, reason=f"c4_{hit}")
                if hit is not None:
                    forced[i] = _CODES[hit]
            if forced.any():
                hits, removed, kept, _ = self._clean_lines(doc, points, marked, strip, terminal, forced)
        cleaned = Cleaned(doc, joined_lines=joined_lines)
        lines_removed, chars_removed, first = removed.tolist()
        for code in sorted(filter(lines_removed.__getitem__, range(1, len(LINE_RULES))), key=first.__getitem__):
            cleaned.removed_lines[LINE_RULES[code]] = lines_removed[code]
            cleaned.removed_chars[LINE_RULES[code]] = chars_removed[code]
        text = kept.tobytes().decode("utf-32-le", "surrogatepass")
        if text != doc.text:
            # Kept lines hold no line breaks (they come from splitlines), so they are its lines.
            kept.setflags(write=False)  # as code_points' are: one type for find_words to compile for
            cleaned.doc = Doc(text, doc.lang, doc.cjk, lines=text.split("\n"), points=kept)
        return cleaned

    @staticmethod
    def _lines(doc: Doc, unwrapped: np.ndarray | None) -> list[str]:
        """The document's lines, or its unwrapped paragraphs (``unwrapped``: their code points)."""
        return doc.lines if unwrapped is None else unwrapped.tobytes().decode("utf-32-le", "surrogatepass").split("\n")

    def _line_texts(self, doc: Doc, unwrapped: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """The lines the rules read and the lines kept lines keep (their citation marks removed), each
        as the code points of the lines joined by newlines; and the first as strings if they are not
        the text's stripped lines or unwrapped paragraphs (None), which the kernel then strips itself."""
        conversion = self.config.resolve_wiki_conversion and "-{" in doc.text
        marks = self.citations is not None and "[" in doc.text
        if marks and not conversion and unwrapped is None and self.search_text_for_marks:
            # The lines are the text's own, stripped: a mark in one is a match in the text. Most
            # texts with a "[" have none, and then need no line-by-line pass.
            marks = self.citations.search(doc.text) is not None
        if not conversion and not marks:
            points = doc.points if unwrapped is None else unwrapped
            return points, points, None
        stripped = [line.strip() for line in self._lines(doc, unwrapped)]
        if conversion:
            stripped = [_WIKI_CONVERSION.sub(_first_variant, line) if "-{" in line else line for line in stripped]
        points = code_points("\n".join(stripped))
        if not marks:
            return points, points, stripped
        unmarked = [self.citations.sub("", line) if "[" in line else line for line in stripped]
        return points, code_points("\n".join(unmarked)), stripped

    def _clean_lines(
        self, doc: Doc, points: np.ndarray, marked: np.ndarray, strip: bool, terminal: np.ndarray, forced: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``line_kernels.clean_lines`` with this cleaner's settings."""
        c = self.config
        min_words = c.min_words_per_line
        return line_kernels.clean_lines(
            points, marked, strip, char_classes(), terminal,
            # In CJK documents every word is one character, never too long.
            not doc.cjk and c.max_word_length is not None, c.max_word_length or 0,
            c.filter_no_terminal_punct,
            # Every line has at least 0 words: a minimum under 1 removes none.
            min_words is not None and min_words > 0, min_words or 0,
            doc.cjk, forced, lowercase_table(), self.phrase_points, self.phrase_offsets, self.phrases_by_first,
        )

    def _phrases_in(self, doc: Doc, found: np.ndarray) -> _Phrases:
        """The phrase rules that can hit a line of ``doc``, of those whose phrase a kept line may hold
        (``found`` by the kernel, or not searched for)."""
        if not self.any_unsearched and True not in found.tolist():  # numpy's any() costs more on a few
            return _NO_PHRASES
        candidates = self.unsearched.copy()
        candidates[self.searched] = found
        javascript, lorem, curly, *policy = candidates.tolist()
        return _Phrases(
            javascript=javascript and "javascript" in doc.lowered,
            lorem=lorem and "lorem ipsum" in doc.lowered,
            curly=curly,  # no cleaning step adds a brace
            policy=tuple(phrase for phrase, maybe in zip(self.policy, policy) if maybe and phrase in doc.lowered),
        )


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
