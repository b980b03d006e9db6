"""The per-document view every rule reads: the text split once into lines, words, n-gram hashes and
the hashed word-pair counts that bound n-gram counts.

Rules never split text themselves; they ask a ``Doc`` for ``lines``, ``n_words`` and so on, which
are computed on first use and shared by every later rule. Words are whitespace tokens, except in
CJK documents (Chinese, Japanese: no spaces between words), where every Han or kana character is
one word, so is every run of other letters and digits, and punctuation is none: counting characters
is the cheap, segmenter-free choice. Korean separates words with spaces and is treated like any
space-delimited language. Both kinds of document find their words in one compiled pass over their code
points (``kernels.find_words``), which also hashes them and counts their hashed pairs.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from functools import cache
from typing import Callable

import numpy as np

from pipeline import table_cache
from stages.rules import kernels
from stages.rules.kernels import ALPHA, BREAK, LETTER, MIX, RUN, SINGLE, SPACE

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
_LETTER_CHAR = re.compile(r"[^\W\d_]")
_SPACE_CHAR = re.compile(r"\s")
_SPACES = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines'
UNDETERMINED = "und"


@cache
def char_classes() -> np.ndarray:
    """The classes of every code point, one byte each: built once per machine and Python version
    (``pipeline.table_cache``), read from disk by later processes."""
    return table_cache.cached_table("rules-char-classes", _build_char_classes, sys.modules[__name__], kernels)


def _build_char_classes() -> np.ndarray:
    """``char_classes``, in about 0.1 s: the regex engine finds the letters, digits and spaces among
    all 1.1 million characters 3x faster than str.isalnum on each (its \\s is str.isspace)."""
    every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    alnum = [match.start() for match in _WORD_CHAR.finditer(every)]
    is_alpha = np.frombuffer(bytes(map(str.isalpha, map(chr, alnum))), dtype=np.bool_)
    kind = np.full(0x110000, RUN, dtype=np.uint8)
    for first, last in _HAN_KANA_RANGES:
        kind[first : last + 1] = SINGLE
    classes = np.zeros(0x110000, dtype=np.uint8)
    alnum = np.array(alnum)
    classes[alnum] = kind[alnum] + np.where(is_alpha, ALPHA, 0).astype(np.uint8)
    classes[[match.start() for match in _LETTER_CHAR.finditer(every)]] |= LETTER
    classes[[match.start() for match in _SPACE_CHAR.finditer(every)]] |= SPACE
    classes[[ord(c) for c in _LINE_BREAKS]] |= BREAK
    return classes


@cache
def lowercase_table() -> np.ndarray:
    """Every code point's ``str.lower``, one code point each: what ``"İ".lower()`` starts with for
    the one character that lowercases to two, small sigma for capital sigma (lowercased by context)."""
    every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    lowered = code_points(every.lower())
    dotted = 0x130  # İ -> i + U+0307
    table = np.concatenate([lowered[: dotted + 1], lowered[dotted + 2 :]])
    table[0x3A3] = ord("σ")
    return table


def code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def cjk_share(text: str) -> float:
    """Share of non-space characters that are Han or kana."""
    visible = len(text) - sum(len(space) for space in _SPACES.findall(text))
    return len(_CJK_CHAR.findall(text)) / visible if visible else 0.0


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


class cached:
    """``functools.cached_property`` without its lock, which Python 3.11 takes on every first access
    (as dear as many of the properties below); a Doc never leaves its thread."""

    def __init__(self, compute: Callable):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, doc: Doc | None, owner: type | None = None):
        if doc is None:
            return self
        value = doc.__dict__[self.name] = self.compute(doc)
        return value


class Doc:
    """One document's text with lazily computed, shared splits."""

    def __init__(
        self, text: str, lang: str | None, cjk: bool, lines: list[str] | None = None, points: np.ndarray | None = None
    ):
        """``lines``: ``text.splitlines()``, ``points``: ``code_points(text)``, when the caller already
        has them (it built ``text`` from them)."""
        self.text = text
        self.lang = lang
        self.cjk = cjk
        if lines is not None:
            self.__dict__["lines"] = lines
        if points is not None:
            self.__dict__["points"] = points

    @cached
    def points(self) -> np.ndarray:
        return code_points(self.text)

    @cached
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached
    def nonblank_lines(self) -> list[str]:
        return [line for line in self.lines if line and not line.isspace()]

    @cached
    def line_dups(self) -> tuple[int, int]:
        return duplicates(self.nonblank_lines)

    @cached
    def paragraphs(self) -> list[str]:
        text = self.text.strip()
        # Without three newlines in a row every break is exactly two, which str.split finds faster.
        return _PARAGRAPH_BREAK.split(text) if "\n\n\n" in text else text.split("\n\n")

    @cached
    def paragraph_dups(self) -> tuple[int, int]:
        return duplicates(self.paragraphs)

    @cached
    def alnum_chars(self) -> int:
        """How many characters are letters or digits."""
        if self.text.isascii():  # deleting them is a C loop over bytes
            data = self.text.encode("ascii")
            return len(data) - len(data.translate(None, _ASCII_ALNUM))
        return int(np.count_nonzero(char_classes()[self.points] & (SINGLE | RUN)))

    @cached
    def lowered(self) -> str:
        return self.text.lower()

    @cached
    def words(self) -> list[str]:
        """Whitespace tokens (space-delimited documents only), for the rules that need the strings."""
        return self.text.split()

    @cached
    def _words(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
        """``kernels.find_words``: word starts, lengths, hashes, pair counts and a summary."""
        return kernels.find_words(self.points, char_classes(), self.cjk)

    @property
    def n_words(self) -> int:
        return self._words[0].size

    @cached
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    @property
    def symbol_words(self) -> tuple[int, int]:
        """Words without a letter or digit ("-", "|", "•"), which Gopher does not count as words: how
        many, and their characters. CJK documents have none (their punctuation is no word at all)."""
        return self._words[4][:2]

    @property
    def content_word_count(self) -> int:
        return self.n_words - self._words[4][0]

    @property
    def mean_content_word_length(self) -> float:
        _, symbol_chars, chars, *_ = self._words[4]
        content = self.content_word_count
        return (chars - symbol_chars) / content if content else 0.0

    @property
    def alpha_word_count(self) -> int:
        """Words holding at least one letter: a character str.isalpha accepts in CJK documents, one of
        [^\\W\\d_] (which adds numerals such as "²" or "Ⅻ") in space-delimited ones."""
        return self._words[4][3]

    @property
    def hash_signs(self) -> int:
        """How many "#" the text holds."""
        return self._words[4][5]

    @property
    def ellipses(self) -> int:
        """How many "..." and "…" the text holds (``str.count``'s count: "......" holds two)."""
        return self._words[4][6]

    @property
    def word_lengths(self) -> np.ndarray:
        return self._words[1]

    @property
    def longest_word(self) -> int:
        """Characters in the longest word (0 without words)."""
        return self._words[4][4]

    @cached
    def word_keys(self) -> np.ndarray:
        """Each word as an integer, equal for equal words and distinct for different ones: in CJK
        documents the code point of a character word, otherwise the position of the word's last
        occurrence (one dict built in C, no loop over the vocabulary)."""
        if self.cjk:
            starts, lengths = self._words[:2]
            first = self.points[starts]
            keys = first.astype(np.uint64)
            is_run = (char_classes()[first] & RUN).astype(np.bool_)
            if is_run.any():
                # Runs are few (dozens per document): a dict of their strings numbers them.
                run_starts = starts[is_run]
                bounds = map(slice, run_starts.tolist(), (run_starts + lengths[is_run]).tolist())
                runs = list(map(self.text.__getitem__, bounds))
                last = dict(zip(runs, range(len(runs))))
                keys[is_run] = np.fromiter(
                    map(last.__getitem__, runs), dtype=np.uint64, count=len(runs)
                ) + np.uint64(0x110000)
            return keys
        last = dict(zip(self.words, range(len(self.words))))
        return np.fromiter(map(last.__getitem__, self.words), dtype=np.uint64, count=len(self.words))

    @cached
    def word_ids(self) -> np.ndarray:
        """``word_keys`` mixed into 64 bits for hashing."""
        return (self.word_keys + np.uint64(1)) * MIX

    @property
    def word_hashes(self) -> np.ndarray:
        """Per word, a mix of its code point sum and first and last code points: equal for equal
        words, rarely for different ones. Cheaper than numbering the words' strings (``word_keys``),
        and enough for counts that are only bounds."""
        return self._words[2]

    @property
    def pair_counts(self) -> np.ndarray:
        """For the pair of words starting at every position (n_words - 1 values), how often it
        occurs in the document, or more: pairs are hashed into bins (four per pair, so few share
        one) and pairs sharing a bin add up. Only ever used as an upper bound, which over-counting
        keeps: an n-gram occurs no more often than any word pair in it."""
        return self._words[3]
