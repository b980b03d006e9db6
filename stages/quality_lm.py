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
- Scoring is vectorised: a batch's tokens are mapped to ids with one Arrow set lookup, n-grams become
  64-bit keys, and counts are found with ``numpy.searchsorted`` over sorted key arrays. No Python
  loop per token.

The model is a ``.npz`` file beside the classifier (``<model_path>.lm.npz``), written
deterministically (sorted arrays, no timestamps).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    def indexes(self) -> tuple[_HashIndex, _HashIndex, dict[str, np.ndarray]]:
        """Hash indexes of the bigram and trigram keys and their counts by slot (built on first use)."""
        bigrams, trigrams = _HashIndex(self.bigram_keys), _HashIndex(self.trigram_keys)
        by_slot = {"bigram_counts": bigrams.by_slot(self.bigram_counts),
                   "ctx2_total": bigrams.by_slot(self.ctx2_total), "ctx2_types": bigrams.by_slot(self.ctx2_types),
                   "trigram_counts": trigrams.by_slot(self.trigram_counts)}
        return bigrams, trigrams, by_slot


@dataclass
class Tokens:
    """A batch's prepared tokens, split once and shared by the language model and the signals."""

    flat: pa.Array         # every token, documents one after another
    offsets: np.ndarray    # int64 [documents + 1]: where each document's tokens start in ``flat``
    doc_of: np.ndarray     # int64: the document of each token
    position: np.ndarray   # int64: the token's position within its document
    alnum: np.ndarray      # bool: the token is a word (letters and digits), not a symbol

    @classmethod
    def from_lines(cls, lines: list[str] | pa.Array) -> "Tokens":
        """Prepared lines (space-separated tokens) split into tokens."""
        lines = lines if isinstance(lines, pa.Array) else pa.array(lines, type=pa.string())
        lists = pc.utf8_split_whitespace(lines)
        split_offsets = lists.offsets.to_numpy().astype(np.int64)
        split_doc = np.repeat(np.arange(len(lists)), np.diff(split_offsets))
        flat = lists.flatten()
        # Leading or trailing spaces, and an empty line, split into empty tokens: not tokens.
        nonempty = pc.greater(pc.binary_length(flat), 0)
        flat = flat.filter(nonempty)
        doc_of = split_doc[nonempty.to_numpy(zero_copy_only=False)]
        counts = np.bincount(doc_of, minlength=len(lists))
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        position = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], counts)
        alnum = pc.utf8_is_alnum(flat).to_numpy(zero_copy_only=False)
        return cls(flat, offsets, doc_of, position, alnum)

    def per_document(self, values: np.ndarray) -> np.ndarray:
        """The sum of a per-token value over each document."""
        return np.bincount(self.doc_of, weights=values, minlength=len(self.offsets) - 1).astype(np.float64)


def _ids(flat: pa.Array, vocab: pa.Array) -> np.ndarray:
    """Token ids: vocabulary index + 1, 0 for words outside it (one Arrow hash lookup)."""
    found = pc.index_in(flat, value_set=vocab)
    return pc.fill_null(pc.add(found, 1), UNK).to_numpy(zero_copy_only=False).astype(np.uint64)


