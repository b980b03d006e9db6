"""MinHash signatures identical to datasketch's, computed for a whole batch of documents at once.

datasketch (2.0, scheme ``affine32``) defines a signature as: hash every shingle to 32 bits with
``hashfunc``, pre-mix it with the MurmurHash3 finalizer, apply ``a_k * h + b_k mod 2^32`` for each
of ``num_perm`` permutations drawn from ``RandomState(seed)``, and keep the minimum per permutation.
``MinHasher`` does exactly that in one compiled loop over all shingles of a batch. The permutations
and the finalizer are datasketch's, written out here (``affine32_permutations``, ``fmix64``,
``kernels.FMIX_CONSTANTS``): importing any part of datasketch imports its LSH module and
scipy.integrate with it, 0.2 s in every worker; the tests compare them with datasketch's own. Its
``hashfunc`` is ``shingle_hash``: word tokens (or characters, for languages written without spaces)
are hashed with BLAKE2b, once per distinct piece of text they come from, and an n-gram's hash
combines its tokens' hashes with a position-dependent multiply-add, so no n-gram string is ever
built. ``tests/test_dedup.py`` checks the signatures against
``datasketch.MinHash(hashfunc=shingle_hash)`` bit for bit.

Text is simplified before shingling, as datatrove does for MinHash: compatibility and diacritics
folded, lowercased, digit runs replaced by ``0``, punctuation, symbols and control characters
turned into spaces. ``text_tokens`` gets the tokens of the simplified texts while simplifying only
the distinct pieces of a batch, not whole texts. Cutting, hashing and shingling run in
``stages.dedup.kernels``; this module keeps the definitions they are tested against.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.utf8 import string_array, utf8_buffers
from stages.dedup import kernels

# Scripts written without spaces between words: their documents are shingled by characters.
CHAR_SCRIPTS = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}]"
# Without a `lang` column, a document is shingled by characters when at least this share of its
# non-whitespace characters are in CHAR_SCRIPTS (Chinese prose is ~0.8 even with Latin names and
# numbers mixed in). Whitespace is left out of the share: shingles ignore it, so a copy that only
# re-indents or re-spaces a page must be shingled the way its original is.
CHAR_SCRIPT_SHARE = 0.3
MAX_NGRAM = 64
_U64 = np.uint64


_FMIX64 = tuple(_U64(c) for c in kernels.FMIX_CONSTANTS[64])


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer of each value (datasketch's ``_fmix(values, 64)``); products wrap."""
    s1, m1, s2, m2, s3 = _FMIX64
    values = values ^ (values >> s1)
    values = values * m1
    values = values ^ (values >> s2)
    values = values * m2
    return values ^ (values >> s3)


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``datasketch.MinHash(num_perm, seed=seed).permutations`` in its default scheme, affine32: odd
    multipliers ``a`` and offsets ``b`` (uint32), drawn from ``RandomState(seed)`` as datasketch draws them."""
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def _position_multipliers(count: int) -> np.ndarray:
    """Odd 64-bit multipliers, one per position in an n-gram, so that n-grams are order-sensitive."""
    return fmix64(np.arange(1, count + 1, dtype=_U64)) | _U64(1)


POSITION_MULTIPLIERS = _position_multipliers(MAX_NGRAM)


# What ``simplify`` removes (nonspacing marks), makes 0 (runs of digits) and makes a space (runs
# of punctuation, symbols, separators, control characters and whitespace), as RE2 classes.
MARKS, DIGITS, SEPARATORS = r"\p{Mn}", r"\p{Nd}", r"[\p{P}\p{S}\p{Z}\p{C}\s]"


def simplify(texts: pa.Array) -> pa.Array:
    """The text MinHash sees: folded, lowercased, digits as 0, punctuation and symbols as spaces."""
    folded = pc.utf8_normalize(texts, "NFKD")
    folded = pc.utf8_normalize(pc.replace_substring_regex(folded, MARKS + "+", ""), "NFC")
    lowered = pc.replace_substring_regex(pc.utf8_lower(folded), DIGITS + "+", "0")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, SEPARATORS + "+", " "))


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
    return int(fmix64(np.array([total], dtype=_U64))[0] >> _U64(32))


def tokens(simplified: pa.Array, by_chars: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token hashes of simplified texts, concatenated, and the number of tokens per text: by words,
    the ``token_hash`` of each piece between whitespace; by characters, of each character but spaces."""
    offsets, data = utf8_buffers(pc.fill_null(simplified, ""))
    if by_chars:
        points, counts = kernels.code_points(data, offsets[:-1], offsets[1:], False)
        return _char_hashes(points), counts
    return kernels.word_hashes(data, offsets[:-1], offsets[1:], False)


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
    offsets, data = utf8_buffers(pc.fill_null(texts, ""))
    items, text_items, piece_data, piece_offsets, plain = kernels.pieces(data, offsets, _CUT_BYTES, by_chars)
    piece_data.setflags(write=False)  # as utf8_buffers' are: one array type for the kernels to compile for
    pool, first, size = _piece_tokens(piece_data, piece_offsets, plain, by_chars)
    ideographs = _char_hashes((-1 - items[items < 0]).astype(np.uint32))
    return kernels.assemble(items, text_items, first, size, pool, ideographs)


