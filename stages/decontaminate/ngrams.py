"""N-grams of normalised text, as 64-bit hashes, vectorised over a batch (Arrow + numpy).

Two token streams per text, hashed independently (different seeds, so they never collide):

- **words**: maximal runs of letters and digits (Unicode categories L* and N*) that are not CJK,
  each NFKC-normalised and lowercased. Punctuation, whitespace, ``_`` and markup separate words,
  so a copy that differs only in case, spacing, line wrapping or punctuation gives the same words
  (GPT-3's and LLaMA's 13-gram decontamination normalise the same way).
- **cjk**: the Han, Hiragana and Katakana characters of the text, in order, everything else left
  out (so punctuation, spaces, digits and Latin words between them do not break an n-gram).

A word n-gram is ``n`` consecutive words of one text; a CJK n-gram is ``n`` consecutive CJK
characters of one text. The hash of an n-gram is a polynomial (mod 2^64) over its tokens' 64-bit
hashes, finished by splitmix64; it is the same in the driver (index build) and in every worker
(lookups) because it depends only on BLAKE2b of the token bytes, never on Python's ``hash``.

``spans`` recovers, for one text, where each token is (character offsets into the original text),
so a match can be reported as the text of the n-gram and cut out. It tokenises with the same Arrow
functions and then locates each token with ``str.find`` from the previous one, so its tokens are
exactly those the vectorised path hashed. It is only run on texts that matched (rare).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.unicode_fold import nfkc_lower

# Han (CJK unified ideographs, extension A, compatibility), Hiragana, Katakana (with phonetic
# extensions and half-width forms), iteration marks. Spelled as explicit ranges so RE2 (Arrow)
# and Python's re agree on them exactly.
_CJK_RANGES = [(0x3005, 0x3007), (0x3040, 0x309F), (0x30A0, 0x30FF), (0x31F0, 0x31FF),
               (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F),
               (0x20000, 0x2FA1F)]
_RE2_CJK = "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _CJK_RANGES)
_PY_CJK = "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES)
WORD_SEPARATOR = f"(?:[^\\pL\\pN]|[{_RE2_CJK}])+"  # what is not a word character (RE2)
NOT_CJK = f"[^{_RE2_CJK}]+"
PY_CJK_CHAR = re.compile(f"[{_PY_CJK}]")

WORD_SEED = np.uint64(0x9E3779B97F4A7C15)
CJK_SEED = np.uint64(0xC2B2AE3D27D4EB4F)
_P = np.uint64(0x100000001B3 * 2 + 1)  # odd multiplier of the polynomial
STREAMS = ("words", "cjk")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _token_digests(tokens: list[str]) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                        for t in tokens), dtype=np.uint64, count=len(tokens))


def normalise_tokens(tokens: pa.Array) -> pa.Array:
    """NFKC, then lowercase: full-width letters and ligatures become their plain forms."""
    return nfkc_lower(tokens)


def word_tokens(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(raw word tokens of every text, flattened; the text index of each), in text order."""
    lists = pc.split_pattern_regex(pc.fill_null(texts, ""), WORD_SEPARATOR)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    keep = pc.greater(pc.binary_length(flat), 0)
    return flat.filter(keep), parents.filter(keep).to_numpy().astype(np.int64)


def cjk_strings(texts: pa.Array) -> pa.Array:
    """Each text reduced to its CJK characters."""
    return pc.replace_substring_regex(pc.fill_null(texts, ""), NOT_CJK, "")


def word_hashes(tokens: pa.Array) -> np.ndarray:
    """64-bit hash of each normalised word token (each distinct token hashed once)."""
    if len(tokens) == 0:
        return np.zeros(0, np.uint64)
    encoded = pc.dictionary_encode(normalise_tokens(tokens))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    digests = _token_digests(encoded.dictionary.to_pylist()) ^ WORD_SEED
    return digests[encoded.indices.to_numpy(zero_copy_only=False)]


def cjk_hashes(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every CJK character of every string, the string index of each)."""
    values = [s or "" for s in strings.to_pylist()]
    points = np.frombuffer("".join(values).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    lengths = np.fromiter((len(s) for s in values), dtype=np.int64, count=len(values))
    return _splitmix64(points ^ CJK_SEED), np.repeat(np.arange(len(values), dtype=np.int64), lengths)


def rolling(tokens: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every run of ``n`` consecutive tokens with one owner (no n-gram spans two texts):
    (hash, owner, position of its first token in ``tokens``)."""
    count = len(tokens) - n + 1
    if count <= 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, np.uint64), empty, empty
    h = np.zeros(count, np.uint64)
    for k in range(n):  # n vector multiply-adds over the whole batch; uint64 wraps mod 2^64
        h = h * _P + tokens[k:k + count]
    valid = owner[:count] == owner[n - 1:]
    starts = np.flatnonzero(valid)
    return _splitmix64(h[valid]), owner[:count][valid], starts


@dataclass
class NGrams:
    """Every n-gram of a batch of texts: its hash, its text, its stream (0 words, 1 cjk) and the
    position of its first token in that stream's tokens of the batch."""

    hash: np.ndarray
    text: np.ndarray
    stream: np.ndarray
    start: np.ndarray


def ngrams(texts: pa.Array, word_n: int, cjk_n: int) -> NGrams:
    """Word n-grams and CJK character n-grams of every text of a batch."""
    tokens, owner = word_tokens(texts)
    wh, wt, ws = rolling(word_hashes(tokens), owner, word_n)
    ch, ct, cs = rolling(*cjk_hashes(cjk_strings(texts)), cjk_n)
    return NGrams(np.concatenate([wh, ch]), np.concatenate([wt, ct]),
                  np.concatenate([np.zeros(len(wh), np.int8), np.ones(len(ch), np.int8)]),
                  np.concatenate([ws, cs]))


@dataclass
class TokenSpans:
    """The tokens of one text with their character offsets: per stream, normalised token strings
    and (start, end) offsets into the original text."""

    words: list[str]
    word_spans: list[tuple[int, int]]
    cjk: list[str]
    cjk_spans: list[tuple[int, int]]


def spans(text: str) -> TokenSpans:
    """Where each token of ``text`` is (see the module docstring)."""
    raw, _ = word_tokens(pa.array([text], pa.string()))
    words = raw.to_pylist()
    word_spans, position = [], 0
    for word in words:
        start = text.find(word, position)
        position = start + len(word)
        word_spans.append((start, position))
    cjk = [(m.group(), m.start()) for m in PY_CJK_CHAR.finditer(text)]
    return TokenSpans(normalise_tokens(raw).to_pylist() if words else [], word_spans,
                      [c for c, _ in cjk], [(s, s + len(c)) for c, s in cjk])


def text_hashes(text: str, word_n: int, cjk_n: int, tokens: TokenSpans) -> dict[int, list[tuple[int, int]]]:
    """For one text: stream -> list of (hash, first token position) of its n-grams, computed from
    ``tokens`` (same hashes as ``ngrams``)."""
    out = {}
    wh = _token_digests(tokens.words) ^ WORD_SEED if tokens.words else np.zeros(0, np.uint64)
    h, _, s = rolling(wh, np.zeros(len(wh), np.int64), word_n)
    out[0] = list(zip(h.tolist(), s.tolist()))
    cp = np.array([ord(c) for c in tokens.cjk], dtype=np.uint64)
    h, _, s = rolling(_splitmix64(cp ^ CJK_SEED), np.zeros(len(cp), np.int64), cjk_n)
    out[1] = list(zip(h.tolist(), s.tolist()))
    return out
