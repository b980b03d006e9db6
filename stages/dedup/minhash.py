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
turned into spaces. ``text_tokens`` gets the tokens of the simplified texts while simplifying only
the distinct pieces of a batch, not whole texts.
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

from stages.dedup import text

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


def text_tokens(texts: pa.Array, by_chars: bool) -> tuple[np.ndarray, np.ndarray]:
    """``tokens(simplify(texts), by_chars)``, without simplifying every occurrence of every word.

    Texts are cut into pieces at the characters that ``simplify`` maps the same way wherever they
    stand and that never act on their neighbours (no composition, reordering or digit run reaches
    across them): ASCII characters other than letters and digits, which become separators, and,
    when shingling by characters, CJK unified ideographs, which stay tokens of their own. A text's
    tokens are then its pieces' tokens in order, and each distinct piece of the batch is simplified
    once (``_piece_tokens``): pieces repeat (words, numbers), whole texts do not, and ``simplify``
    over whole texts was most of the cost of shingling. ``tests/test_dedup_speed.py`` checks the
    result against ``tokens(simplify(texts))``, with every such character next to every
    combining mark among others.
    """
    offsets, data = text.utf8_buffers(pc.fill_null(texts, ""))
    leads, points = _ideographs(data) if by_chars else (np.zeros(0, np.int64), np.zeros(0, np.uint32))
    ideograph = np.zeros(len(data), dtype=bool)
    for i in range(3):  # every ideograph is three bytes long
        ideograph[leads + i] = True
    inside = ~(_CUT_BYTES[data] | ideograph)
    starts, ends = _runs(inside, offsets)
    encoded = pc.dictionary_encode(_string_array(np.concatenate([[0], np.cumsum(ends - starts)]), data[inside]))
    pool, first, size = _piece_tokens(encoded.dictionary, by_chars)
    # Items in text order, each a slice of `pool`: every piece (its distinct form's tokens) and,
    # by characters, every run of ideographs (one token each, appended to `pool`).
    distinct = encoded.indices.to_numpy()
    position, source, size = starts, first[distinct], size[distinct]
    if by_chars:
        run_starts, run_ends = _runs(ideograph, offsets)
        run_source = len(pool) + np.searchsorted(leads, run_starts)
        pool = np.concatenate([pool, _char_hashes(points)])
        # Merge two sorted lists of items: each item's place is its rank in its own list plus
        # the number of items of the other list before it.
        place = np.arange(len(starts)) + np.searchsorted(run_starts, starts)
        run_place = np.arange(len(run_starts)) + np.searchsorted(starts, run_starts)
        position, source, size = (_merge(place, a, run_place, b) for a, b in (
            (starts, run_starts), (source, run_source), (size, (run_ends - run_starts) // 3)))
    ends_of_items = np.cumsum(size)
    shift = np.repeat(source - (ends_of_items - size), size)
    token_hashes = pool[np.arange(len(shift)) + shift]
    counts = np.diff(np.concatenate([[0], ends_of_items])[np.searchsorted(position, offsets)])
    return token_hashes, counts.astype(np.int64)


# Bytes that cut a text into pieces and are no part of any token: ASCII other than letters and
# digits. Each is a starter with no decomposition and is never the second character of a
# composition; `<`, `=` and `>` are the first of one only with U+0338, a nonspacing mark that
# `simplify` removes before it recomposes. Every one of them simplifies to a separator.
_CUT_BYTES = np.zeros(256, dtype=bool)
_CUT_BYTES[:0x80] = [not chr(byte).isalnum() for byte in range(0x80)]
# CJK Unified Ideographs and Extension A: no decomposition, never composed with anything, no case,
# letters (category Lo): in every Unicode version each simplifies to itself wherever it stands.
IDEOGRAPHS = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF))
# What `simplify` makes of an ASCII letter or digit: lowercase; every digit 0 (a run of them is one).
_ASCII_FOLDED = np.arange(256, dtype=np.uint8)
_ASCII_FOLDED[ord("A"):ord("Z") + 1] += ord("a") - ord("A")
_ASCII_FOLDED[ord("0"):ord("9") + 1] = ord("0")


def _piece_tokens(pieces: pa.Array, by_chars: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens of distinct pieces: a pool of token hashes, and where each piece's tokens start in
    it and how many there are. A piece of ASCII letters and digits only (most, in most languages)
    is folded here with a lookup table; the others go through ``simplify``."""
    offsets, data = text.utf8_buffers(pieces)
    high = np.flatnonzero(data >= 0x80)
    plain = np.searchsorted(high, offsets[1:]) == np.searchsorted(high, offsets[:-1])
    digit = (data >= ord("0")) & (data <= ord("9"))
    repeated = np.zeros(len(data), dtype=bool)
    repeated[1:] = digit[1:] & digit[:-1]
    repeated[offsets[:-1][offsets[:-1] < len(data)]] = False
    keep = np.repeat(plain, np.diff(offsets)) & ~repeated
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])[offsets]
    folded = _ASCII_FOLDED[data[keep]]  # the plain pieces' tokens, back to back
    rest = np.flatnonzero(~plain)
    simplified = simplify(pieces.take(pa.array(rest, pa.int64())))
    size = np.empty(len(pieces), dtype=np.int64)
    if by_chars:
        size[plain] = np.diff(kept_before)[plain]
        plain_hashes = _char_hashes(folded.astype(np.uint32))
        rest_hashes, size[rest] = _char_tokens(simplified)
    else:
        size[plain] = 1
        plain_words = _string_array(np.concatenate([kept_before[:-1][plain], [len(folded)]]), folded)
        rest_words, size[rest] = _words(simplified)
        hashes = _hash_distinct(pa.concat_arrays([plain_words, rest_words.cast(plain_words.type)]))
        plain_hashes, rest_hashes = hashes[:len(plain_words)], hashes[len(plain_words):]
    pool = np.concatenate([plain_hashes, rest_hashes])
    first = np.empty(len(pieces), dtype=np.int64)
    first[plain] = np.cumsum(size[plain]) - size[plain]
    first[rest] = len(plain_hashes) + np.cumsum(size[rest]) - size[rest]
    return pool, first, size


def _merge(place: np.ndarray, values: np.ndarray, other_place: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``values`` and ``other`` in one array, each value at its ``place``."""
    merged = np.empty(len(place) + len(other_place), dtype=np.result_type(values, other))
    merged[place], merged[other_place] = values, other
    return merged


def _runs(inside: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of every maximal run of ``inside`` bytes that does not cross a text
    boundary (``offsets``: where each text starts, then the end of the last)."""
    nonempty = offsets[:-1] < offsets[1:]
    before = np.zeros(len(inside), dtype=bool)
    before[1:] = inside[:-1]
    before[offsets[:-1][nonempty]] = False
    after = np.zeros(len(inside), dtype=bool)
    after[:-1] = inside[1:]
    after[offsets[1:][nonempty] - 1] = False
    return np.flatnonzero(inside & ~before), np.flatnonzero(inside & ~after) + 1


def _string_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A string array of ``len(offsets) - 1`` strings over UTF-8 ``data``."""
    large = offsets[-1] >= 2**31
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(offsets) - 1, [
        None, pa.py_buffer(offsets.astype(np.int64 if large else np.int32)), pa.py_buffer(data)])


def _three_byte_code_points(data: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The code points of the three-byte UTF-8 characters that start at ``leads``."""
    b0, b1, b2 = (data[leads + i].astype(np.uint32) for i in range(3))
    return (b0 & 0x0F) << 12 | (b1 & 0x3F) << 6 | (b2 & 0x3F)


def _ideographs(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each character of ``IDEOGRAPHS`` starts in UTF-8 ``data`` (its lead byte is E3-E9),
    and its code point."""
    leads = np.flatnonzero((data >= 0xE3) & (data <= 0xE9))
    points = _three_byte_code_points(data, leads)
    wanted = np.any([(points >= low) & (points <= high) for low, high in IDEOGRAPHS], axis=0)
    return leads[wanted], points[wanted]


def _words(simplified: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The words of simplified texts, concatenated, and the number of words per text."""
    words = pc.utf8_split_whitespace(pc.fill_null(simplified, ""))
    flat = pc.list_flatten(words)
    parents = pc.list_parent_indices(words).to_numpy()
    nonempty = pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False)
    return pc.filter(flat, pa.array(nonempty)), np.bincount(parents[nonempty], minlength=len(simplified))


def _word_tokens(simplified: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    words, counts = _words(simplified)
    return _hash_distinct(words), counts


def _hash_distinct(words: pa.Array) -> np.ndarray:
    """Hash each distinct token once: a batch repeats its common words thousands of times."""
    if len(words) == 0:
        return np.zeros(0, dtype=_U64)
    encoded = pc.dictionary_encode(words).combine_chunks() if isinstance(words, pa.ChunkedArray) \
        else pc.dictionary_encode(words)
    return text.digests(encoded.dictionary)[encoded.indices.to_numpy()]


def _char_tokens(simplified: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    squeezed = pc.replace_substring(pc.fill_null(simplified, ""), " ", "")
    counts = pc.utf8_length(squeezed).to_numpy().astype(np.int64)
    # All texts' characters at once, decoded from their UTF-8 bytes, which lie back to back.
    utf8 = text.utf8_buffers(squeezed)[1].tobytes()
    return _char_hashes(np.frombuffer(utf8.decode("utf-8").encode("utf-32-le"), np.uint32)), counts


# token_hash of every code point seen so far by this process, indexed by code point. np.zeros takes
# its pages from the OS untouched, so only the pages of scripts actually seen take memory (a few
# hundred KB for Chinese text), and each character is hashed once per process, not once per batch.
_CHAR_HASHES = np.zeros(0x110000, dtype=_U64)
_CHAR_KNOWN = np.zeros(0x110000, dtype=bool)


def _char_hashes(points: np.ndarray) -> np.ndarray:
    """``token_hash(chr(p))`` for each code point ``p``."""
    new = np.unique(points[~_CHAR_KNOWN[points]])
    if len(new):
        _CHAR_HASHES[new] = np.fromiter((token_hash(chr(point)) for point in new.tolist()), dtype=_U64, count=len(new))
        _CHAR_KNOWN[new] = True
    return _CHAR_HASHES[points]


def shingles(token_hashes: np.ndarray, counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every n-gram of every document, and the number of n-grams per document.

    A document with fewer than ``n`` tokens (but at least one) is a single shingle of all of them,
    so short documents still have a signature; a document without tokens has none.
    """
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-gram size must be in 1..{MAX_NGRAM}, got {n}")
    per_doc = np.where(counts > 0, np.maximum(counts - n + 1, 1), 0)
    owner = np.repeat(np.arange(len(counts)), per_doc)
    starts = (np.cumsum(counts) - counts)[owner] + np.arange(len(owner)) - (np.cumsum(per_doc) - per_doc)[owner]
    # Every run of n consecutive tokens, computed on contiguous slices; those that straddle two
    # documents are computed too and never picked.
    windows = np.zeros(max(len(token_hashes) - n + 1, 0), dtype=_U64)
    with np.errstate(over="ignore"):
        for position in range(n):
            windows += token_hashes[position:position + len(windows)] * POSITION_MULTIPLIERS[position]
        total = np.empty(len(owner), dtype=_U64)
        full = counts[owner] >= n
        total[full] = windows[starts[full]]
        short = np.flatnonzero(~full)  # the one shingle of a document with fewer than n tokens
        width, first = counts[owner[short]], starts[short]
        partial = np.zeros(len(short), dtype=_U64)
        for position in range(n - 1):
            inside = position < width
            values = token_hashes[np.where(inside, first + position, first)]
            partial += np.where(inside, values * POSITION_MULTIPLIERS[position], _U64(0))
        total[short] = partial
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
