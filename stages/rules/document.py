"""The per-document view every rule reads: the text split once into lines, words and n-gram hashes.

Rules never split text themselves; they ask a ``Doc`` for ``lines``, ``n_words`` and so on, which
are computed on first use and shared by every later rule. Words are whitespace tokens, except in
CJK documents (Chinese, Japanese: no spaces between words), where every Han or kana character is
one word, so is every run of other letters and digits, and punctuation is none: counting characters
is the cheap, segmenter-free choice, and it runs on code-point arrays instead of Python strings.
Korean separates words with spaces and is treated like any space-delimited language.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache, cached_property
from itertools import filterfalse

import numpy as np

_HAN_KANA_RANGES = [
    (0x3040, 0x30FF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2FA1F),
]
HAN_KANA = "".join(f"{chr(first)}-{chr(last)}" for first, last in _HAN_KANA_RANGES)

_CJK_CHAR = re.compile(f"[{HAN_KANA}]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff]")
_WORD_CHAR = re.compile(r"[^\W_]")
_LETTER = re.compile(r"[^\W\d_]")
_SPACE = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
UNDETERMINED = "und"

# Odd 64-bit constants for the n-gram rolling hash (splitmix64's); uint64 arithmetic wraps.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0xBF58476D1CE4E5B9)


@cache
def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every code point: is it a letter or digit, a letter, a Han or kana character.
    Built on the first CJK document (0.2 s per process)."""
    chars = [chr(code) for code in range(0x110000)]
    alnum = np.frombuffer(bytes(map(str.isalnum, chars)), dtype=np.bool_)
    alpha = np.frombuffer(bytes(map(str.isalpha, chars)), dtype=np.bool_)
    han_kana = np.zeros(0x110000, dtype=np.bool_)
    for first, last in _HAN_KANA_RANGES:
        han_kana[first : last + 1] = True
    return alnum, alpha, han_kana & alnum


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def cjk_share(text: str) -> float:
    """Share of non-space characters that are Han or kana."""
    visible = len(text) - sum(len(space) for space in _SPACE.findall(text))
    return len(_CJK_CHAR.findall(text)) / visible if visible else 0.0


def count_words(text: str, cjk: bool, enough: int) -> int:
    """How many words ``text`` has, counting no further than ``enough``."""
    if not cjk:
        return len(text.split(None, enough)[:enough])
    single = _char_tables()[2]
    count, in_run = 0, False
    for char in text:
        if not char.isalnum():
            in_run = False
        elif single[ord(char)]:
            count, in_run = count + 1, False
        elif not in_run:
            count, in_run = count + 1, True
        if count >= enough:
            break
    return count


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    repeats = repeated_chars = 0
    for item, seen in Counter(items).items():
        if seen > 1:
            repeats += seen - 1
            repeated_chars += (seen - 1) * len(item)
    return repeats, repeated_chars


def guess_cjk_lang(text: str) -> str:
    """For CJK text without a language label: Japanese if it has kana, else Chinese."""
    return "ja" if _KANA.search(text) else "zh"


def base_lang(lang: str | None) -> str | None:
    """``zh-Hans`` -> ``zh``, ``pt_BR`` -> ``pt``: thresholds and stop words are per base language.
    None for no label or langid's ``und`` (nothing to classify)."""
    if not lang or lang == UNDETERMINED:
        return None
    return lang.replace("_", "-").split("-", 1)[0].lower()


