"""The per-document view every rule reads: the text split once into lines, words, n-gram hashes and
the hashed word-pair counts that bound n-gram counts.

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
from typing import NamedTuple

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
_ASCII_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_LETTER = re.compile(r"[^\W\d_]")
_SPACE = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
UNDETERMINED = "und"

# Odd 64-bit constants for the n-gram rolling hash (splitmix64's); uint64 arithmetic wraps.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0xBF58476D1CE4E5B9)


# Classes of code points in CJK word splitting (``_char_classes``).
_SINGLE = 1  # a Han or kana letter or digit: a word by itself
_RUN = 2  # any other letter or digit: a run of them is one word
_ALPHA = 4  # a letter, added to either


@cache
def _char_classes() -> np.ndarray:
    """The class of every code point, one byte each: ``_SINGLE``, ``_RUN`` or 0 (no part of a word),
    plus ``_ALPHA`` for letters. Built on the first CJK document, in about 0.1 s: the regex engine
    finds the letters and digits among all 1.1 million characters 3x faster than str.isalnum on each."""
    every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    alnum = [match.start() for match in _WORD_CHAR.finditer(every)]
    is_alpha = np.frombuffer(bytes(map(str.isalpha, map(chr, alnum))), dtype=np.bool_)
    kind = np.full(0x110000, _RUN, dtype=np.uint8)
    for first, last in _HAN_KANA_RANGES:
        kind[first : last + 1] = _SINGLE
    classes = np.zeros(0x110000, dtype=np.uint8)
    alnum = np.array(alnum)
    classes[alnum] = kind[alnum] + np.where(is_alpha, _ALPHA, 0).astype(np.uint8)
    return classes


@cache
def _char_class_view() -> memoryview:
    """``_char_classes`` as a memoryview, which Python indexes faster than an array, one character
    at a time."""
    return _char_classes().data


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
    classes = _char_class_view()
    count, in_run = 0, False
    for code in map(ord, text):
        kind = classes[code] & (_SINGLE | _RUN)
        if kind == _RUN:
            if not in_run:
                count, in_run = count + 1, True
        else:
            in_run = False
            if kind:
                count += 1
        if count >= enough:
            break
    return count


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    if len(set(items)) == len(items):  # the usual case, settled without counting
        return 0, 0
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


class CJKWords(NamedTuple):
    """The words of a CJK document: its code points and their ``_char_classes``, where each word
    starts, which words are runs (not one Han or kana character) and where each run ends."""

    points: np.ndarray
    classes: np.ndarray
    starts: np.ndarray
    is_run: np.ndarray
    run_ends: np.ndarray

    @property
    def run_starts(self) -> np.ndarray:
        return self.starts[self.is_run]

    def hashed_keys(self) -> np.ndarray:
        """Per word, a key equal for equal words (different words may share one): the code point of
        a character, a mix of the code point sum, last code point and length of a run. Cheaper than
        numbering the runs' strings (``Doc.word_keys``), and enough for counts that are only bounds."""
        keys = self.points[self.starts].astype(np.uint64)
        if self.is_run.any():
            starts, ends = self.run_starts, self.run_ends
            sums = self.points.cumsum()
            mixed = (sums[ends - 1] - sums[starts] + keys[self.is_run]) * _MIX + self.points[ends - 1]
            lengths = (ends - starts).astype(np.uint64)
            keys[self.is_run] = ((mixed * _MIX + lengths) * _MIX) | np.uint64(1 << 63)  # never a code point
        return keys


