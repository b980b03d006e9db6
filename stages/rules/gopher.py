"""Gopher quality and repetition rules (Rae et al. 2021, appendix A1), as datatrove implements them.

Differences from datatrove, all deliberate: words are whitespace tokens (datatrove runs spaCy), so
"alpha words" and "mean word length" follow the paper's wording on whole tokens; stop words are
per language (datatrove applies the English list to every language); the most frequent n-gram
must occur at least twice (datatrove also counts a single long one); duplicate n-grams are found
with vectorised 64-bit hashes and their characters counted once per covered word, instead of
datatrove's greedy skip-ahead scan (the same quantity on all but contrived inputs). A document whose
5-gram duplicates stay under the 10-gram limit is not scanned for longer ones: their coverage can
only shrink as n grows.

Most documents never need the exact n-gram statistics: an n-gram occurs no more often than the word
pairs in it, so hashed counts of word pairs (``Doc.min_counts``) bound both statistics from above,
and a document the bound passes is passed (the bound settles 93-98% of corpus-dev per rule). Only the
rest are counted exactly, and only over the n-grams whose word pairs all repeat, so every decision is
the exact statistic's.
"""

from __future__ import annotations

from itertools import repeat
from typing import Iterator

import numpy as np

from stages.rules.base import Rule, ratio
from stages.rules.config import GopherQualityConfig, GopherRepetitionConfig
from stages.rules.document import Doc

_ELLIPSES = ("...", "…")


def quality_rules(config: GopherQualityConfig) -> list[Rule]:
    """The enabled Gopher quality rules, in datatrove's order."""
    c = config
    if not c.enabled:
        return []
    rules = []
    if c.min_doc_words is not None:
        rules.append(Rule("gopher_too_few_words", lambda d: d.content_word_count < c.min_doc_words))
    if c.max_doc_words is not None:
        rules.append(Rule("gopher_too_many_words", lambda d: d.content_word_count > c.max_doc_words))
    if c.min_avg_word_length is not None:
        rules.append(
            Rule(
                "gopher_short_words",
                lambda d: not d.cjk and 0 < d.mean_content_word_length < c.min_avg_word_length,
            )
        )
    if c.max_avg_word_length is not None:
        rules.append(
            Rule(
                "gopher_long_words",
                lambda d: not d.cjk and d.mean_content_word_length > c.max_avg_word_length,
            )
        )
    if c.max_symbol_word_ratio is not None:
        rules.append(
            Rule("gopher_hash_ratio", lambda d: ratio(d.text.count("#"), d.n_words) > c.max_symbol_word_ratio)
        )
        rules.append(
            Rule(
                "gopher_ellipsis_ratio",
                lambda d: ratio(_ellipses(d.text), d.n_words) > c.max_symbol_word_ratio,
            )
        )
    if c.max_bullet_lines_ratio is not None:
        bullets = tuple(c.bullets)
        rules.append(
            Rule("gopher_bullet_lines", lambda d: _bullet_share(d, bullets) > c.max_bullet_lines_ratio)
        )
    if c.max_ellipsis_lines_ratio is not None:
        rules.append(
            Rule("gopher_ellipsis_lines", lambda d: _ellipsis_line_share(d) > c.max_ellipsis_lines_ratio)
        )
    if c.min_alpha_words_ratio is not None:
        rules.append(
            Rule(
                "gopher_alpha_words",
                lambda d: d.n_words > 0 and d.alpha_word_count / d.n_words < c.min_alpha_words_ratio,
            )
        )
    if c.min_stop_words is not None:
        stop_words = {
            lang: (tuple(words), tuple(f" {word} " for word in words)) for lang, words in c.stop_words.items()
        }
        rules.append(
            Rule("gopher_stop_words", lambda d: _too_few_stop_words(d, stop_words, c.min_stop_words))
        )
    return rules


