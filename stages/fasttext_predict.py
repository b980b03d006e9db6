"""fastText's ``predict(line, k=1)`` for supervised models, compiled: the same label and the same float32
probability as fastText, faster (langid's lid.176 and the quality classifier).

Why: both models are linear classifiers over a few dozen 16-float rows per word, so much of what
fastText's call costs is around the arithmetic: a Python string per line, a ``std::stringstream``
read a character at a time, a ``std::string`` per character n-gram and a ``std::unordered_map``
lookup for each (lid.176 is pruned), each row added as soon as it is found.
``fasttext_kernels.predict_top`` reads the Arrow buffer of a batch's lines, looks words and n-grams
up in tables of its own and gathers a line's rows before summing them. On corpus-dev it scores
langid's views with lid.176 in about a third of fastText's time, and the quality classifier's lines in
about four fifths (that model's 12.8 MB of word-bigram rows come from memory either way);
``bench/bench_pipeline.py --sections limits`` reports both.

fastText stays the trainer, the file format and the reference. ``Predictor.load`` reads the model
file as fastText's ``FastText::loadModel`` does (format version 12, or 11), quantised or not, and
keeps its own float32 copy of the input rows (a quantised row expanded from its centroids: 3.2 MB
for lid.176.ftz; 14 MB for the quality model). A model it does not score as fastText would (not
supervised, a loss other than softmax or hierarchical softmax, no end-of-sentence word) gives None,
and ``Classifier`` uses fastText's own call. ``tests/test_fasttext_predict.py`` compares the two,
bit for bit, on lid.176 over all of langid-dev and on models trained with each option this follows.
"""
from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import table_cache
from pipeline.utf8 import utf8_buffers
from stages import fasttext_kernels as kernels

MAGIC = 793712314
SUPERVISED = 3
LOSSES = {1: kernels.HIERARCHICAL, 3: kernels.SOFTMAX}  # fastText's loss_name: hs = 1, softmax = 3
EOS = b"</s>"
LABEL_PREFIX = b"__label__"  # the training-time ``-label`` is not in the file; this is its default
WORD, LABEL = 0, 1
# What fastText's ``readWord`` splits on.
SPACE = np.zeros(256, dtype=np.bool_)
SPACE[list(b" \n\r\t\v\f\0")] = True


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += values.nbytes
        return values

    def entry(self) -> tuple[bytes, int, int]:
        """A dictionary entry: the word (up to its NUL), its count (int64) and type (int8)."""
        end = self.data.index(b"\0", self.at)
        count, kind = struct.unpack_from("<qb", self.data, end + 1)
        word, self.at = self.data[self.at:end], end + 10
        return word, count, kind


def _product_quantizer(reader: _Reader) -> tuple[np.ndarray, int, int, int]:
    """``ProductQuantizer::load``: centroids (256 per sub-quantiser), nsubq, dsub, lastdsub."""
    dim, nsubq, dsub, lastdsub = reader.take("4i")
    return reader.array(np.float32, dim * 256), nsubq, dsub, lastdsub


def _matrix(reader: _Reader, quantised: bool) -> tuple[np.ndarray, np.ndarray]:
    """A matrix as float32 rows and a per-row scale. A quantised matrix's row is its centroids
    (times its norm, for the input, where ``QuantMatrix::addRowToVector`` applies it per element);
    an output row's norm is the scale ``QuantMatrix::dotRow`` multiplies the dot product by."""
    if not quantised:
        m, n = reader.take("2q")
        return reader.array(np.float32, m * n).reshape(m, n), np.ones(m, dtype=np.float32)
    qnorm = reader.take("?")
    m, n = reader.take("2q")
    codes = reader.array(np.uint8, reader.take("i"))
    centroids, nsubq, dsub, lastdsub = _product_quantizer(reader)
    rows = np.empty((m, n), dtype=np.float32)
    codes = codes.reshape(m, nsubq).astype(np.int64)
    for sub in range(nsubq):
        width = lastdsub if sub == nsubq - 1 else dsub
        base = sub * 256 * dsub  # ``get_centroids``: the last sub-quantiser's centroids are lastdsub wide
        index = base + codes[:, sub:sub + 1] * width + np.arange(width)
        rows[:, sub * dsub:sub * dsub + width] = centroids[index]
    norms = np.ones(m, dtype=np.float32)
    if qnorm:
        norm_codes = reader.array(np.uint8, m).astype(np.int64)
        norm_centroids = _product_quantizer(reader)[0]
        norms = norm_centroids[norm_codes]
    return rows, norms