class Doc:
    """One document's text with lazily computed, shared splits."""

    def __init__(self, text: str, lang: str | None, cjk: bool, lines: list[str] | None = None):
        """``lines``: ``text.splitlines()`` when the caller already has it (it built ``text`` from them)."""
        self.text = text
        self.lang = lang
        self.cjk = cjk
        if lines is not None:
            self.__dict__["lines"] = lines

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
        text = self.text.strip()
        # Without three newlines in a row every break is exactly two, which str.split finds faster.
        return _PARAGRAPH_BREAK.split(text) if "\n\n\n" in text else text.split("\n\n")

    @cached_property
    def paragraph_dups(self) -> tuple[int, int]:
        return duplicates(self.paragraphs)

    @cached_property
    def alnum_chars(self) -> int:
        """How many characters are letters or digits."""
        if self.text.isascii():  # deleting them is a C loop over bytes
            data = self.text.encode("ascii")
            return len(data) - len(data.translate(None, _ASCII_ALNUM))
        return int(np.count_nonzero(_char_classes()[code_points(self.text)] & (_SINGLE | _RUN)))

    @cached_property
    def lowered(self) -> str:
        return self.text.lower()

    @cached_property
    def words(self) -> list[str]:
        """Whitespace tokens (space-delimited documents only)."""
        return self.text.split()

    @cached_property
    def cjk_words(self) -> CJKWords:
        """Where the words of a CJK document are: each Han or kana character is a word, and so is
        each run of other letters and digits ("2010", "IEEE")."""
        points = code_points(self.text)
        classes = _char_classes()[points]
        in_run = (classes & _RUN).astype(np.bool_)
        # Every letter or digit starts a word, except one that continues a run.
        is_start = (classes & (_SINGLE | _RUN)).astype(np.bool_)
        is_start[1:] &= ~(in_run[1:] & in_run[:-1])
        starts = is_start.nonzero()[0]
        is_run = in_run[starts]
        ends_run = in_run.copy()
        ends_run[:-1] &= ~in_run[1:]
        return CJKWords(points, classes, starts, is_run, ends_run.nonzero()[0] + 1)

    @cached_property
    def n_words(self) -> int:
        return self.cjk_words.starts.size if self.cjk else len(self.words)

    @cached_property
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    @cached_property
    def symbol_words(self) -> list[str]:
        """Words without a letter or digit ("-", "|", "•"): Gopher does not count them as words."""
        if self.cjk:
            return []
        return [w for w in filterfalse(str.isalnum, self.letterless_words) if not _WORD_CHAR.search(w)]

    @cached_property
    def letterless_words(self) -> list[str]:
        """Words without a letter (numbers, symbols; space-delimited documents only): few, so the
        symbol words are looked for among them rather than among all words."""
        # A word starting with a letter ("word,") is settled without the regex.
        odd = filterfalse(str.isalpha, self.words)
        return [w for w in odd if not w[0].isalpha() and not _LETTER.search(w)]

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
            words = self.cjk_words
            letters = int(np.add.reduce(words.classes[words.starts[~words.is_run]] & _ALPHA)) // _ALPHA
            if words.is_run.any():
                letter_counts = np.concatenate(([0], (words.classes & _ALPHA).cumsum()))
                letters += int(np.add.reduce(letter_counts[words.run_ends] > letter_counts[words.run_starts]))
            return letters
        return len(self.words) - len(self.letterless_words)

    @cached_property
    def word_lengths(self) -> np.ndarray:
        if self.cjk:
            words = self.cjk_words
            lengths = np.ones(words.starts.size, dtype=np.int64)
            lengths[words.is_run] = words.run_ends - words.run_starts
            return lengths
        return np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))

    @cached_property
    def word_keys(self) -> np.ndarray:
        """Each word as an integer, equal for equal words and distinct for different ones: in CJK
        documents the code point of a character word, otherwise the position of the word's last
        occurrence (one dict built in C, no loop over the vocabulary)."""
        if self.cjk:
            words = self.cjk_words
            keys = words.points[words.starts].astype(np.uint64)
            if words.is_run.any():
                # Runs are few (dozens per document): a dict of their strings numbers them.
                spans = map(slice, words.run_starts.tolist(), words.run_ends.tolist())
                runs = list(map(self.text.__getitem__, spans))
                last = dict(zip(runs, range(len(runs))))
                keys[words.is_run] = np.fromiter(
                    map(last.__getitem__, runs), dtype=np.uint64, count=len(runs)
                ) + np.uint64(0x110000)
            return keys
        last = dict(zip(self.words, range(len(self.words))))
        return np.fromiter(map(last.__getitem__, self.words), dtype=np.uint64, count=len(self.words))

    @cached_property
    def word_ids(self) -> np.ndarray:
        """``word_keys`` mixed into 64 bits for hashing."""
        return (self.word_keys + np.uint64(1)) * _MIX

    @cached_property
    def pair_counts(self) -> np.ndarray:
        """For the pair of words starting at every position (n_words - 1 values), how often it
        occurs in the document, or more: pairs are hashed into bins (four per pair, so few share
        one) and pairs sharing a bin add up. Only ever used as an upper bound, which over-counting
        keeps. Words are hashed with Python's ``hash`` (CJK words: ``CJKWords.hashed_keys``), whose
        per-process salt can change how often a rule needs its exact count, never what it decides."""
        if self.cjk:
            keys = self.cjk_words.hashed_keys()
        else:
            keys = np.fromiter(map(hash, self.words), dtype=np.int64, count=len(self.words)).view(np.uint64)
        pairs = keys[:-1] * _MIX + keys[1:]
        bits = max(12, (4 * pairs.size).bit_length())
        bins = ((pairs * _BASE) >> np.uint64(64 - bits)).astype(np.intp)  # the product's top bits
        return np.bincount(bins)[bins]

    @cached_property
    def longest_word(self) -> int:
        """Characters in the longest word (0 without words)."""
        return int(np.maximum.reduce(self.word_lengths, initial=0))

    @cached_property
    def word_offsets(self) -> np.ndarray:
        """Characters in the words before each position (n_words + 1 values): the words of positions
        i..j-1 hold word_offsets[j] - word_offsets[i] characters."""
        offsets = np.zeros(self.n_words + 1, dtype=np.int64)
        self.word_lengths.cumsum(out=offsets[1:])
        return offsets

    def min_counts(self, n: int) -> np.ndarray:
        """For the n-gram (n >= 2) starting at every position, the smallest ``pair_counts`` of the
        n - 1 word pairs in it: an upper bound on how often that n-gram occurs."""
        cache = self.__dict__.setdefault("_min_count_cache", {2: self.pair_counts})
        if n not in cache:
            # An m-gram followed by the (n - m + 1)-gram starting at its last word: from the longest
            # m already known, or from halves when that covers less than half.
            m = max(k for k in cache if k < n)
            if 2 * m - 1 < n:
                m = (n + 1) // 2
            size = max(self.n_words - n + 1, 0)
            cache[n] = np.minimum(self.min_counts(m)[:size], self.min_counts(n - m + 1)[m - 1 : m - 1 + size])
        return cache[n]

    def ngram_hashes(self, n: int) -> np.ndarray:
        """A 64-bit hash of the n-gram starting at every word position (n_words - n + 1 values): the
        polynomial sum of ids[i + k] * _BASE ** (n - 1 - k). An n-gram is an (n - m)-gram followed
        by an m-gram, so halving n builds it in a few array operations, not n - 1."""
        cache = self.__dict__.setdefault("_ngram_cache", {1: self.word_ids})
        if n not in cache:
            tail = n // 2 if n % 2 == 0 else 1
            head = self.ngram_hashes(n - tail)
            shift = np.uint64(pow(int(_BASE), tail, 1 << 64))
            size = max(self.n_words - n + 1, 0)
            cache[n] = head[:size] * shift + self.ngram_hashes(tail)[n - tail : n - tail + size]
        return cache[n]