def repetition_rules(config: GopherRepetitionConfig) -> list[Rule]:
    """The enabled Gopher repetition rules, in datatrove's order (paragraphs, lines, n-grams)."""
    c = config
    if not c.enabled:
        return []
    rules = []
    if c.dup_para_frac is not None:
        rules.append(
            Rule(
                "gopher_dup_paras", lambda d: ratio(d.paragraph_dups[0], len(d.paragraphs)) > c.dup_para_frac
            )
        )
    if c.dup_para_char_frac is not None:
        rules.append(
            Rule(
                "gopher_dup_para_chars",
                lambda d: ratio(d.paragraph_dups[1], len(d.text)) > c.dup_para_char_frac,
            )
        )
    if c.dup_line_frac is not None:
        rules.append(
            Rule("gopher_dup_lines", lambda d: ratio(d.line_dups[0], len(d.nonblank_lines)) > c.dup_line_frac)
        )
    if c.dup_line_char_frac is not None:
        rules.append(
            Rule("gopher_dup_line_chars", lambda d: ratio(d.line_dups[1], len(d.text)) > c.dup_line_char_frac)
        )
    for n, limit in sorted(c.top_n_grams.items()):
        rules.append(Rule(f"gopher_top_{n}gram", _top_ngram_rule(n, limit, c.cjk_n_scale)))
    for n, limit in sorted(c.dup_n_grams.items()):
        rules.append(Rule(f"gopher_dup_{n}grams", _dup_ngram_rule(n, limit, c.cjk_n_scale)))
    return rules


def _ellipses(text: str) -> int:
    return text.count("...") + text.count("…")


def _bullet_share(doc: Doc, bullets: tuple[str, ...]) -> float:
    return ratio(sum(map(str.startswith, map(str.lstrip, doc.lines), repeat(bullets))), len(doc.lines))


def _ellipsis_line_share(doc: Doc) -> float:
    return ratio(sum(map(str.endswith, map(str.rstrip, doc.lines), repeat(_ELLIPSES))), len(doc.lines))


def _too_few_stop_words(
    doc: Doc, stop_words: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], minimum: int
) -> bool:
    """``stop_words``: per language, the words, and each between two spaces."""
    if doc.lang not in stop_words:
        return False
    words, spaced = stop_words[doc.lang]
    if doc.cjk:  # no word boundaries to match on: any occurrence counts
        return sum(map(doc.text.__contains__, words)) < minimum
    # Cheap exact pass first: " the " in the text proves the token "the" exists.
    if sum(map(doc.text.__contains__, spaced)) >= minimum:
        return False
    return sum(map(doc.word_set.__contains__, words)) < minimum


def _top_ngram_rule(n: int, limit: float, cjk_scale: int):
    def fails(doc: Doc) -> bool:
        size = n * cjk_scale if doc.cjk else n
        length = len(doc.text)
        # The exact count needs a sort of n-grams; the bounds need none and settle most documents.
        for bound in _top_ngram_bounds(doc, size) if size > 1 else ():
            if ratio(bound, length) <= limit:
                return False
        return ratio(_top_ngram_chars(doc, size), length) > limit

    return fails


def _dup_ngram_rule(n: int, limit: float, cjk_scale: int):
    def fails(doc: Doc) -> bool:
        size = n * cjk_scale if doc.cjk else n
        length = len(doc.text)
        upper = doc.__dict__.setdefault("_dup_ngram_upper", {})
        # Words covered by repeated (n+1)-grams are covered by repeated n-grams too, so an upper
        # bound found for any shorter n bounds this one: most documents stop at the first n.
        shorter = [chars for m, chars in upper.items() if m < size]
        if shorter and ratio(min(shorter), length) <= limit:
            return False
        for bound in _dup_ngram_bounds(doc, size) if size > 1 else ():
            upper[size] = bound
            if ratio(bound, length) <= limit:
                return False
        upper[size] = _dup_ngram_chars(doc, size)
        return ratio(upper[size], length) > limit

    return fails