class Doc:
    """One document's text with lazily computed, shared splits."""

    def __init__(self, text: str, lang: str | None, cjk: bool):
        self.text = text
        self.lang = lang
        self.cjk = cjk

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def nonblank_lines(self) -> list[str]:
        return [line for line in self.lines if line and not line.isspace()]

    @cached_property
    def line_dups(self) -> tuple[int, int]:
        return duplicates(self.nonblank_lines)

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPH_BREAK.split(self.text.strip())

    @cached_property
    def paragraph_dups(self) -> tuple[int, int]:
        return duplicates(self.paragraphs)

    @cached_property
    def lowered(self) -> str:
        return self.text.lower()

    @cached_property
    def words(self) -> list[str]:
        """Whitespace tokens (space-delimited documents only)."""
        return self.text.split()

    @cached_property
    def cjk_words(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(id, length, holds a letter) of every word of a CJK document: each Han or kana character
        is a word, and so is each run of other letters and digits ("2010", "IEEE")."""
        alnum, alpha, single = _char_tables()
        points = code_points(self.text)
        in_word = alnum[points]
        is_single = single[points]
        in_run = in_word & ~is_single
        run_edges = np.diff(np.concatenate(([False], in_run, [False])).view(np.int8))
        run_starts, run_ends = np.flatnonzero(run_edges == 1), np.flatnonzero(run_edges == -1)
        starts = np.flatnonzero(is_single | (run_edges[:-1] == 1))
        ids = points[starts].astype(np.uint64)
        lengths = np.ones(starts.size, dtype=np.int64)
        letters = alpha[points[starts]]
        if run_starts.size:
            is_run = in_run[starts]
            runs = [self.text[a:b] for a, b in zip(run_starts.tolist(), run_ends.tolist())]
            rank = {run: i for i, run in enumerate(dict.fromkeys(runs))}
            ids[is_run] = np.fromiter(
                map(rank.__getitem__, runs), dtype=np.uint64, count=len(runs)
            ) + np.uint64(0x110000)
            lengths[is_run] = run_ends - run_starts
            letter_sums = np.concatenate(([0], np.cumsum(alpha[points])))
            letters[is_run] = letter_sums[run_ends] > letter_sums[run_starts]
        return ids, lengths, letters

    @cached_property
    def n_words(self) -> int:
        return self.cjk_words[0].size if self.cjk else len(self.words)

    @cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    @cached_property
    def symbol_words(self) -> list[str]:
        """Words without a letter or digit ("-", "|", "•"): Gopher does not count them as words."""
        if self.cjk:
            return []
        return [w for w in filterfalse(str.isalnum, self.words) if not _WORD_CHAR.search(w)]

    @property
    def content_word_count(self) -> int:
        return self.n_words - len(self.symbol_words)

    @cached_property
    def mean_content_word_length(self) -> float:
        chars = int(self.word_lengths.sum()) - sum(map(len, self.symbol_words))
        return chars / self.content_word_count if self.content_word_count else 0.0

    @cached_property
    def alpha_word_count(self) -> int:
        """Words holding at least one letter."""
        if self.cjk:
            return int(self.cjk_words[2].sum())
        return len(self.words) - sum(1 for w in filterfalse(str.isalpha, self.words) if not _LETTER.search(w))

    @cached_property
    def word_lengths(self) -> np.ndarray:
        if self.cjk:
            return self.cjk_words[1]
        return np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))

    @cached_property
    def word_ids(self) -> np.ndarray:
        """Each word as a distinct integer, mixed into 64 bits for hashing: in CJK documents the code
        point of a character word, otherwise the word's first-occurrence rank."""
        if self.cjk:
            dense = self.cjk_words[0]
        else:
            ids = {word: i for i, word in enumerate(dict.fromkeys(self.words))}
            dense = np.fromiter(map(ids.__getitem__, self.words), dtype=np.uint64, count=len(self.words))
        return (dense + np.uint64(1)) * _MIX

    def ngram_hashes(self, n: int) -> np.ndarray:
        """A 64-bit hash of the n-gram starting at every word position (n_words - n + 1 values)."""
        cache = self.__dict__.setdefault("_ngram_cache", {1: self.word_ids})
        if n not in cache:
            shorter = self.ngram_hashes(n - 1)
            cache[n] = shorter[:-1] * _BASE + self.word_ids[n - 1 :]
        return cache[n]