def _huffman_tree(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """``HierarchicalSoftmaxLoss::buildTree``: children of every node, labels (leaves) first."""
    osz = len(counts)
    size = 2 * osz - 1
    left, right = np.full(size, -1, np.int64), np.full(size, -1, np.int64)
    count = [float(c) for c in counts] + [1e15] * (osz - 1)
    leaf, node = osz - 1, osz
    for i in range(osz, size):
        pair = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                pair.append(leaf)
                leaf -= 1
            else:
                pair.append(node)
                node += 1
        left[i], right[i] = pair
        count[i] = count[pair[0]] + count[pair[1]]
    return left, right


@dataclass
class Predictor:
    """A supervised fastText model's tables for ``predict_top``; ``predict`` scores lines."""

    labels: list[str]
    tables: tuple

    @classmethod
    def load(cls, path: str) -> "Predictor | None":
        """The model at local ``path``, or None when this module does not score it as fastText would."""
        with open(path, "rb") as handle:
            reader = _Reader(handle.read())
        magic, version = reader.take("2i")
        if magic != MAGIC or version not in (11, 12):
            return None
        dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, model, bucket, minn, maxn, _rate = reader.take("12i")
        reader.take("d")
        if model != SUPERVISED or loss not in LOSSES:
            return None
        if version == 11:
            maxn = 0  # fastText: supervised models of format 11 have no character n-grams
        size, n_words, n_labels = reader.take("3i")
        reader.take("q")  # tokens
        prune_size = reader.take("q")
        entries = [reader.entry() for _ in range(size)]
        # fastText's pruneidx_ (bucket -> row), saved as int32 pairs
        prune = reader.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2).astype(np.int64)
        quantised_input = reader.take("?")
        input_rows, input_norms = _matrix(reader, quantised_input)
        quantised_output = reader.take("?")
        output_rows, output_scale = _matrix(reader, quantised_output)
        words = [word for word, _, kind in entries[:n_words]]
        if ([kind for _, _, kind in entries] != [WORD] * n_words + [LABEL] * n_labels or EOS not in words
                or input_rows.shape[1] != dim or (word_ngrams > 1 or maxn > 0) and bucket <= 0):
            return None
        if quantised_input:
            input_rows = input_rows * input_norms[:, None]  # float32 products, as addcode's alpha * c
        try:
            labels = [word.decode("utf-8") for word, _, _ in entries[n_words:]]
        except UnicodeDecodeError:
            return None

        word_offsets = np.zeros(n_words + 1, dtype=np.int64)
        word_offsets[1:] = np.cumsum([len(word) for word in words])
        word_bytes = np.frombuffer(b"".join(words), dtype=np.uint8)
        slots, hashes = kernels.hash_table(word_bytes, word_offsets, 1 << max(4, (2 * n_words).bit_length()))
        prune_mode = (kernels.PRUNE_NONE if prune_size < 0 else kernels.PRUNE_ALL if prune_size == 0
                      else kernels.PRUNE_MAP)
        prune_slots = _prune_table(prune)
        eos = words.index(EOS)
        word_row_offsets, word_rows = kernels.word_rows_table(word_bytes, word_offsets, eos, minn, maxn, bucket,
                                                              prune_mode, prune_slots)
        tree_left, tree_right = (_huffman_tree([count for _, count, _ in entries[n_words:]])
                                 if LOSSES[loss] == kernels.HIERARCHICAL else (np.zeros(0, np.int64),) * 2)
        records = kernels.word_records(word_bytes, word_offsets, word_row_offsets)
        tables = (
            SPACE, slots, hashes, word_bytes, records, word_rows,
            np.frombuffer(LABEL_PREFIX, dtype=np.uint8), eos, minn, maxn, max(word_ngrams, 1), max(bucket, 1),
            prune_mode, prune_slots, _aligned(input_rows), np.ascontiguousarray(output_rows),
            output_scale, LOSSES[loss], tree_left, tree_right,
        )
        return cls(labels, tables)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The labels and every table (a number as a 0-d array), for ``from_arrays``."""
        arrays = {str(i): np.asarray(table) for i, table in enumerate(self.tables)}
        arrays["labels"] = np.array(self.labels, dtype=str)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Predictor":
        tables = [arrays[str(i)] if arrays[str(i)].ndim else arrays[str(i)][()] for i in range(len(arrays) - 1)]
        tables[_INPUT_ROWS] = _aligned(tables[_INPUT_ROWS])  # a read array starts where the allocator put it
        return cls(arrays["labels"].tolist(), tuple(tables))

    def predict(self, lines: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label index into ``labels``, float32 probability) of each line, as fastText's
        ``predict(line, k=1)``: Arrow strings or Python strings, without newlines."""
        if not isinstance(lines, (pa.Array, pa.ChunkedArray)):
            lines = pa.array(lines, type=pa.string())
        elif isinstance(lines, pa.ChunkedArray):
            lines = lines.combine_chunks()
        offsets, data = utf8_buffers(pc.fill_null(lines, ""))
        return kernels.predict_top(data, offsets.astype(np.int64), *self.tables)


