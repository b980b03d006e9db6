"""Document signals of the quality stage: cheap, explainable, computed for a whole batch in Arrow.

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
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from stages.quality_lm import Tokens

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


def compute(texts: pa.Array, window: pa.Array, tokens: "Tokens", langs: list[str],
            stop_words: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Every signal for every document, as float64 arrays.

    ``window`` is each text's scored window (``quality_model.window``), ``tokens`` the prepared
    window split into tokens (lower case, punctuation split off, CJK
    characters one token each: ``quality_lm.Tokens``); ``langs`` the documents' languages.
    """
    # Words of the window, scaled by the text's bytes per window byte: counting a 5 MB book's words
    # would cost more than scoring it, and the estimate is exact for every document under the window.
    window_words = tokens.words  # also the stop-word share's denominator
    window_bytes = pc.binary_length(window).to_numpy(zero_copy_only=False).astype(np.float64)
    text_bytes = pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.float64)
    words = window_words * np.where(window_bytes > 0, text_bytes / np.maximum(window_bytes, 1), 0.0)
    return {
        "words": np.log1p(words),
        "stopwords": _stopword_share(tokens, window_words, langs, stop_words),
        **_line_signals(window),
    }


def _stopword_share(tokens: "Tokens", n_words: np.ndarray, langs: list[str],
                    stop_words: dict[str, list[str]]) -> np.ndarray:
    """Stop words of the document's language over its word tokens. One hash lookup for the batch:
    every list's words in one set, then a (word, language) table says whose stop word a hit is."""
    vocabulary = sorted({word for words in stop_words.values() for word in words})
    languages = sorted(stop_words)
    table = np.zeros((len(vocabulary), len(languages) + 1), dtype=bool)  # last column: no stop list
    for j, lang in enumerate(languages):
        for word in stop_words[lang]:
            table[vocabulary.index(word), j] = True
    found = pc.index_in(tokens.flat, value_set=pa.array(vocabulary, type=pa.string()))
    word_row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(word_row >= 0)  # only these can count: a fraction of the tokens
    doc_of_hit = np.searchsorted(tokens.offsets, hits, side="right") - 1
    lang_index = {lang: j for j, lang in enumerate(languages)}
    doc_lang = np.array([lang_index.get(lang, len(languages)) for lang in langs], dtype=np.int64)
    is_stop = table[word_row[hits], doc_lang[doc_of_hit]]
    n_stop = np.bincount(doc_of_hit[is_stop], minlength=len(langs)).astype(np.float64)
    share = np.where(n_words > 0, n_stop / np.maximum(n_words, 1), 0.0)
    return np.where(doc_lang < len(languages), share, np.nan)


def _line_signals(window: pa.Array) -> dict[str, np.ndarray]:
    """punct_lines, line_length and repetition over each window's non-empty lines."""
    n_docs = len(window)
    split = pc.split_pattern(window, "\n")
    offsets = split.offsets.to_numpy().astype(np.int64) - split.offsets[0].as_py()
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    lines = pc.utf8_trim_whitespace(split.flatten())
    length = pc.utf8_length(lines).to_numpy(zero_copy_only=False).astype(np.float64)
    nonblank = length > 0
    terminal = pc.match_substring_regex(lines, _TERMINAL).to_numpy(zero_copy_only=False) & nonblank
    n_lines = np.bincount(doc_of, weights=nonblank, minlength=n_docs)
    chars = np.bincount(doc_of, weights=length, minlength=n_docs)
    n_terminal = np.bincount(doc_of, weights=terminal, minlength=n_docs)
    repeated = _repeated_chars(doc_of[nonblank], lines.filter(pa.array(nonblank)), length[nonblank], n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "punct_lines": np.where(n_lines > 0, n_terminal / np.maximum(n_lines, 1), 0.0),
            "line_length": np.log1p(np.where(n_lines > 0, chars / np.maximum(n_lines, 1), 0.0)),
            "repetition": np.where(chars > 0, repeated / np.maximum(chars, 1), 0.0),
        }


def _repeated_chars(doc_of: np.ndarray, lines: pa.Array, length: np.ndarray, n_docs: int) -> np.ndarray:
    """Characters, per document, in lines that repeat an earlier line of the same document."""
    if len(lines) == 0:
        return np.zeros(n_docs)
    # One hash pass gives each distinct line a number; (document, number) pairs then repeat exactly
    # where a document repeats a line.
    codes = pc.dictionary_encode(lines).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = doc_of.astype(np.int64) * (int(codes.max()) + 1) + codes
    _, first = np.unique(pairs, return_index=True)
    repeat = np.ones(len(pairs), dtype=bool)
    repeat[first] = False
    return np.bincount(doc_of, weights=length * repeat, minlength=n_docs)
