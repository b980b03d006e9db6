"""MinHash signatures identical to datasketch's, computed for a whole batch of documents with numpy.

datasketch (2.0, scheme ``affine32``) defines a signature as: hash every shingle to 32 bits with
``hashfunc``, pre-mix it with the MurmurHash3 finalizer, apply ``a_k * h + b_k mod 2^32`` for each
of ``num_perm`` permutations drawn from ``RandomState(seed)``, and keep the minimum per permutation.
``MinHasher`` does exactly that (the permutations and the finalizer are taken from datasketch itself),
on a matrix of shingles rather than one shingle at a time. Its ``hashfunc`` is ``shingle_hash``:
word tokens (or characters, for languages written without spaces) are hashed once per distinct
token with BLAKE2b, and an n-gram's hash combines its tokens' hashes with a position-dependent
multiply-add, so no n-gram string is ever built. ``tests/test_dedup.py`` checks the signatures
against ``datasketch.MinHash(hashfunc=shingle_hash)`` bit for bit.

Text is simplified before shingling, as datatrove does for MinHash: compatibility and diacritics
folded, lowercased, digit runs replaced by ``0``, punctuation, symbols and control characters
turned into spaces.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from datasketch.minhash import _fmix

# Scripts written without spaces between words: their documents are shingled by characters.
CHAR_SCRIPTS = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}]"
# Without a `lang` column, a document is shingled by characters when at least this share of its
# non-whitespace characters are in CHAR_SCRIPTS (Chinese prose is ~0.8 even with Latin names and
# numbers mixed in). Whitespace is left out of the share: shingles ignore it, so a copy that only
# re-indents or re-spaces a page must be shingled the way its original is.
CHAR_SCRIPT_SHARE = 0.3
# Shingles permuted at once: the (num_perm x shingles) uint32 block (4 MB at 128) stays in cache.
SHINGLE_CHUNK = 8192
MAX_NGRAM = 64
_U64 = np.uint64


def _position_multipliers(count: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per position in an n-gram, so that n-grams are order-sensitive."""
    return _fmix(np.arange(1, count + 1, dtype=_U64), 64) | _U64(1)


POSITION_MULTIPLIERS = _position_multipliers(MAX_NGRAM)


def simplify(texts: pa.Array) -> pa.Array:
    """The text MinHash sees: folded, lowercased, digits as 0, punctuation and symbols as spaces."""
    folded = pc.utf8_normalize(texts, "NFKD")
    folded = pc.utf8_normalize(pc.replace_substring_regex(folded, r"\p{Mn}+", ""), "NFC")
    lowered = pc.replace_substring_regex(pc.utf8_lower(folded), r"\p{Nd}+", "0")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"[\p{P}\p{S}\p{Z}\p{C}\s]+", " "))


def char_shingled(texts: pa.Array, langs: pa.Array | None, char_langs: tuple[str, ...]) -> np.ndarray:
    """Which documents are shingled by characters: by `lang` (its base, ``zh-Hant`` -> ``zh``) when
    the column exists, else by the share of non-whitespace characters in scripts written without
    spaces."""
    if langs is not None:
        base = pc.utf8_lower(pc.fill_null(pc.replace_substring_regex(langs, r"[-_].*$", ""), ""))
        return pc.is_in(base, value_set=pa.array(char_langs, pa.string())).to_numpy(zero_copy_only=False)
    script_chars = pc.fill_null(pc.count_substring_regex(texts, CHAR_SCRIPTS), 0).to_numpy()
    visible = pc.replace_substring_regex(pc.fill_null(texts, ""), r"\s+", "")
    lengths = np.maximum(pc.utf8_length(visible).to_numpy(), 1)
    return script_chars / lengths >= CHAR_SCRIPT_SHARE


def token_hash(token: str) -> int:
    """The 64-bit hash of one token (a word, or a single character)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


def shingle_hash(tokens: tuple[str, ...]) -> int:
    """The 32-bit hash of one shingle (a tuple of tokens): the reference ``MinHasher`` reproduces."""
    total = 0
    for position, token in enumerate(tokens):
        total = (total + token_hash(token) * int(POSITION_MULTIPLIERS[position])) & 0xFFFFFFFFFFFFFFFF
    return int(_fmix(np.array([total], dtype=_U64), 64)[0] >> _U64(32))


def tokens(simplified: pa.Array, by_chars: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of simplified texts, concatenated, and the number of tokens per text."""
    if by_chars:
        return _char_tokens(simplified)
    return _word_tokens(simplified)


