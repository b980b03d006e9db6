"""Gopher quality and repetition rules (Rae et al. 2021, appendix A1), as datatrove implements them.

Differences from datatrove, all deliberate: words are whitespace tokens (datatrove runs spaCy), so
"alpha words" and "mean word length" follow the paper's wording on whole tokens; stop words are
per language (datatrove applies the English list to every language); the most frequent n-gram
must occur at least twice (datatrove also counts a single long one); duplicate n-grams are found
with 64-bit hashes and their characters counted once per covered word, instead of
datatrove's greedy skip-ahead scan (the same quantity on all but contrived inputs). A document whose
5-gram duplicates stay under the 10-gram limit is not scanned for longer ones: their coverage can
only shrink as n grows.

Most documents never need the exact n-gram statistics: an n-gram occurs no more often than the word
pairs in it, so hashed counts of word pairs (``Doc.pair_counts``) bound both statistics from above,
and a document the bound passes is passed (the bound settles 93-98% of corpus-dev per rule). Only
the rest are counted exactly, and only over the n-grams whose word pairs all repeat, so every
decision is the exact statistic's. Bounds and counts are compiled loops (``ngram_kernels``).
"""

from __future__ import annotations

from itertools import repeat
from typing import Iterator

import numpy as np

from stages.rules import ngram_kernels
from stages.rules.base import RuleGroup, ratio
from stages.rules.config import GopherQualityConfig, GopherRepetitionConfig
from stages.rules.document import Doc

_ELLIPSES = ("...", "…")


def quality_rules(config: GopherQualityConfig) -> list[RuleGroup]:
    """The enabled Gopher quality rules, in datatrove's order, as one check (the rules read a handful
    of numbers each; calling one function per rule cost more than most of them)."""
    c = config
    if not c.enabled:
        return []
    min_words, max_words = c.min_doc_words, c.max_doc_words
    min_length, max_length = c.min_avg_word_length, c.max_avg_word_length
    symbol_ratio = c.max_symbol_word_ratio
    bullets_ratio, ellipsis_ratio = c.max_bullet_lines_ratio, c.max_ellipsis_lines_ratio
    alpha_ratio, min_stop_words = c.min_alpha_words_ratio, c.min_stop_words
    bullets = tuple(c.bullets)
    stop_words = {lang: (tuple(words), tuple(f" {word} " for word in words)) for lang, words in c.stop_words.items()}

    def first_failing(d: Doc) -> str | None:
        if min_words is not None and d.content_word_count < min_words:
            return "gopher_too_few_words"
        if max_words is not None and d.content_word_count > max_words:
            return "gopher_too_many_words"
        if min_length is not None and not d.cjk and 0 < d.mean_content_word_length < min_length:
            return "gopher_short_words"
        if max_length is not None and not d.cjk and d.mean_content_word_length > max_length:
            return "gopher_long_words"
        if symbol_ratio is not None:
            if ratio(d.hash_signs, d.n_words) > symbol_ratio:
                return "gopher_hash_ratio"
            if ratio(d.ellipses, d.n_words) > symbol_ratio:
                return "gopher_ellipsis_ratio"
        if bullets_ratio is not None and _bullet_share(d, bullets) > bullets_ratio:
            return "gopher_bullet_lines"
        if ellipsis_ratio is not None and _ellipsis_line_share(d) > ellipsis_ratio:
            return "gopher_ellipsis_lines"
        if alpha_ratio is not None and d.n_words > 0 and d.alpha_word_count / d.n_words < alpha_ratio:
            return "gopher_alpha_words"
        if min_stop_words is not None and _too_few_stop_words(d, stop_words, min_stop_words):
            return "gopher_stop_words"
        return None

    return [RuleGroup(first_failing)]


