"""A small n-gram language model of the gold text: the report's "small language model", CCNet-style.

One model per language, trained on the gold (positive) training rows of ``train-quality``; a
document's ``quality_perplexity`` is its per-token perplexity under the model of its language. Text
that reads like the gold corpus has low perplexity; boilerplate, keyword lists, spam and garbled
text have high perplexity.

- Tokens are those the classifier sees (``quality_model.prepare_texts``): lower-cased words and
  punctuation, digits as ``0``, and each Chinese/Japanese character a token of its own, so Chinese
  is modelled over characters and English over words, with no segmenter.
- Trigrams with interpolated absolute discounting (discount 0.75; Kneser-Ney without the
  continuation counts) backing off to bigrams and an add-half unigram model; words seen once in
  training are ``<unk>``. Trigrams seen once are pruned (the classic size/quality trade-off: the
  model stays a few MB); so are bigrams seen once, their probability mass going to the unigram.
- Scoring: a batch's tokens are mapped to ids by one compiled lookup in a hash table of the
  vocabulary built at load time (``StringIndex``, what ``pc.index_in`` answers, without building
  Arrow's table of the vocabulary per batch and copying the scored tokens out first); n-grams become
  64-bit keys, and their counts are found in open-addressing hash tables built at load time
  (``_HashIndex``), by one compiled loop over the tokens (``quality_kernels.interpolated_probs``).
- Text is prepared and split into tokens (``split_text``) by one compiled pass over its UTF-8
  bytes (``quality_kernels.split_utf8``), each character classified by a table lookup (``CharClasses``). The table is filled in by the
  definitions themselves (RE2 patterns, Arrow's Unicode whitespace and alphanumerics) run once
  per code point (above U+FFFF, once a text has a character of its block), so the classifier's
  lines and the tokens of this model and of the signals come from one pass over the text and split
  exactly as those definitions would.

The model is a ``.npz`` file beside the classifier (``<model_path>.lm.npz``), written
deterministically (sorted arrays, no timestamps). A worker reads it with its hash tables built from
this machine's copy of them (``NgramModel.load``, ``pipeline.table_cache``).
"""
from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import table_cache
from pipeline.utf8 import utf8_buffers
from stages import quality_kernels

DISCOUNT = 0.75
UNK = 0
# Tokens scored per document. The perplexity is one signal of seven: with 128 tokens the combined
# score's cross-validated AUC on the human labels is 0.878 against 0.880 with 256, and the stage runs
# a fifth faster (bench/bench_quality.py human, throughput).
MAX_TOKENS = 128
# Trigram keys are (u * B + v) * B + w with B = vocabulary + 2: under 2 ** 63 while B <= 2 ** 21.
MAX_VOCAB = (1 << 21) - 2


@dataclass
class _Tables:
    """The counts of one language's model; ids are 1..V for the vocabulary, 0 ``<unk>``, V+1 BOS."""

    vocab: pa.Array            # string, index i -> id i + 1
    unigram: np.ndarray        # float64 [V + 2]: log P1(id)
    ctx1_total: np.ndarray     # int64 [V + 2]: c(v .)
    ctx1_types: np.ndarray     # int64 [V + 2]: N1+(v .)
    bigram_keys: np.ndarray    # uint64 sorted: v * B + w, bigrams seen at least twice
    bigram_counts: np.ndarray  # uint32
    ctx2_total: np.ndarray     # uint32, per bigram: c(v w .), the bigram as a trigram context
    ctx2_types: np.ndarray     # uint32, per bigram: N1+(v w .)
    trigram_keys: np.ndarray   # uint64 sorted: (u * B + v) * B + w, pruned to counts >= 2
    trigram_counts: np.ndarray  # uint32

    @property
    def base(self) -> np.uint64:
        return np.uint64(len(self.vocab) + 2)

    @cached_property
    def scoring(self) -> "_Scoring":
        """The tables as ``token_log_probs`` reads them (built on first use)."""
        return _Scoring.of(self)

    @cached_property
    def vocab_index(self) -> "StringIndex":
        """The vocabulary as ``perplexity`` looks tokens up in it (built on first use)."""
        return StringIndex(self.vocab)