# Bytes that cut a text into pieces and are no part of any token: ASCII other than letters and
# digits. Each is a starter with no decomposition and is never the second character of a
# composition; `<`, `=` and `>` are the first of one only with U+0338, a nonspacing mark that
# `simplify` removes before it recomposes. Every one of them simplifies to a separator.
_CUT_BYTES = np.zeros(256, dtype=bool)
_CUT_BYTES[:0x80] = [not chr(byte).isalnum() for byte in range(0x80)]
# CJK Unified Ideographs and Extension A: no decomposition, never composed with anything, no case,
# letters (category Lo): in every Unicode version each simplifies to itself wherever it stands.
IDEOGRAPHS = kernels.IDEOGRAPHS


def _piece_tokens(data: np.ndarray, offsets: np.ndarray, plain: np.ndarray,
                  by_chars: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tokens of distinct pieces: a pool of token hashes, and where each piece's tokens start in
    it and how many there are. A piece of ASCII letters and digits only (most, in most languages)
    is lowercased, its digit runs made 0, in the kernels; the others are ``_simplified``."""
    rest = np.flatnonzero(~plain)
    size = np.empty(len(plain), dtype=np.int64)
    if by_chars:
        points, size[plain] = kernels.code_points(data, offsets[:-1][plain], offsets[1:][plain], True)
        plain_hashes = _char_hashes(points)
    else:
        plain_hashes, size[plain] = kernels.word_hashes(data, offsets[:-1][plain], offsets[1:][plain], True)
    rest_pieces = string_array(offsets, data).take(pa.array(rest, pa.int64()))
    rest_hashes, size[rest] = tokens(_simplified(rest_pieces), by_chars)
    first = np.empty(len(plain), dtype=np.int64)
    first[plain] = np.cumsum(size[plain]) - size[plain]
    first[rest] = len(plain_hashes) + np.cumsum(size[rest]) - size[rest]
    return np.concatenate([plain_hashes, rest_hashes]), first, size


def _simplified(texts: pa.Array) -> pa.Array:
    """``simplify(texts)`` of a null-free array, with its regular expressions applied in one pass
    each by ``kernels.reclass`` (they cost most of it on many short pieces): each is a class of
    single characters repeated, so a character's class, learnt from RE2 itself (``_learn``), is all
    they depend on. The normalisations and lowercasing stay Arrow's."""
    folded = _reclassed(pc.utf8_normalize(texts, "NFKD"), marks=True)
    return _reclassed(pc.utf8_lower(pc.utf8_normalize(folded, "NFC")), marks=False)


def _reclassed(texts: pa.Array, marks: bool) -> pa.Array:
    offsets, data = utf8_buffers(texts)
    reclassed, new_offsets, unknown = kernels.reclass(data, offsets, _CLASSES, marks)
    if len(unknown):
        _learn(unknown)
        reclassed, new_offsets, _ = kernels.reclass(data, offsets, _CLASSES, marks)
    return string_array(new_offsets, reclassed)


# The class of each code point seen so far by this process (``kernels.MARK`` ...), 0 if not yet
# classified; pages of scripts never seen stay untouched, as in ``_CHAR_HASHES``.
_CLASSES = np.zeros(0x110000, dtype=np.uint8)


def _learn(points: np.ndarray) -> None:
    """Classifies the code points not classified yet, by matching each alone against the classes."""
    new = np.unique(points[_CLASSES[points] == 0])
    if len(new):
        chars = pa.array([chr(point) for point in new.tolist()], pa.string())
        kinds = np.full(len(new), kernels.OTHER, np.uint8)
        for kind, pattern in ((kernels.SEPARATOR, SEPARATORS), (kernels.DIGIT, DIGITS), (kernels.MARK, MARKS)):
            kinds[pc.match_substring_regex(chars, f"^{pattern}$").to_numpy(zero_copy_only=False)] = kind
        _CLASSES[new] = kinds


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
    """32-bit hashes of every n-gram of every document, and the number of n-grams per document:
    ``shingle_hash`` of each run of ``n`` consecutive tokens (``kernels.shingle_hashes``).

    A document with fewer than ``n`` tokens (but at least one) is a single shingle of all of them,
    so short documents still have a signature; a document without tokens has none.
    """
    if not 1 <= n <= MAX_NGRAM:
        raise ValueError(f"n-gram size must be in 1..{MAX_NGRAM}, got {n}")
    return kernels.shingle_hashes(token_hashes, counts.astype(np.int64), n, POSITION_MULTIPLIERS)


class MinHasher:
    """datasketch's affine32 MinHash for many documents at once."""

    def __init__(self, num_perm: int, seed: int):
        self.num_perm = num_perm
        self.a, self.b = affine32_permutations(num_perm, seed)

    def signatures(self, shingle_values: np.ndarray, per_doc: np.ndarray) -> np.ndarray:
        """A (documents x num_perm) uint32 matrix; rows of documents without shingles are all
        0xFFFFFFFF, datasketch's empty MinHash."""
        return kernels.min_hashes(shingle_values.astype(np.uint32), per_doc.astype(np.int64), self.a, self.b)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A (documents x bands) uint64 matrix: one 64-bit key per band of ``rows`` signature values.
    Two documents share a key in a band when (barring a 2^-64 collision) their rows are equal."""
    keys = np.zeros((len(signatures), bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for row in range(rows):
            column = signatures[:, row:bands * rows:rows].astype(_U64)
            keys += column * POSITION_MULTIPLIERS[row]
    return fmix64(keys)
