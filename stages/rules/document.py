"""The per-document view every rule reads: the text split once into lines, words, n-gram hashes and
the hashed word-pair counts that bound n-gram counts.

Rules never split text themselves; they ask a ``Doc`` for ``lines``, ``n_words`` and so on, which
are computed on first use and shared by every later rule. Words are whitespace tokens, except in
CJK documents (Chinese, Japanese: no spaces between words), where every Han or kana character is
one word, so is every run of other letters and digits, and punctuation is none: counting characters
is the cheap, segmenter-free choice. Korean separates words with spaces and is treated like any
space-delimited language. Both kinds of document find their words on one code-point array (``Words``),
so word counts, lengths and keys are a few array operations instead of a Python call per word.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import Callable, NamedTuple

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
_LETTER_CHAR = re.compile(r"[^\W\d_]")
_SPACE_CHAR = re.compile(r"\s")
_SPACES = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
UNDETERMINED = "und"

# Odd 64-bit constants for the n-gram rolling hash (splitmix64's); uint64 arithmetic wraps.
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(0xBF58476D1CE4E5B9)


# Classes of code points (``_char_classes``), one bit each.
_SINGLE = 1  # a Han or kana letter or digit: a CJK word by itself
_RUN = 2  # any other letter or digit: a run of them is one CJK word
_ALPHA = 4  # str.isalpha: a letter, as CJK documents count alpha words
_LETTER = 8  # [^\W\d_]: a letter or a non-decimal numeral, as space-delimited documents count them
_SPACE = 16  # str.isspace, which is what str.split splits on


@cache
def _char_classes() -> np.ndarray:
    """The classes of every code point, one byte each. Built on the first document, in about 0.2 s:
    the regex engine finds the letters, digits and spaces among all 1.1 million characters 3x faster
    than str.isalnum on each (its \\s is str.isspace)."""
    every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
    alnum = [match.start() for match in _WORD_CHAR.finditer(every)]
    is_alpha = np.frombuffer(bytes(map(str.isalpha, map(chr, alnum))), dtype=np.bool_)
    kind = np.full(0x110000, _RUN, dtype=np.uint8)
    for first, last in _HAN_KANA_RANGES:
        kind[first : last + 1] = _SINGLE
    classes = np.zeros(0x110000, dtype=np.uint8)
    alnum = np.array(alnum)
    classes[alnum] = kind[alnum] + np.where(is_alpha, _ALPHA, 0).astype(np.uint8)
    classes[[match.start() for match in _LETTER_CHAR.finditer(every)]] |= _LETTER
    classes[[match.start() for match in _SPACE_CHAR.finditer(every)]] |= _SPACE
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
    visible = len(text) - sum(len(space) for space in _SPACES.findall(text))
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


class Words(NamedTuple):
    """Where the words of a document are: its code points, their ``_char_classes``, and where each
    word starts and ends (word i is points[starts[i]:ends[i]])."""

    points: np.ndarray
    classes: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def flags(self) -> np.ndarray:
        """Per word, the classes of its characters or'ed together (and those of the separators after
        it, which have no letter or digit bits)."""
        return np.bitwise_or.reduceat(self.classes, self.starts)

    def hashed_keys(self) -> np.ndarray:
        """Per word, a key equal for equal words (different words may share one): a mix of its code
        point sum and first and last code points. Cheaper than numbering the words' strings
        (``Doc.word_keys``), and enough for counts that are only bounds."""
        sums = np.zeros(self.points.size + 1, dtype=np.uint64)
        np.cumsum(self.points, dtype=np.uint64, out=sums[1:])
        mixed = (sums[self.ends] - sums[self.starts]) * _MIX + self.points[self.starts]
        return mixed * _MIX + self.points[self.ends - 1]


def find_words(text: str, cjk: bool) -> Words:
    """The words of ``text``: whitespace tokens (str.split's), or in CJK text each Han or kana
    character and each run of other letters and digits ("2010", "IEEE")."""
    points = code_points(text)
    classes = _char_classes()[points]
    if cjk:
        in_word = (classes & (_SINGLE | _RUN)).astype(np.bool_)
        in_run = (classes & _RUN).astype(np.bool_)
        apart = ~(in_run[1:] & in_run[:-1])
    else:
        in_word = (classes & _SPACE) == 0
        apart = ~(in_word[1:] & in_word[:-1])
    is_start = in_word.copy()
    is_start[1:] &= apart
    is_end = in_word  # in_word is not needed after this
    is_end[:-1] &= apart
    return Words(points, classes, is_start.nonzero()[0], is_end.nonzero()[0] + 1)


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

    def __init__(self, text: str, lang: str | None, cjk: bool, lines: list[str] | None = None):
        """``lines``: ``text.splitlines()`` when the caller already has it (it built ``text`` from them)."""
        self.text = text
        self.lang = lang
        self.cjk = cjk
        if lines is not None:
            self.__dict__["lines"] = lines

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
        return int(np.count_nonzero(_char_classes()[code_points(self.text)] & (_SINGLE | _RUN)))

    @cached
    def lowered(self) -> str:
        return self.text.lower()

    @cached
    def words(self) -> list[str]:
        """Whitespace tokens (space-delimited documents only), for the rules that need the strings."""
        return self.text.split()

    @cached
    def word_spans(self) -> Words:
        return find_words(self.text, self.cjk)

    @cached
    def word_flags(self) -> np.ndarray:
        """``Words.flags``: which classes of characters each word holds."""
        return self.word_spans.flags()

    @cached
    def n_words(self) -> int:
        return self.word_spans.starts.size

    @cached
    def word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    @cached
    def symbol_words(self) -> tuple[int, int]:
        """Words without a letter or digit ("-", "|", "•"), which Gopher does not count as words: how
        many, and their characters. CJK documents have none (their punctuation is no word at all)."""
        if self.cjk:
            return 0, 0
        symbol = (self.word_flags & (_SINGLE | _RUN)) == 0
        return int(np.count_nonzero(symbol)), int(np.add.reduce(self.word_lengths[symbol]))

    @property
    def content_word_count(self) -> int:
        return self.n_words - self.symbol_words[0]

    @cached
    def mean_content_word_length(self) -> float:
        chars = int(self.word_lengths.sum()) - self.symbol_words[1]
        return chars / self.content_word_count if self.content_word_count else 0.0

    @cached
    def alpha_word_count(self) -> int:
        """Words holding at least one letter: a character str.isalpha accepts in CJK documents, one of
        [^\\W\\d_] (which adds numerals such as "²" or "Ⅻ") in space-delimited ones."""
        return int(np.count_nonzero(self.word_flags & (_ALPHA if self.cjk else _LETTER)))

    @cached
    def word_lengths(self) -> np.ndarray:
        return self.word_spans.ends - self.word_spans.starts

    @cached
    def word_keys(self) -> np.ndarray:
        """Each word as an integer, equal for equal words and distinct for different ones: in CJK
        documents the code point of a character word, otherwise the position of the word's last
        occurrence (one dict built in C, no loop over the vocabulary)."""
        if self.cjk:
            spans = self.word_spans
            keys = spans.points[spans.starts].astype(np.uint64)
            is_run = (spans.classes[spans.starts] & _RUN).astype(np.bool_)
            if is_run.any():
                # Runs are few (dozens per document): a dict of their strings numbers them.
                bounds = map(slice, spans.starts[is_run].tolist(), spans.ends[is_run].tolist())
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
        return (self.word_keys + np.uint64(1)) * _MIX

    @cached
    def word_hashes(self) -> np.ndarray:
        """``Words.hashed_keys``: equal for equal words, rarely for different ones."""
        return self.word_spans.hashed_keys()

    def hashed_ngrams(self, n: int, positions: np.ndarray) -> np.ndarray:
        """For the n-gram starting at each of ``positions``, a hash of its ``word_hashes``: equal for
        equal n-grams, and (unlike ``ngram_hashes``) now and then for different ones."""
        hashes = self.word_hashes[positions]
        for k in range(1, n):
            hashes = hashes * _BASE + self.word_hashes[positions + k]
        return hashes

    @cached
    def pair_counts(self) -> np.ndarray:
        """For the pair of words starting at every position (n_words - 1 values), how often it
        occurs in the document, or more: pairs are hashed into bins (four per pair, so few share
        one) and pairs sharing a bin add up. Only ever used as an upper bound, which over-counting
        keeps."""
        keys = self.word_hashes
        pairs = keys[:-1] * _MIX + keys[1:]
        bits = max(12, (4 * pairs.size).bit_length())
        bins = ((pairs * _BASE) >> np.uint64(64 - bits)).astype(np.intp)  # the product's top bits
        return np.bincount(bins)[bins]

    @cached
    def longest_word(self) -> int:
        """Characters in the longest word (0 without words)."""
        return int(np.maximum.reduce(self.word_lengths, initial=0))

    @cached
    def word_offsets(self) -> np.ndarray:
        """Characters in the words before each position (n_words + 1 values): the words of positions
        i..j-1 hold word_offsets[j] - word_offsets[i] characters."""
        offsets = np.zeros(self.n_words + 1, dtype=np.int64)
        self.word_lengths.cumsum(out=offsets[1:])
        return offsets

    def min_counts(self, n: int) -> np.ndarray:
        """For the n-gram (n >= 2) starting at every position, the smallest ``pair_counts`` of the
        n - 1 word pairs in it: an upper bound on how often that n-gram occurs."""
        cache = self.__dict__.get("_min_count_cache")
        if cache is None:
            cache = self._min_count_cache = {2: self.pair_counts}
        if n not in cache:
            # The m-grams at i and at i + n - m cover the n-gram at i when m >= (n + 1) / 2: from the
            # longest m already known, lengthened to 2m - 1 until it is long enough.
            m = max(filter(n.__gt__, cache))
            while 2 * m - 1 < n:
                cache[2 * m - 1] = _min_of_shifted(cache[m], m - 1, self.n_words - 2 * m + 2)
                m = 2 * m - 1
            cache[n] = _min_of_shifted(cache[m], n - m, self.n_words - n + 1)
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


def _min_of_shifted(counts: np.ndarray, shift: int, size: int) -> np.ndarray:
    """The smaller of counts[i] and counts[i + shift] for the first ``size`` (at least 0) positions."""
    size = max(size, 0)
    return np.minimum(counts[:size], counts[shift : shift + size])