@dataclass
class _Scoring:
    """Every per-context and per-n-gram term of ``token_log_probs`` that does not depend on the
    token, computed once per model with the very operations the per-token formula would apply (so
    the scores are the same to the bit). N-gram values are stored by hash slot, with one entry
    more at the end: the value of an n-gram the model lacks, which slot -1 (a miss) reads."""

    bigrams: _HashIndex
    trigrams: _HashIndex
    unigram_p: np.ndarray    # by id: P1
    seen1: np.ndarray        # by id: the id was seen as a context
    scale1: np.ndarray       # by id: DISCOUNT * N1+(v .)
    total1: np.ndarray       # by id: c(v .), 1 where unseen (the quotient is not used then)
    discounted2: np.ndarray  # by bigram slot: max(c(v w) - DISCOUNT, 0)
    seen2: np.ndarray        # by bigram slot: the bigram was seen as a trigram context
    scale2: np.ndarray       # by bigram slot: DISCOUNT * N1+(v w .)
    total2: np.ndarray       # by bigram slot: c(v w .), 1 where unseen
    discounted3: np.ndarray  # by trigram slot: max(c(u v w) - DISCOUNT, 0)

    @classmethod
    def of(cls, t: _Tables) -> "_Scoring":
        bigrams, trigrams = _HashIndex(t.bigram_keys), _HashIndex(t.trigram_keys)
        # Per-n-gram terms are computed per key and then placed by slot; an empty slot (and the miss
        # entry) holds what the term is for a count of 0.
        total1 = t.ctx1_total.astype(np.float64)
        total2 = t.ctx2_total.astype(np.float64)
        return cls(
            bigrams=bigrams, trigrams=trigrams, unigram_p=np.exp(t.unigram),
            seen1=total1 > 0, scale1=DISCOUNT * t.ctx1_types.astype(np.float64),
            total1=np.where(total1 > 0, total1, 1.0),
            discounted2=bigrams.by_slot(np.maximum(t.bigram_counts.astype(np.float64) - DISCOUNT, 0)),
            seen2=bigrams.by_slot(total2 > 0, False),
            scale2=bigrams.by_slot(DISCOUNT * t.ctx2_types.astype(np.float64)),
            total2=bigrams.by_slot(np.where(total2 > 0, total2, 1.0), 1.0),
            discounted3=trigrams.by_slot(np.maximum(t.trigram_counts.astype(np.float64) - DISCOUNT, 0)),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every table by name (``from_arrays`` rebuilds this from them)."""
        arrays = {name: getattr(self, name) for name in _SCORING_TERMS}
        for name in ("bigrams", "trigrams"):
            index = getattr(self, name)
            arrays.update({f"{name}.slots": index.slots, f"{name}.shift": np.asarray(index.shift),
                           f"{name}.mask": np.asarray(index.mask)})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "_Scoring":
        indexes = {name: _HashIndex.placed(arrays[f"{name}.slots"], arrays[f"{name}.shift"][()],
                                           arrays[f"{name}.mask"][()]) for name in ("bigrams", "trigrams")}
        return cls(**indexes, **{name: arrays[name] for name in _SCORING_TERMS})


_SCORING_TERMS = ("unigram_p", "seen1", "scale1", "total1", "discounted2", "seen2", "scale2", "total2", "discounted3")


class _HashIndex:
    """Open addressing over sorted unique keys, built at load time: a lookup reads one or two slots
    instead of a binary search's twenty-odd dependent ones. ``find`` returns
    slot numbers, and values are stored by slot (``by_slot``), so a hit costs no further indirection."""

    def __init__(self, keys: np.ndarray):
        bits = max(int(keys.size * 2 - 1).bit_length(), 4)
        self.shift = np.uint64(64 - bits)
        self.mask = np.int64((1 << bits) - 1)
        self.slots, self.slot_of_key = quality_kernels.place_keys(keys, self.shift, self.mask)

    @classmethod
    def placed(cls, slots: np.ndarray, shift: np.uint64, mask: np.int64) -> "_HashIndex":
        """An index whose slots were placed before (for lookups only: ``by_slot`` needs the keys' slots)."""
        index = cls.__new__(cls)
        index.slots, index.shift, index.mask, index.slot_of_key = slots, shift, mask, None
        return index

    def by_slot(self, values: np.ndarray, fill=0.0) -> np.ndarray:
        """``values`` (one per key, in key order) rearranged by slot, with one entry more at the end,
        which a miss (slot -1) reads; empty slots and that entry hold ``fill``."""
        result = np.full(self.slots.size + 1, fill, dtype=np.result_type(values, fill))
        result[self.slot_of_key] = values
        return result

    def find(self, queries: np.ndarray) -> np.ndarray:
        """The slot of each query, -1 where it is absent."""
        return quality_kernels.find_slots(self.slots, self.shift, self.mask, queries)


class StringIndex:
    """Open addressing over the distinct strings of an Arrow array, for looking many tokens up in a
    set built once (a model's vocabulary, the stop words): ``find`` answers what ``pc.index_in``
    answers (a token's index in the array; -1, not null, for one not in it) without Arrow's hash
    table of the set built per call (``quality_kernels.place_strings``, ``find_strings``). A string of
    at most eight bytes is compared as one number; a longer one by hash, then by its bytes.

    A small set of short strings (the stop words) is placed so that every string lies in its home
    slot, trying other seeds and sizes for the placement (a few dozen microseconds): a lookup then
    reads one slot, without branching on what it finds."""

    def __init__(self, strings: pa.Array):
        self.offsets, self.data = utf8_buffers(strings)
        bits = max(int(len(strings) * 2 - 1).bit_length(), 4)
        short = len(strings) <= _SINGLE_SLOT_MAX and bool((np.diff(self.offsets) <= 8).all())
        tries = [(bits + more, seed) for more in range(4) for seed in _SEEDS] if short else []
        for bits, seed in tries + [(bits, _SEEDS[0])]:
            self.shift, self.mask, self.seed = np.uint64(64 - bits), np.uint64((1 << bits) - 1), seed
            self.table, self.single = quality_kernels.place_strings(
                self.data, self.offsets, self.shift, self.mask, self.seed)
            if self.single:
                break

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The placement (``from_arrays`` takes the strings again)."""
        return {"table": self.table, "shift": np.asarray(self.shift), "mask": np.asarray(self.mask),
                "seed": np.asarray(self.seed), "single": np.asarray(self.single)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], strings: pa.Array) -> "StringIndex":
        index = cls.__new__(cls)
        index.offsets, index.data = utf8_buffers(strings)
        index.table, index.single = arrays["table"], bool(arrays["single"])
        index.shift, index.mask, index.seed = arrays["shift"][()], arrays["mask"][()], arrays["seed"][()]
        return index

    def find(self, tokens: "Tokens", starts: np.ndarray | None = None, counts: np.ndarray | None = None) -> np.ndarray:
        """The index of each token in the strings, -1 where it is none of them (int64): tokens
        ``starts[r]`` to ``starts[r] + counts[r] - 1``, range after range; all of them by default."""
        offsets, data = tokens.buffers
        if starts is None:
            starts, counts = np.zeros(1, dtype=np.int64), np.array([offsets.size - 1], dtype=np.int64)
        return quality_kernels.find_strings(
            self.table, self.shift, self.mask, self.seed, self.single, self.data, self.offsets,
            data, offsets, starts.astype(np.int64), counts.astype(np.int64))


# Sets up to this size are placed for one-slot lookups, trying these seeds at four table sizes.
_SINGLE_SLOT_MAX = 4096
_SEEDS = [np.uint64(0x9E3779B97F4A7C15 * (2 * k + 1) % (1 << 64)) for k in range(32)]


# ---------------------------------------------------------------------------------------------
# Splitting text into tokens
# ---------------------------------------------------------------------------------------------

# Flags of a character in ``CharClasses.table``.
_SPACE, _MARK, _DIGIT, _NOT_ALNUM = (quality_kernels.SPACE, quality_kernels.MARK, quality_kernels.DIGIT,
                                     quality_kernels.NOT_ALNUM)
# ``CharClasses.by_prefix`` is indexed by a character's first three bytes as a big-endian number,
# less this: two- and three-byte characters start with C0-EF, four-byte ones (rare) with F0-F7.
_PREFIX_BASE = 0xC00000
_PREFIX_END = 0xF80000


# Code points above the Basic Multilingual Plane are classified on first sight, this many bits' worth
# (4,096) at a time: they are 94% of all code points, and a corpus uses a few blocks of them (emoji,
# rare ideographs), so classifying all of them up front took most of a worker's start-up.
BLOCK_BITS = 12


@dataclass(frozen=True, eq=False)
class CharClasses:
    """What ``split_text`` makes of every Unicode character: whitespace (separates tokens), marked
    (a token of its own, set off by spaces in the line), digit (written ``0``), and whether it is
    alphanumeric. Looking a character up replaces running the definitions over the text."""

    table: np.ndarray      # uint8 flags by code point; above U+FFFF only where ``known`` (``flags``)
    by_prefix: np.ndarray  # uint8 flags of the two- and three-byte characters by first three bytes
    ascii_line: np.ndarray  # uint8 by ASCII byte, what the line holds: digits as "0", newline as space
    known: np.ndarray      # bool per block of 2 ** BLOCK_BITS code points: its flags are in ``table``
    marked: str | None
    digits: str | None

    def flags(self, code_points: np.ndarray) -> np.ndarray:
        """The flags of these code points, classifying the blocks not seen before."""
        blocks = code_points >> BLOCK_BITS
        new = np.unique(blocks[~self.known[blocks]])
        if new.size:
            points = ranges(new.astype(np.int64) << BLOCK_BITS, np.full(new.size, 1 << BLOCK_BITS))
            self.table[points] = _classify(points.astype(np.uint32), self.marked, self.digits)
            self.known[new] = True
        return self.table[code_points]


def code_point_strings(code_points: np.ndarray) -> pa.Array:
    """Each code point (uint32, no surrogates) as a string of its own, for running a definition
    (an Arrow function, a regular expression) once per character."""
    widths = 1 + (code_points >= 0x80) + (code_points >= 0x800) + (code_points >= 0x10000)
    return pa.StringArray.from_buffers(
        code_points.size, pa.py_buffer(np.concatenate(([0], np.cumsum(widths))).astype(np.int32)),
        pa.py_buffer(code_points.tobytes().decode("utf-32-le").encode()))


def _classify(code_points: np.ndarray, marked: str | None, digits: str | None) -> np.ndarray:
    """The flags of these code points (no surrogates), each definition run on each of them."""
    chars = code_point_strings(code_points)

    def matches(pattern: str | None) -> np.ndarray:
        if pattern is None:
            return np.zeros(code_points.size, dtype=bool)
        return pc.match_substring_regex(chars, pattern).to_numpy(zero_copy_only=False)

    digit = matches(digits)
    return (digit * _DIGIT
            # Digits are replaced before anything is marked, and a "0" is never marked.
            | (matches(marked) & ~digit) * _MARK
            | pc.utf8_is_space(chars).to_numpy(zero_copy_only=False) * _SPACE
            | ~pc.utf8_is_alnum(chars).to_numpy(zero_copy_only=False) * _NOT_ALNUM).astype(np.uint8)


@lru_cache(maxsize=None)
def char_classes(marked: str | None = None, digits: str | None = None) -> CharClasses:
    """The classes of every code point: ``marked`` and ``digits`` are RE2 patterns matching one
    character (None: no character), whitespace is what ``pc.utf8_split_whitespace`` splits at
    (``pc.utf8_is_space``) and alphanumeric what ``pc.utf8_is_alnum`` accepts. Each is evaluated
    once per code point by that very function, so a split decides as they would on the text
    (the Basic Multilingual Plane up front, in a few hundredths of a second, once per machine and
    pattern: later processes read it back, ``pipeline.table_cache``; other code points when a
    text first has one of their block)."""
    patterns = f"{marked}\0{digits}"
    name = "quality-char-classes-" + hashlib.sha1(patterns.encode()).hexdigest()[:12]
    arrays = table_cache.cached_arrays(name, patterns, lambda: _bmp_classes(marked, digits),
                                       sys.modules[__name__], quality_kernels)
    return CharClasses(arrays["table"], arrays["by_prefix"], arrays["ascii_line"], arrays["known"], marked, digits)


def _bmp_classes(marked: str | None, digits: str | None) -> dict[str, np.ndarray]:
    """``CharClasses``' tables with the Basic Multilingual Plane classified."""
    bmp = np.concatenate((np.arange(0xD800), np.arange(0xE000, 0x10000))).astype(np.uint32)
    table = np.zeros(0x110000, dtype=np.uint8)
    table[bmp] = _classify(bmp, marked, digits)
    known = np.zeros(0x110000 >> BLOCK_BITS, dtype=bool)
    known[:0x10000 >> BLOCK_BITS] = True

    by_prefix = np.zeros(_PREFIX_END - _PREFIX_BASE, dtype=np.uint8)
    two = np.arange(0x80, 0x800, dtype=np.uint32)
    prefix = ((0xC0 | two >> 6) << 16 | (0x80 | two & 0x3F) << 8) - _PREFIX_BASE
    # A two-byte character's third byte is the next character's: every value reads the same flags.
    by_prefix[(prefix[:, None] + np.arange(256, dtype=np.uint32)).ravel()] = np.repeat(table[two], 256)
    three = bmp[bmp >= 0x800]
    prefix = (0xE0 | three >> 12) << 16 | (0x80 | three >> 6 & 0x3F) << 8 | (0x80 | three & 0x3F)
    by_prefix[prefix - _PREFIX_BASE] = table[three]

    line = np.arange(128)
    line[table[:128] & _DIGIT > 0] = ord("0")
    line[ord("\n")] = ord(" ")
    return {"table": table, "by_prefix": by_prefix, "ascii_line": line.astype(np.uint8), "known": known}


def split_text(text: pa.Array, classes: CharClasses) -> tuple[pa.Array, "Tokens"]:
    """Each text as one line (digits as ``0``, newlines as spaces, a space on either side of every
    marked character) and the line's tokens (what ``pc.utf8_split_whitespace`` would split it
    into, without empty ones).

    One compiled pass over the UTF-8 bytes (``quality_kernels.split_utf8``) classifies each
    character by table lookup; a character of four bytes, rare, has its block classified first."""
    if text.null_count:
        text = pc.fill_null(text, "")
    offset_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    n_docs = len(text)
    offsets, b = utf8_buffers(text)
    four = np.flatnonzero(b >= 0xF0)
    if four.size:
        head = [b[four + k].astype(np.int64) for k in range(4)]
        classes.flags(((head[0] & 0x07) << 18) | ((head[1] & 0x3F) << 12) | ((head[2] & 0x3F) << 6) | (head[3] & 0x3F))
    line, line_offsets, token_bytes, token_offsets, doc_tokens, alnum = quality_kernels.split_utf8(
        b, offsets, classes.table, classes.by_prefix, _PREFIX_BASE, classes.ascii_line)
    lines = pa.Array.from_buffers(text.type, n_docs, [None, pa.py_buffer(line_offsets.astype(offset_type)),
                                                     pa.py_buffer(line)])
    flat = pa.Array.from_buffers(text.type, token_offsets.size - 1,
                                 [None, pa.py_buffer(token_offsets.astype(offset_type)), pa.py_buffer(token_bytes)])
    return lines, Tokens(flat, doc_tokens, alnum)


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``start, start + 1, ..., start + length - 1`` for each range, one range after another."""
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum(), dtype=np.int64)


@dataclass
class Tokens:
    """A batch's prepared tokens, split once and shared by the language model and the signals."""

    flat: pa.Array         # every token, documents one after another
    offsets: np.ndarray    # int64 [documents + 1]: where each document's tokens start in ``flat``
    alnum: np.ndarray      # bool: the token is a word (letters and digits), not a symbol

    @classmethod
    def from_lines(cls, lines: list[str] | pa.Array) -> "Tokens":
        """Prepared lines (space-separated tokens) split into tokens."""
        lines = lines if isinstance(lines, pa.Array) else pa.array(lines, type=pa.string())
        return split_text(lines, char_classes())[1]

    def count(self, mask: np.ndarray) -> np.ndarray:
        """Tokens of each document where ``mask`` is set, as float64."""
        before = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
        return (before[self.offsets[1:]] - before[self.offsets[:-1]]).astype(np.float64)

    @cached_property
    def words(self) -> np.ndarray:
        """Word (alphanumeric) tokens of each document, as float64."""
        return self.count(self.alnum)

    @cached_property
    def buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """``flat`` as int64 offsets and UTF-8 bytes (``utf8_buffers``), for the compiled lookups."""
        return utf8_buffers(self.flat)


def _ids(flat: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Token ids: vocabulary index + 1, 0 for words outside it (one Arrow hash lookup)."""
    found = pc.index_in(flat, value_set=vocab)
    return pc.fill_null(pc.add(found, 1), UNK).to_numpy(zero_copy_only=False).astype(np.uint64)


def _contexts(ids: np.ndarray, offsets: np.ndarray, bos: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The previous and the one-before-previous id of every token, BOS across document starts."""
    prev1 = np.full(ids.size, bos, dtype=np.uint64)
    prev2 = np.full(ids.size, bos, dtype=np.uint64)
    prev1[1:] = ids[:-1]
    prev2[2:] = ids[:-2]
    lengths = np.diff(offsets)
    firsts = offsets[:-1][lengths > 0]
    prev1[firsts] = bos
    prev2[firsts] = bos
    prev2[offsets[:-1][lengths > 1] + 1] = bos
    return prev1, prev2


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unique, counts = np.unique(keys, return_counts=True)
    return unique, counts.astype(np.int64)


def train_tables(lines: list[str], min_count: int = 2) -> _Tables:
    """Count one language's gold text (prepared lines) into a model."""
    tokens = Tokens.from_lines(lines)
    flat = tokens.flat
    counts = pc.value_counts(flat)
    words, word_counts = counts.field("values"), counts.field("counts").to_numpy()
    keep = np.flatnonzero(word_counts >= min_count)
    if keep.size > MAX_VOCAB:  # the most frequent words, ties by word: n-gram keys must fit 64 bits
        by_count = sorted(keep.tolist(), key=lambda i: (-word_counts[i], words[i].as_py()))
        keep = np.array(by_count[:MAX_VOCAB])
    kept_words = words.take(pa.array(keep, type=pa.int64()))
    vocab = kept_words.take(pc.array_sort_indices(kept_words))  # sorted: the file does not depend on counting order
    ids, offsets = _ids(flat, vocab), tokens.offsets
    size = len(vocab) + 2
    base, bos = np.uint64(size), np.uint64(size - 1)
    prev1, prev2 = _contexts(ids, offsets, bos)

    unigram_counts = np.bincount(ids.astype(np.int64), minlength=size).astype(np.float64)
    unigram_counts[size - 1] = 0  # BOS is never predicted
    unigram = np.log((unigram_counts + 0.5) / (unigram_counts.sum() + 0.5 * (size - 1)))

    bigram_keys, bigram_counts = _count(prev1 * base + ids)
    contexts1 = (bigram_keys // base).astype(np.int64)
    ctx1_total = np.bincount(contexts1, weights=bigram_counts, minlength=size).astype(np.int64)
    ctx1_types = np.bincount(contexts1, minlength=size).astype(np.int64)

    bigram_kept = bigram_counts >= 2
    bigram_keys, bigram_counts = bigram_keys[bigram_kept], bigram_counts[bigram_kept]

    # A trigram context (u, v) is the bigram u v: its statistics ride on the bigram table, so scoring
    # needs one lookup for both. A context seen at most once says little and is not kept (its
    # tokens back off to the bigram); every context seen twice is a bigram seen twice.
    trigram_keys, trigram_counts = _count((prev2 * base + prev1) * base + ids)
    contexts2 = trigram_keys // base
    ctx2_keys, starts = np.unique(contexts2, return_index=True)
    ctx2_total = np.add.reduceat(trigram_counts, starts) if starts.size else np.zeros(0, np.int64)
    ctx2_types = np.diff(np.append(starts, contexts2.size)).astype(np.int64)
    rows = np.searchsorted(bigram_keys, ctx2_keys)
    found = (rows < bigram_keys.size) & (bigram_keys[np.minimum(rows, max(bigram_keys.size - 1, 0))] == ctx2_keys) \
        if bigram_keys.size else np.zeros(ctx2_keys.size, dtype=bool)
    aligned_total = np.zeros(bigram_keys.size, dtype=np.int64)
    aligned_types = np.zeros(bigram_keys.size, dtype=np.int64)
    aligned_total[rows[found]] = ctx2_total[found]
    aligned_types[rows[found]] = ctx2_types[found]
    frequent = aligned_total >= 2
    aligned_total[~frequent] = 0
    aligned_types[~frequent] = 0
    pruned = trigram_counts >= 2
    counts = np.uint32  # 4 bytes a count: plenty for a gold corpus, half the file
    return _Tables(
        vocab=vocab, unigram=unigram, ctx1_total=ctx1_total, ctx1_types=ctx1_types,
        bigram_keys=bigram_keys, bigram_counts=bigram_counts.astype(counts),
        ctx2_total=aligned_total.astype(counts), ctx2_types=aligned_types.astype(counts),
        trigram_keys=trigram_keys[pruned], trigram_counts=trigram_counts[pruned].astype(counts),
    )


def token_log_probs(tables: _Tables, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Natural log-probability of every token (ids of one language's model, documents at offsets)."""
    s = tables.scoring
    p = quality_kernels.interpolated_probs(
        ids, offsets.astype(np.int64), tables.base, s.unigram_p, s.seen1, s.scale1, s.total1,
        s.bigrams.slots, s.bigrams.shift, s.bigrams.mask, s.discounted2, s.seen2, s.scale2, s.total2,
        s.trigrams.slots, s.trigrams.shift, s.trigrams.mask, s.discounted3)
    return np.log(p)


class NgramModel:
    """Per-language gold language models; ``perplexity(tokens, langs)`` scores a batch."""

    def __init__(self, tables: dict[str, _Tables]):
        self.tables = tables

    @property
    def languages(self) -> list[str]:
        return sorted(self.tables)

    def perplexity(self, tokens: Tokens, langs: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(perplexity, known word tokens) of each document under its language's model, over its
        first ``MAX_TOKENS`` tokens. Without a model for the language: NaN perplexity, and every
        word token counts as known."""
        perplexity = np.full(len(langs), np.nan)
        known = tokens.words.copy()
        langs_array = np.array(langs, dtype=object)
        lengths = np.diff(tokens.offsets)
        for lang, tables in self.tables.items():
            docs = np.flatnonzero(langs_array == lang)
            if not docs.size:
                continue
            scored = np.minimum(lengths[docs], MAX_TOKENS)
            rows = ranges(tokens.offsets[docs], scored)
            # Vocabulary index + 1, UNK (0) for other words: what ``_ids`` gives those tokens.
            ids = (tables.vocab_index.find(tokens, tokens.offsets[docs], scored) + 1).astype(np.uint64)
            log_probs = token_log_probs(tables, ids, np.concatenate(([0], np.cumsum(scored))))
            doc_of = np.repeat(np.arange(docs.size), scored)
            sums = np.bincount(doc_of, weights=log_probs, minlength=docs.size)
            with np.errstate(invalid="ignore", divide="ignore"):
                perplexity[docs] = np.where(scored > 0, np.exp(-sums / np.maximum(scored, 1)), np.nan)
            known[docs] = np.bincount(doc_of, weights=(ids != UNK) & tokens.alnum[rows], minlength=docs.size)
        return perplexity, known

    def to_bytes(self) -> bytes:
        sink = io.BytesIO()
        # numpy writes fixed zip timestamps, so the same model gives the same bytes.
        np.savez_compressed(sink, **self._arrays())
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "NgramModel":
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        return cls._from_arrays({key: loaded[key] for key in loaded.files})

    @classmethod
    def load(cls, path: str) -> "NgramModel":
        """The model in the local file ``path``, each language's scoring tables built. A worker process
        reads them back from this machine's copy (``pipeline.table_cache``: uncompressed, beside the
        counts) rather than decompressing the counts and building them, 0.07 s of its first quality
        task on corpus-dev's model; the first process after the model changes builds and writes it."""
        def build() -> dict[str, np.ndarray]:
            with open(path, "rb") as handle:
                model = cls.from_bytes(handle.read())
            arrays = model._arrays()
            for lang, t in model.tables.items():
                arrays.update({f"{lang}/scoring.{name}": array for name, array in t.scoring.to_arrays().items()})
                arrays.update({f"{lang}/index.{name}": array for name, array in t.vocab_index.to_arrays().items()})
            return arrays

        name, key = table_cache.file_entry("quality-lm", path)
        # The counts are mapped, not read: scoring reads only the vocabulary of them.
        return cls._from_arrays(table_cache.cached_arrays(
            name, key, build, sys.modules[__name__], quality_kernels,
            mapped=lambda field: "/scoring." not in field and "/index." not in field))

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for lang, t in sorted(self.tables.items()):
            # The vocabulary as UTF-8 bytes and offsets: a fixed-width numpy string array would pad
            # every word to the longest one.
            offsets, data = utf8_buffers(t.vocab)
            arrays[f"{lang}/vocab_bytes"] = data.copy()
            arrays[f"{lang}/vocab_offsets"] = offsets
            for name in ("unigram", "ctx1_total", "ctx1_types", "bigram_keys", "bigram_counts",
                         "ctx2_total", "ctx2_types", "trigram_keys", "trigram_counts"):
                arrays[f"{lang}/{name}"] = getattr(t, name)
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> "NgramModel":
        """The model of ``_arrays``, with the scoring tables of ``load``'s copy where it has them."""
        by_lang: dict[str, dict] = {}
        for key, array in arrays.items():
            lang, name = key.split("/", 1)
            by_lang.setdefault(lang, {})[name] = array
        tables = {}
        for lang, fields in by_lang.items():
            scoring = {name.removeprefix("scoring."): fields.pop(name) for name in list(fields)
                       if name.startswith("scoring.")}
            index = {name.removeprefix("index."): fields.pop(name) for name in list(fields) if name.startswith("index.")}
            offsets, data = fields.pop("vocab_offsets"), fields.pop("vocab_bytes")
            fields["vocab"] = pa.StringArray.from_buffers(
                len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes()))
            tables[lang] = _Tables(**fields)
            if scoring:  # the cached_properties, as they would be built
                tables[lang].__dict__["scoring"] = _Scoring.from_arrays(scoring)
                tables[lang].__dict__["vocab_index"] = StringIndex.from_arrays(index, fields["vocab"])
        return cls(tables)

    @classmethod
    def train(cls, lines_by_lang: dict[str, list[str]]) -> "NgramModel":
        """One model per language from its prepared gold lines."""
        return cls({lang: train_tables(lines) for lang, lines in sorted(lines_by_lang.items()) if lines})