def _contexts(ids: np.ndarray, offsets: np.ndarray, bos: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """The previous and the one-before-previous id of every token, BOS across document starts."""
    position = np.arange(ids.size, dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    prev1 = np.full(ids.size, bos, dtype=np.uint64)
    prev2 = np.full(ids.size, bos, dtype=np.uint64)
    prev1[1:] = ids[:-1]
    prev2[2:] = ids[:-2]
    prev1[position < 1] = bos
    prev2[position < 2] = bos
    return prev1, prev2


_MIX = np.uint64(0x9E3779B97F4A7C15)
_EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # no key reaches it: keys are below (V + 2) ** 3 < 2 ** 63


class _HashIndex:
    """Open addressing over sorted unique keys, built at load time: a lookup is one or two
    vectorised gathers instead of a binary search's twenty-odd dependent ones. ``find`` returns
    slot numbers, and values are stored by slot (``by_slot``), so a hit costs no further indirection."""

    def __init__(self, keys: np.ndarray):
        bits = max(int(keys.size * 2 - 1).bit_length(), 4)
        self.shift = np.uint64(64 - bits)
        self.slots = np.full(1 << bits, _EMPTY, dtype=np.uint64)
        self.slot_of_key = np.zeros(keys.size, dtype=np.int64)
        mask = np.int64((1 << bits) - 1)
        pending = np.arange(keys.size, dtype=np.int64)
        position = self._home(keys)
        while pending.size:
            want = position[pending]
            # Of the keys wanting a free slot, the first (lowest row) takes it; the rest probe on.
            free = self.slots[want] == _EMPTY
            order = np.lexsort((pending, want))
            first = np.ones(order.size, dtype=bool)
            first[1:] = want[order][1:] != want[order][:-1]
            winners = np.zeros(pending.size, dtype=bool)
            winners[order[first]] = True
            placed = winners & free
            self.slots[want[placed]] = keys[pending[placed]]
            self.slot_of_key[pending[placed]] = want[placed]
            pending = pending[~placed]
            position[pending] = (position[pending] + 1) & mask
        self.mask = mask

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _MIX) >> self.shift).astype(np.int64)

    def by_slot(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per key, in key order) rearranged by slot, as float64."""
        result = np.zeros(self.slots.size)
        result[self.slot_of_key] = values
        return result

    def find(self, queries: np.ndarray) -> np.ndarray:
        """The slot of each query, -1 where it is absent."""
        result = np.full(queries.size, -1, dtype=np.int64)
        pending = np.arange(queries.size, dtype=np.int64)
        position = self._home(queries)
        while pending.size:
            found = self.slots[position]
            hit = found == queries[pending]
            result[pending[hit]] = position[hit]
            more = ~hit & (found != _EMPTY)
            pending, position = pending[more], (position[more] + 1) & self.mask
        return result

    def rows(self, queries: np.ndarray) -> np.ndarray:
        """The row (key index) of each query, -1 where it is absent."""
        slots = self.find(queries)
        row_of_slot = np.full(self.slots.size, -1, dtype=np.int64)
        row_of_slot[self.slot_of_key] = np.arange(self.slot_of_key.size)
        return np.where(slots >= 0, row_of_slot[np.maximum(slots, 0)], -1)


def _gather(values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """values[slot] (float64), 0 where slot is -1."""
    return np.where(slots >= 0, values[np.maximum(slots, 0)], 0.0)


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
    base = tables.base
    prev1, prev2 = _contexts(ids, offsets, base - np.uint64(1))
    p = np.exp(tables.unigram[ids.astype(np.int64)])

    total1 = tables.ctx1_total[prev1.astype(np.int64)].astype(np.float64)
    types1 = tables.ctx1_types[prev1.astype(np.int64)].astype(np.float64)
    bigrams, trigrams, by_slot = tables.indexes
    bigram_slots = bigrams.find(prev1 * base + ids)
    count2 = _gather(by_slot["bigram_counts"], bigram_slots)
    seen = total1 > 0
    safe = np.where(seen, total1, 1.0)
    p = np.where(seen, (np.maximum(count2 - DISCOUNT, 0) + DISCOUNT * types1 * p) / safe, p)

    # The context (u, v) of token i is the bigram of token i - 1, already looked up; a document's
    # first token has none.
    context_slots = np.full(ids.size, -1, dtype=np.int64)
    context_slots[1:] = bigram_slots[:-1]
    context_slots[offsets[:-1][np.diff(offsets) > 0]] = -1
    total2, types2 = _gather(by_slot["ctx2_total"], context_slots), _gather(by_slot["ctx2_types"], context_slots)
    context2 = prev2 * base + prev1
    count3 = _gather(by_slot["trigram_counts"], trigrams.find(context2 * base + ids))
    seen = total2 > 0
    safe = np.where(seen, total2, 1.0)
    p = np.where(seen, (np.maximum(count3 - DISCOUNT, 0) + DISCOUNT * types2 * p) / safe, p)
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
        n_docs = len(langs)
        perplexity = np.full(n_docs, np.nan)
        known = tokens.per_document(tokens.alnum)
        langs_array = np.array(langs, dtype=object)
        for lang, tables in self.tables.items():
            docs = langs_array == lang
            if not docs.any():
                continue
            mask = docs[tokens.doc_of] & (tokens.position < MAX_TOKENS)
            ids = _ids(tokens.flat.filter(pa.array(mask)), tables.vocab)
            counts = np.bincount(tokens.doc_of[mask], minlength=n_docs)
            offsets = np.concatenate(([0], np.cumsum(counts)))
            log_probs = token_log_probs(tables, ids, offsets)
            doc_of = tokens.doc_of[mask]
            sums = np.bincount(doc_of, weights=log_probs, minlength=n_docs)
            with np.errstate(invalid="ignore", divide="ignore"):
                perplexity[docs] = np.where(counts > 0, np.exp(-sums / np.maximum(counts, 1)), np.nan)[docs]
            in_vocab = (ids != UNK) & tokens.alnum[mask]
            known[docs] = np.bincount(doc_of, weights=in_vocab, minlength=n_docs)[docs]
        return perplexity, known

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        for lang, t in sorted(self.tables.items()):
            # The vocabulary as UTF-8 bytes and offsets: a fixed-width numpy string array would pad
            # every word to the longest one.
            _, offsets_buffer, data_buffer = t.vocab.buffers()
            offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[t.vocab.offset:t.vocab.offset + len(t.vocab) + 1]
            arrays[f"{lang}/vocab_bytes"] = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]].copy()
            arrays[f"{lang}/vocab_offsets"] = (offsets - offsets[0]).astype(np.int64)
            for name in ("unigram", "ctx1_total", "ctx1_types", "bigram_keys", "bigram_counts",
                         "ctx2_total", "ctx2_types", "trigram_keys", "trigram_counts"):
                arrays[f"{lang}/{name}"] = getattr(t, name)
        sink = io.BytesIO()
        # numpy writes fixed zip timestamps, so the same model gives the same bytes.
        np.savez_compressed(sink, **arrays)
        return sink.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "NgramModel":
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        by_lang: dict[str, dict] = {}
        for key in loaded.files:
            lang, name = key.split("/", 1)
            by_lang.setdefault(lang, {})[name] = loaded[key]
        tables = {}
        for lang, fields in by_lang.items():
            offsets, data = fields.pop("vocab_offsets"), fields.pop("vocab_bytes")
            fields["vocab"] = pa.StringArray.from_buffers(
                len(offsets) - 1, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data.tobytes()))
            tables[lang] = _Tables(**fields)
        return cls(tables)

    @classmethod
    def train(cls, lines_by_lang: dict[str, list[str]]) -> "NgramModel":
        """One model per language from its prepared gold lines."""
        return cls({lang: train_tables(lines) for lang, lines in sorted(lines_by_lang.items()) if lines})
