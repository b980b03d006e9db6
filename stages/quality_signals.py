"""Document signals of the quality stage: cheap, explainable, computed for a whole batch at once.

Each signal is one number per document and becomes a column ``quality_<name>``, so a user can see
why a document scored as it did. They are the ones the rules stage thresholds one at a time; here
they are evidence, weighed together with the classifier and the perplexity (``stages/quality.py``).

============== ===================================================================================
signal          meaning (higher is more prose-like, except ``repetition``)
============== ===================================================================================
words           log(1 + words in the whole document); each Chinese/Japanese character is a word
stopwords       share of the window's words that are the language's commonest function words
                (for Chinese, function characters and pronouns: informal prose is rich in them,
                keyword lists, adverts and navigation are not)
punct_lines     share of the window's non-empty lines that end in terminal punctuation
line_length     log(1 + mean characters per non-empty line of the window)
repetition      share of the window's line characters in lines that repeat an earlier line
============== ===================================================================================

The window is the first ``max_chars`` characters, as for the classifier, so the cost per document
is bounded; ``words`` alone covers the whole text (the window's words scaled by the text's bytes), because
how long a page is says much about it. A document with no words gets 0 for the shares and for ``line_length``.

Lines are the window's pieces between ``\n``, trimmed of the whitespace ``pc.utf8_trim_whitespace``
trims; a line ends in terminal punctuation when ``_TERMINAL`` matches it. Both are counted by one
compiled pass over the windows' bytes (``quality_kernels.line_counts``) that reads, per character, a
table those two definitions filled in themselves (``_line_classes``); the stop words are found by one
compiled lookup over the batch's tokens (``quality_lm.StringIndex``). ``tests/test_quality_speed.py``
holds the Arrow passes they replaced and checks that every value is the same.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.utf8 import string_array, utf8_buffers
from stages import quality_kernels
from stages.quality_lm import BLOCK_BITS, StringIndex, Tokens, code_point_strings, ranges

SIGNALS = ("words", "stopwords", "punct_lines", "line_length", "repetition")

_TERMINAL = r"[.!?。！？…\"'”’»)）:：;；]$"

STOP_WORDS = {
    "en": ["the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "was", "with"],
    "de": ["der", "die", "und", "in", "den", "von", "zu", "das", "ist", "nicht"],
    "fr": ["le", "la", "de", "et", "les", "des", "un", "une", "est", "en"],
    "es": ["el", "la", "de", "que", "y", "en", "los", "del", "se", "un"],
    "zh": ["的", "了", "是", "在", "和", "有", "不", "这", "這", "也", "就", "都", "我", "你", "他",
           "她", "们", "們", "个", "個", "说", "說", "没", "沒", "着", "著", "吗", "嗎", "呢", "吧",
           "之", "为", "為", "于", "於", "以", "其", "而", "与", "與"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て", "と", "し", "も", "な"],
}


def compute(text_bytes: np.ndarray, window: pa.Array, tokens: "Tokens", langs: list[str],
            stop_words: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Every signal for every document, as float64 arrays.

    ``text_bytes`` is each (trimmed) text's UTF-8 length and ``window`` its scored window
    (``quality_model.scored_windows`` gives both), ``tokens`` the prepared
    window split into tokens (lower case, punctuation split off, CJK
    characters one token each: ``quality_lm.Tokens``); ``langs`` the documents' languages.
    """
    # Words of the window, scaled by the text's bytes per window byte: counting a 5 MB book's words
    # would cost more than scoring it, and the estimate is exact for every document under the window.
    window_words = tokens.words  # also the stop-word share's denominator
    window_bytes = pc.binary_length(window).to_numpy(zero_copy_only=False).astype(np.float64)
    text_bytes = np.asarray(text_bytes, dtype=np.float64)
    words = window_words * np.where(window_bytes > 0, text_bytes / np.maximum(window_bytes, 1), 0.0)
    return {
        "words": np.log1p(words),
        "stopwords": _stopword_share(tokens, window_words, langs, stop_words),
        **_line_signals(window),
    }