def _top_ngram_bounds(doc: Doc, n: int) -> Iterator[int]:
    """Upper bounds on ``_top_ngram_chars`` (n >= 2), each tighter and dearer than the last. No
    n-gram occurs more often than the word pairs in it, nor holds more than n of the longest word:
    first the most often any n-gram's pairs all occur times that length, then the largest such
    count times the n-gram's own characters over all positions."""
    min_counts = doc.min_counts(n)
    if min_counts.size == 0:
        yield 0
        return
    gaps = 0 if doc.cjk else n - 1
    yield int(np.maximum.reduce(min_counts)) * (n * doc.longest_word + gaps)
    chars = doc.word_offsets[n:] - doc.word_offsets[:-n] + gaps
    yield int(np.maximum.reduce(min_counts * chars))


def _dup_ngram_bounds(doc: Doc, n: int) -> Iterator[int]:
    """Upper bounds on ``_dup_ngram_chars`` (n >= 2), each tighter and dearer than the last: first
    the most words the n-grams that may repeat can cover times the longest word, then the
    characters they do cover, then the characters of those that repeat an earlier one when words
    are told apart by ``Doc.word_hashes``. These may take two words for one, so they find every
    repeat and perhaps more; the exact count, which numbers the words' strings, is left to the few
    documents this last bound fails."""
    starts = _repeatable(doc, n)
    yield min(starts.size * n, doc.n_words) * doc.longest_word
    yield _covered_chars(doc, starts, n)
    yield _covered_chars(doc, _repeats(doc.hashed_ngrams(n, starts), starts), n)


def _repeatable(doc: Doc, n: int) -> np.ndarray:
    """The positions whose n-gram may occur more than once, ascending. For n >= 2 those whose word
    pairs all occur more than once: a pair that occurs once is in one n-gram occurrence only. Only
    they need sorting to find the repeated n-grams, often a small share of all."""
    if n < 2:
        return np.arange(doc.n_words)
    return (doc.min_counts(n) >= 2).nonzero()[0]


def _top_ngram_chars(doc: Doc, n: int) -> int:
    """Characters of the most frequent repeated n-gram (words joined by spaces, none for CJK) times
    its count; ties go to the n-gram seen first, like datatrove's Counter.most_common."""
    positions = _repeatable(doc, n)
    if positions.size == 0:
        return 0
    _, group_starts, first = _groups(doc.ngram_hashes(n)[positions])
    counts = np.diff(np.append(group_starts, positions.size))
    if counts.max() < 2:  # nothing repeats; datatrove would still count the longest single n-gram
        return 0
    start = int(positions[first[counts == counts.max()].min()])
    chars = int(doc.word_lengths[start : start + n].sum()) + (0 if doc.cjk else n - 1)
    return chars * int(counts.max())


def _dup_ngram_chars(doc: Doc, n: int) -> int:
    """Characters of the words covered by any n-gram occurrence that repeats an earlier one."""
    positions = _repeatable(doc, n)
    if positions.size < 2:
        return 0
    return _covered_chars(doc, _repeats(doc.ngram_hashes(n)[positions], positions), n)


def _repeats(hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The positions (ascending) whose hash occurs at an earlier one."""
    if positions.size == 0:
        return positions
    _, _, first = _groups(hashes)
    is_repeat = np.ones(positions.size, dtype=bool)
    is_repeat[first] = False
    return positions[is_repeat]


def _covered_chars(doc: Doc, starts: np.ndarray, n: int) -> int:
    """Characters of the words inside any of the n-grams starting at ``starts`` (ascending)."""
    if starts.size == 0:
        return 0
    cover = np.zeros(doc.word_lengths.size + 1, dtype=np.int64)
    cover[starts] += 1  # starts are distinct, so plain fancy indexing adds once each
    cover[starts + n] -= 1
    covered = cover[:-1].cumsum() > 0
    return int(np.add.reduce(doc.word_lengths[covered]))


def _groups(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sort order of the hashes, where each run of equal hashes starts in it, and the earliest
    index of each distinct hash (one per run)."""
    order = np.argsort(hashes)
    ordered = hashes[order]
    boundary = np.empty(ordered.size, dtype=bool)
    boundary[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=boundary[1:])
    starts = np.flatnonzero(boundary)
    return order, starts, np.minimum.reduceat(order, starts)