def _word_tokens(simplified: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    words = pc.utf8_split_whitespace(pc.fill_null(simplified, ""))
    flat = pc.list_flatten(words)
    parents = pc.list_parent_indices(words).to_numpy()
    nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    counts = np.bincount(parents[nonempty], minlength=len(simplified))
    return _hash_distinct(pc.filter(flat, pa.array(nonempty))), counts


def _hash_distinct(words: pa.Array) -> np.ndarray:
    """Hash each distinct token once: a batch repeats its common words thousands of times."""
    if len(words) == 0:
        return np.zeros(0, dtype=_U64)
    encoded = pc.dictionary_encode(words).combine_chunks() if isinstance(words, pa.ChunkedArray) \
        else pc.dictionary_encode(words)
    distinct = np.fromiter((token_hash(w) for w in encoded.dictionary.to_pylist()), dtype=_U64)
    return distinct[encoded.indices.to_numpy()]


def _char_tokens(simplified: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    squeezed = pc.replace_substring(pc.fill_null(simplified, ""), " ", "").to_pylist()
    points = [np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) for text in squeezed]
    counts = np.array([len(p) for p in points], dtype=np.int64)
    if not counts.sum():
        return np.zeros(0, dtype=_U64), counts
    distinct, inverse = np.unique(np.concatenate(points), return_inverse=True)
    hashes = np.fromiter((token_hash(chr(point)) for point in distinct.tolist()), dtype=_U64)
    return hashes[inverse], counts


def shingles(token_hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every n-gram of every document, and the number of n-grams per document.

    A document with fewer than ``n`` tokens (but at least one) is a single shingle of all of them,
    so short documents still have a signature; a document without tokens has none.
    """
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-gram size must be in 1..{MAX_NGRAM}, got {n}")
    per_doc = np.where(counts > 0, np.maximum(counts - n + 1, 1), 0)
    doc_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(len(counts)), per_doc)
    first_shingle = np.concatenate([[0], np.cumsum(per_doc)[:-1]]).astype(np.int64)
    starts = doc_starts[owner] + (np.arange(len(owner)) - first_shingle[owner])
    width = np.minimum(counts[owner], n)
    total = np.zeros(len(owner), dtype=_U64)
    with np.errstate(over="ignore"):
        for position in range(n):
            inside = position < width
            values = token_hashes[np.where(inside, starts + position, 0)] if len(token_hashes) else total
            total += np.where(inside, values * POSITION_MULTIPLIERS[position], _U64(0))
    return (_fmix(total, 64) >> _U64(32)).astype(np.uint32), per_doc


class MinHasher:
    """datasketch's affine32 MinHash for many documents at once."""

    def __init__(self, num_perm: int, seed: int):
        self.num_perm = num_perm
        self.a, self.b = MinHash(num_perm=num_perm, seed=seed).permutations

    def signatures(self, shingle_values: np.ndarray, per_doc: np.ndarray) -> np.ndarray:
        """A (documents x num_perm) uint32 matrix; rows of documents without shingles are all
        0xFFFFFFFF, datasketch's empty MinHash."""
        signatures = np.full((len(per_doc), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        owner = np.repeat(np.arange(len(per_doc)), per_doc)
        mixed = _fmix(shingle_values.astype(np.uint32), 32)
        block = np.empty((self.num_perm, SHINGLE_CHUNK), dtype=np.uint32)
        for begin in range(0, len(mixed), SHINGLE_CHUNK):
            chunk_owner = owner[begin:begin + SHINGLE_CHUNK]
            permuted = block[:, :len(chunk_owner)]
            # Permutations along rows, shingles along columns: the min-reduction then runs over
            # contiguous memory, several times faster than the transposed layout.
            np.multiply(self.a[:, None], mixed[None, begin:begin + SHINGLE_CHUNK], out=permuted)
            np.add(permuted, self.b[:, None], out=permuted)
            boundaries = np.flatnonzero(np.diff(chunk_owner, prepend=-1))
            docs = chunk_owner[boundaries]
            # A document can straddle two chunks: fold the chunk's minimum into what it had.
            chunk_min = np.minimum.reduceat(permuted, boundaries, axis=1).T
            signatures[docs] = np.minimum(signatures[docs], chunk_min)
        return signatures


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """Bands and rows for a Jaccard threshold, exactly as ``datasketch.MinHashLSH`` picks them with
    ``weights=(1 - false_negative_weight, false_negative_weight)``."""
    return _optimal_param(threshold, num_perm, 1 - false_negative_weight, false_negative_weight)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A (documents x bands) uint64 matrix: one 64-bit key per band of ``rows`` signature values.
    Two documents share a key in a band when (barring a 2^-64 collision) their rows are equal."""
    keys = np.zeros((len(signatures), bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            column = signatures[:, row:bands * rows:rows].astype(_U64)
            keys += column * POSITION_MULTIPLIERS[row]
    return _fmix(keys, 64)