def _stopword_share(tokens: Tokens, n_words: np.ndarray, langs: list[str],
                    stop_words: dict[str, list[str]]) -> np.ndarray:
    """Stop words of the document's language over its word tokens. One hash lookup for the batch:
    every list's words in one set, then a (word, language) table says whose stop word a hit is."""
    vocabulary = sorted({word for words in stop_words.values() for word in words})
    languages = sorted(stop_words)
    table = np.zeros((len(vocabulary), len(languages) + 1), dtype=bool)  # last column: no stop list
    for j, lang in enumerate(languages):
        for word in stop_words[lang]:
            table[vocabulary.index(word), j] = True
    word_row = _string_index(tuple(vocabulary)).find(tokens)  # -1: not a stop word
    hits = np.flatnonzero(word_row >= 0)  # only these can count: a fraction of the tokens
    doc_of_hit = np.searchsorted(tokens.offsets, hits, side="right") - 1
    lang_index = {lang: j for j, lang in enumerate(languages)}
    doc_lang = np.array([lang_index.get(lang, len(languages)) for lang in langs], dtype=np.int64)
    is_stop = table[word_row[hits], doc_lang[doc_of_hit]]
    n_stop = np.bincount(doc_of_hit[is_stop], minlength=len(langs)).astype(np.float64)
    share = np.where(n_words > 0, n_stop / np.maximum(n_words, 1), 0.0)
    return np.where(doc_lang < len(languages), share, np.nan)


@lru_cache(maxsize=8)
def _string_index(strings: tuple[str, ...]) -> StringIndex:
    return StringIndex(pa.array(strings, type=pa.string()))


def trimmed_windows(texts: pa.Array, limits: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Each text's first ``limits[i]`` characters and its UTF-8 length, both once the characters
    ``pc.utf8_trim_whitespace`` trims are cut from its ends (``quality_kernels.trimmed_windows``,
    which looks characters up in the table the line signals read)."""
    offsets, b = utf8_buffers(texts)
    window_offsets, window, text_bytes = _classified(
        quality_kernels.trimmed_windows, b, offsets, np.asarray(limits, dtype=np.int64))
    return string_array(window_offsets, window), text_bytes


def _classified(kernel, *args) -> tuple:
    """``kernel(*args, table, known, block_bits)`` with ``_line_classes``' table, less the ``needed``
    blocks it returns last: a character above U+FFFF of a block not seen before was at the end of a
    line or text, so that block is classified and the kernel runs again (once per block and process)."""
    classes = _line_classes()
    while True:
        *result, needed = kernel(*args, classes.table, classes.known, BLOCK_BITS)
        if not needed.any():
            return tuple(result)
        classes.classify(np.flatnonzero(needed))


def _line_signals(window: pa.Array) -> dict[str, np.ndarray]:
    """punct_lines, line_length and repetition over each window's non-empty lines."""
    offsets, b = utf8_buffers(window)
    n_lines, chars, n_terminal, repeated = _classified(quality_kernels.line_counts, b, offsets)
    n_lines, chars, n_terminal, repeated = (count.astype(np.float64) for count in (n_lines, chars, n_terminal, repeated))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "punct_lines": np.where(n_lines > 0, n_terminal / np.maximum(n_lines, 1), 0.0),
            "line_length": np.log1p(np.where(n_lines > 0, chars / np.maximum(n_lines, 1), 0.0)),
            "repetition": np.where(chars > 0, repeated / np.maximum(chars, 1), 0.0),
        }


@dataclass(frozen=True, eq=False)
class _LineClasses:
    """What ``line_counts`` makes of a character: ``TRIM`` where ``pc.utf8_trim_whitespace`` trims it,
    ``TERMINAL`` where ``_TERMINAL`` matches it alone (the pattern is one character class at the end
    of the text, so it matches a line exactly when it matches the line's last character). Each
    definition runs once per code point: the Basic Multilingual Plane up front, in a few milliseconds,
    a block above it when a line first ends (or starts) with one of its characters (running both over
    all 1.1 million code points takes a third of a second, and a corpus meets few of those blocks)."""

    table: np.ndarray  # uint8 flags by code point, set for the ``known`` blocks
    known: np.ndarray  # bool per block of 2 ** BLOCK_BITS code points

    def classify(self, blocks: np.ndarray) -> None:
        points = ranges(blocks.astype(np.int64) << BLOCK_BITS, np.full(blocks.size, 1 << BLOCK_BITS))
        points = points[(points < 0xD800) | (points >= 0xE000)].astype(np.uint32)  # no surrogates
        chars = code_point_strings(points)
        trimmed = pc.equal(pc.binary_length(pc.utf8_trim_whitespace(chars)), 0).to_numpy(zero_copy_only=False)
        terminal = pc.match_substring_regex(chars, _TERMINAL).to_numpy(zero_copy_only=False)
        self.table[points] = trimmed * quality_kernels.TRIM | terminal * quality_kernels.TERMINAL
        self.known[blocks] = True


@lru_cache(maxsize=None)
def _line_classes() -> _LineClasses:
    classes = _LineClasses(np.zeros(0x110000, dtype=np.uint8), np.zeros(0x110000 >> BLOCK_BITS, dtype=bool))
    classes.classify(np.arange(0x10000 >> BLOCK_BITS))
    return classes