def repetition_rules(config: GopherRepetitionConfig) -> list[RuleGroup]:
    """The enabled Gopher repetition rules, in datatrove's order (paragraphs, lines, top n-grams,
    duplicate n-grams), as one check: most documents pass every rule on numbers already at hand, and
    a call per rule cost more than such a check."""
    c = config
    if not c.enabled:
        return []
    para_frac, para_char_frac = c.dup_para_frac, c.dup_para_char_frac
    line_frac, line_char_frac = c.dup_line_frac, c.dup_line_char_frac
    scale = c.cjk_n_scale
    top = [(n, n * scale, limit, f"gopher_top_{n}gram") for n, limit in sorted(c.top_n_grams.items())]
    dup = [(n, n * scale, limit, f"gopher_dup_{n}grams") for n, limit in sorted(c.dup_n_grams.items())]
    every_n = np.array([n for n, *_ in top], dtype=np.int64)
    every_cjk_n = every_n * scale

    def first_failing(d: Doc) -> str | None:
        if para_frac is not None and ratio(d.paragraph_dups[0], len(d.paragraphs)) > para_frac:
            return "gopher_dup_paras"
        if para_char_frac is not None and ratio(d.paragraph_dups[1], len(d.text)) > para_char_frac:
            return "gopher_dup_para_chars"
        if line_frac is not None and ratio(d.line_dups[0], len(d.nonblank_lines)) > line_frac:
            return "gopher_dup_lines"
        if line_char_frac is not None and ratio(d.line_dups[1], len(d.text)) > line_char_frac:
            return "gopher_dup_line_chars"
        length, cjk = len(d.text), d.cjk
        for n, cjk_n, limit, name in top:
            size = cjk_n if cjk else n
            # The exact count needs a sort of n-grams; the bounds need none and settle most documents.
            for bound in _top_ngram_bounds(d, size, every_cjk_n if cjk else every_n) if size > 1 else ():
                if ratio(bound, length) <= limit:
                    break
            else:
                if ratio(_top_ngram_chars(d, size), length) > limit:
                    return name
        # Words covered by repeated (n+1)-grams are covered by repeated n-grams too, so an upper bound
        # found for a shorter n bounds this one: most documents stop at the first n.
        least = None
        for n, cjk_n, limit, name in dup:
            size = cjk_n if cjk else n
            if least is not None and ratio(least, length) <= limit:
                continue
            for bound in _dup_ngram_bounds(d, size) if size > 1 else ():
                if ratio(bound, length) <= limit:
                    break
            else:
                bound = _dup_ngram_chars(d, size)
                if ratio(bound, length) > limit:
                    return name
            least = bound if least is None else min(least, bound)
        return None

    return [RuleGroup(first_failing)]


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


def _top_ngram_rule(n: int, limit: float, cjk_scale: int, every_n: np.ndarray):
    """``every_n``: the n of all top n-gram rules, whose bounds one pass finds."""
    cjk_sizes = every_n * cjk_scale

    def fails(doc: Doc) -> bool:
        size = n * cjk_scale if doc.cjk else n
        length = len(doc.text)
        # The exact count needs a sort of n-grams; the bounds need none and settle most documents.
        for bound in _top_ngram_bounds(doc, size, cjk_sizes if doc.cjk else every_n) if size > 1 else ():
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


def _top_ngram_bounds(doc: Doc, n: int, sizes: np.ndarray | None = None) -> list[int]:
    """Upper bounds on ``_top_ngram_chars`` (n >= 2), the tighter last (see the kernel). ``sizes``:
    the n (n among them) whose bounds to find in the same pass; the document keeps them."""
    if doc.n_words < n:
        return [0]
    found = doc.__dict__.setdefault("_top_ngram_bounds", {})
    if n not in found:
        sizes = np.array([n]) if sizes is None else sizes
        bounds = ngram_kernels.top_ngram_bounds(doc.pair_counts, doc.word_lengths, sizes, doc.cjk, doc.longest_word)
        found.update(zip(sizes.tolist(), bounds.tolist()))
    return found[n]


def _dup_ngram_bounds(doc: Doc, n: int) -> Iterator[int]:
    """Upper bounds on ``_dup_ngram_chars`` (n >= 2), each tighter and dearer than the last: first
    the most words the n-grams that may repeat (``_repeatable``) can cover times the longest word,
    then the characters they do cover, then the characters of those that repeat an earlier one when
    words are told apart by ``Doc.word_hashes``. These may take two words for one, so they find every
    repeat and perhaps more; the exact count, which numbers the words' strings, is left to the few
    documents this last bound fails."""
    repeatable, covered = ngram_kernels.dup_ngram_bounds(doc.pair_counts, doc.word_lengths, n)
    yield min(repeatable * n, doc.n_words) * doc.longest_word
    yield covered
    yield ngram_kernels.repeated_ngram_chars(doc.word_hashes, doc.word_lengths, _repeatable(doc, n), n)


def _repeatable(doc: Doc, n: int) -> np.ndarray:
    """The positions whose n-gram may occur more than once, ascending. For n >= 2 those whose word
    pairs all occur more than once: a pair that occurs once is in one n-gram occurrence only. Only
    they need sorting to find the repeated n-grams, often a small share of all."""
    if n < 2:
        return np.arange(doc.n_words)
    return ngram_kernels.repeatable(doc.pair_counts, n)


def _top_ngram_chars(doc: Doc, n: int) -> int:
    """Characters of the most frequent repeated n-gram (words joined by spaces, none for CJK) times
    its count; ties go to the n-gram seen first, like datatrove's Counter.most_common."""
    positions = _repeatable(doc, n)
    if positions.size == 0:
        return 0
    return ngram_kernels.top_ngram_chars(doc.word_ids, doc.word_lengths, positions, n, 0 if doc.cjk else n - 1)


def _dup_ngram_chars(doc: Doc, n: int) -> int:
    """Characters of the words covered by any n-gram occurrence that repeats an earlier one."""
    positions = _repeatable(doc, n)
    if positions.size < 2:
        return 0
    return ngram_kernels.repeated_ngram_chars(doc.word_ids, doc.word_lengths, positions, n)