_INPUT_ROWS = 14  # the input rows' place in ``Predictor.tables``


def _prune_table(prune: np.ndarray) -> np.ndarray:
    """A pruned model's kept buckets (``prune``: rows of bucket, input row; a bucket saved twice keeps
    its last row, as fastText's map does) as ``_bucket_row`` probes them: entries ``bucket << 32 |
    row`` from slot ``bucket * 0x9E3779B1`` on, -1 where empty."""
    kept = dict(zip(prune[:, 0].tolist(), prune[:, 1].tolist()))
    size = 1 << max(4, (2 * len(kept)).bit_length())
    slots = np.full(size, -1, dtype=np.int64)
    mask = size - 1
    for bucket, row in kept.items():
        slot = (bucket * 0x9E3779B1) & mask
        while slots[slot] != -1:
            slot = (slot + 1) & mask
        slots[slot] = bucket << 32 | row
    return slots


def _aligned(matrix: np.ndarray) -> np.ndarray:
    """A float32 copy of ``matrix`` starting on a 64-byte boundary: with 16 columns a row is one
    cache line, not two."""
    raw = np.empty(matrix.size * 4 + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    aligned = raw[start:start + matrix.size * 4].view(np.float32).reshape(matrix.shape)
    aligned[...] = matrix
    return aligned


class Classifier:
    """A fastText model file whose ``top`` is ``predict(line, k=1)``: compiled when ``Predictor.load``
    takes the model, else fastText's own call. ``model`` is fastText's, for the rest of its API
    (loaded on first use). ``labels``: the model's labels."""

    def __init__(self, path: str):
        self.path = path
        # A process after the first on this machine reads the labels, and at the first ``top`` the
        # compiled predict's tables, back from this machine's copy (``pipeline.table_cache``:
        # 0.035 s less of a quality worker's first task), loading neither fastText nor the file; a
        # missing file still fails here (its stamp).
        name, key, modules = self._cache_key()
        stored = table_cache.read_arrays(name, key, *modules, only={"labels"})
        # fastText's load fails on a broken file (which has another stamp than the one stored)
        self.labels: list[str] = stored["labels"].tolist() if stored else list(self.model.get_labels())

    @cached_property
    def model(self):
        import fasttext  # here, not at the top: validating a config must not need the model library

        return fasttext.load_model(self.path)

    @cached_property
    def compiled(self) -> Predictor | None:
        """The compiled predict, read on the first ``top``: from this machine's copy, else from the file
        (and then kept for later processes). Not in ``__init__``: the driver builds each stage once to
        check its model (``planning.check_stage_assets``), and only workers need the tables (from the
        file, numba's import and the kernels' load come with them: 0.7 s)."""
        name, key, modules = self._cache_key()
        stored = table_cache.read_arrays(name, key, *modules)
        if stored is not None:
            return Predictor.from_arrays(stored)
        compiled = Predictor.load(self.path)
        if compiled is None or compiled.labels != self.labels:
            return None
        table_cache.write_arrays(name, key, compiled.to_arrays(), *modules)
        return compiled

    def _cache_key(self) -> tuple[str, str, tuple]:
        """``table_cache``'s name, key and defining modules of this file's tables."""
        return *table_cache.file_entry("fasttext", self.path), (sys.modules[__name__], kernels)

    def top(self, lines: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(label index into ``labels``, float32 probability) of each line (no newlines)."""
        if self.compiled is not None:
            return self.compiled.predict(lines)
        if isinstance(lines, (pa.Array, pa.ChunkedArray)):
            # fastText's binding takes UTF-8 bytes as they are: the newline its Python wrapper adds is added here.
            binary = pa.large_binary() if pa.types.is_large_string(lines.type) else pa.binary()
            encoded = pc.binary_join_element_wise(pc.fill_null(lines, ""), "", "\n").cast(binary).to_pylist()
        else:
            encoded = [line.encode("utf-8") + b"\n" for line in lines]
        labels, probabilities = self.model.f.multilinePredict(encoded, 1, 0.0, "replace")
        index = {label: i for i, label in enumerate(self.labels)}
        best = np.fromiter((index[label[0]] for label in labels), dtype=np.int64, count=len(encoded))
        top = np.fromiter((p[0] for p in probabilities), dtype=np.float32, count=len(encoded))
        return best, top
