"""The tokenizer's training sample: deterministic, weighted by category and language, capped by bytes.

Two streaming passes over the input shards, read as Parquet record batches, so memory follows the
size of the sample, never of the corpus:

1. ``plan_sample``: each document gets two uniform numbers from a hash of (seed, id). The first
   holds it out for evaluation (``holdout_fraction``); the rest get the sampling key
   ``log(u) / weight`` (Efraimidis-Spirakis weighted sampling without replacement), and the sample
   is the documents with the largest keys, taken until ``sample_bytes`` is reached. Only the
   current best candidates are kept, and the pass ends with one threshold key. Held-out documents
   are capped the same way at ``eval_bytes``.
2. ``write_sample``: documents at or above the threshold are written to a local text file, one
   training line per line of text. Lines longer than ``max_sentence_length`` bytes, which
   sentencepiece would skip without a word, are cut at a space or a character boundary and counted.

Which documents are drawn depends only on (id, text, category, lang) and the config, never on shard
order, batch size or worker count.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from tokenizer.config import TokenizerConfig

BATCH_ROWS = 1024
UNKNOWN_LANG = "und"  # when the input has no `lang` column (langid did not run)
_MIN_COMPACT = 65_536  # candidates buffered before the selection is re-sorted


@dataclass(frozen=True)
class SamplePlan:
    """Outcome of the first pass: the two threshold keys and the corpus's composition."""

    sample_threshold: float
    heldout_threshold: float
    corpus: dict[str, Any]


@dataclass
class SampleResult:
    """Outcome of the second pass: what went into the sample file, and the held-out documents."""

    stats: dict[str, Any]
    heldout: list[dict[str, str]] = field(default_factory=list)


def draw_sample(
    config: TokenizerConfig, shard_paths: list[str], sample_path: str, log=print
) -> SampleResult:
    """Both passes: write the training lines to ``sample_path``; return stats and held-out documents."""
    log(f"tokenizer: planning a {config.sample_bytes:,}-byte sample over {len(shard_paths)} shards")
    plan = plan_sample(config, shard_paths)
    result = write_sample(config, shard_paths, plan, sample_path)
    sample = result.stats["sample"]
    log(
        f"tokenizer: sample of {sample['docs']:,} documents, {sample['bytes']:,} bytes, "
        f"{sample['lines']:,} lines ({sample['long_lines']:,} long lines split); "
        f"{len(result.heldout):,} held-out documents"
    )
    return result


def plan_sample(config: TokenizerConfig, shard_paths: list[str]) -> SamplePlan:
    """First pass: find the sampling and held-out thresholds in bounded memory."""
    sample = _TopBytes(config.sample_bytes)
    heldout = _TopBytes(config.eval_bytes)
    corpus = _Composition()
    for batch in read_batches(shard_paths):
        keys = document_keys(config, batch)
        sample.offer(keys.sample, keys.sizes)
        heldout.offer(keys.heldout, keys.sizes)
        corpus.add(batch, np.ones(batch.num_rows, dtype=bool), keys.sizes)
    return SamplePlan(sample.finish(), heldout.finish(), corpus.as_dict())


def write_sample(
    config: TokenizerConfig, shard_paths: list[str], plan: SamplePlan, sample_path: str
) -> SampleResult:
    """Second pass: write the drawn documents' lines; collect the held-out documents."""
    drawn = _Composition()
    lines = {"lines": 0, "long_lines": 0, "chunks_from_long_lines": 0}
    heldout: list[dict[str, str]] = []
    with open(sample_path, "w", encoding="utf-8", newline="\n") as out:
        for batch in read_batches(shard_paths):
            keys = document_keys(config, batch)
            in_sample = np.isfinite(keys.sample) & (keys.sample >= plan.sample_threshold)
            in_heldout = np.isfinite(keys.heldout) & (keys.heldout >= plan.heldout_threshold)
            drawn.add(batch, in_sample, keys.sizes)
            texts = batch.column("text").to_pylist()
            for row in np.flatnonzero(in_sample):
                _write_lines(texts[row], config.max_sentence_length, out, lines)
            heldout.extend(_rows(batch, np.flatnonzero(in_heldout)))
    stats = {
        "corpus": plan.corpus,
        "sample": {**drawn.as_dict(), **lines},
        "heldout": {"docs": len(heldout), "bytes": sum(len(d["text"].encode()) for d in heldout)},
    }
    return SampleResult(stats=stats, heldout=heldout)


def heldout_documents(config: TokenizerConfig, shard_paths: list[str]) -> list[dict[str, str]]:
    """The held-out documents alone (for evaluating an already trained tokenizer)."""
    plan = plan_sample(config, shard_paths)
    documents: list[dict[str, str]] = []
    for batch in read_batches(shard_paths):
        keys = document_keys(config, batch)
        chosen = np.isfinite(keys.heldout) & (keys.heldout >= plan.heldout_threshold)
        documents.extend(_rows(batch, np.flatnonzero(chosen)))
    return documents


def read_batches(shard_paths: list[str]) -> Iterator[pa.RecordBatch]:
    """Record batches of (id, text, category, lang) from Parquet files (local paths or URIs)."""
    for path in shard_paths:
        filesystem, resolved = storage.resolve(path)
        with filesystem.open_input_file(resolved) as source:
            parquet = pq.ParquetFile(source)
            has_lang = "lang" in parquet.schema_arrow.names
            columns = ["id", "text", "category"] + (["lang"] if has_lang else [])
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                if not has_lang:
                    batch = batch.append_column(
                        "lang", pa.array([UNKNOWN_LANG] * batch.num_rows, type=pa.string())
                    )
                yield batch


@dataclass(frozen=True)
class DocumentKeys:
    """Per-row sampling key, held-out key (-inf where not a candidate) and UTF-8 text size."""

    sample: np.ndarray
    heldout: np.ndarray
    sizes: np.ndarray


def document_keys(config: TokenizerConfig, batch: pa.RecordBatch) -> DocumentKeys:
    ids = batch.column("id").to_pylist()
    weights = np.array(
        [
            config.weight(category, lang)
            for category, lang in zip(
                batch.column("category").to_pylist(), batch.column("lang").to_pylist()
            )
        ],
        dtype=np.float64,
    )
    u_holdout = uniform(config.seed, "holdout", ids)
    held = u_holdout < config.holdout_fraction
    # Held-out documents are taken by ascending hash, hence the minus sign.
    heldout = np.where(held, -u_holdout, -np.inf)
    sample = np.full(len(ids), -np.inf)
    drawable = ~held & (weights > 0)
    sample[drawable] = np.log(uniform(config.seed, "sample", ids)[drawable]) / weights[drawable]
    sizes = pc.binary_length(batch.column("text")).fill_null(0).to_numpy().astype(np.int64)
    return DocumentKeys(sample=sample, heldout=heldout, sizes=sizes)


def uniform(seed: int, salt: str, ids: list[str]) -> np.ndarray:
    """A number in (0, 1] per id, from a keyed hash: stable across runs, machines and Python versions."""
    prefix = f"{seed}\x1f{salt}\x1f".encode()
    hashes = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + doc_id.encode(), digest_size=8).digest(), "little")
            for doc_id in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )
    return (hashes.astype(np.float64) + 0.5) / 2.0**64


def split_long_line(line: str, limit: int) -> list[str]:
    """Cut ``line`` into pieces of at most ``limit`` UTF-8 bytes, preferring to cut before a space.

    A cut before a space keeps ``▁word`` pieces intact; text without spaces (Chinese, minified code)
    is cut at a character boundary.
    """
    data = line.encode()
    if len(data) <= limit:
        return [line]
    pieces = []
    start = 0
    while len(data) - start > limit:
        cut = start + limit
        while data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte: back off to the character start
            cut -= 1
        space = data.rfind(b" ", start + limit // 2, cut + 1)
        if space > start:
            cut = space
        pieces.append(data[start:cut].decode())
        start = cut
    pieces.append(data[start:].decode())
    return pieces


def _write_lines(text: str | None, limit: int, out, counts: dict[str, int]) -> None:
    # Empty lines teach nothing: newline runs are user-defined symbols, never merged.
    for line in (text or "").split("\n"):
        if not line:
            continue
        pieces = split_long_line(line, limit)
        if len(pieces) > 1:
            counts["long_lines"] += 1
            counts["chunks_from_long_lines"] += len(pieces)
        for piece in pieces:
            out.write(piece)
            out.write("\n")
        counts["lines"] += len(pieces)


def _rows(batch: pa.RecordBatch, rows: np.ndarray) -> list[dict[str, str]]:
    if len(rows) == 0:
        return []
    return batch.take(pa.array(rows)).to_pylist()


class _TopBytes:
    """The highest-keyed items whose sizes first add up to ``cap`` (the last one may cross it).

    Items below the running threshold are dropped on arrival and the buffer is re-sorted only when
    it has grown past the selection, so memory stays proportional to the selection.
    Ties with the threshold key are all kept, so "key >= threshold" is exactly the selection.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self.threshold = -np.inf if cap > 0 else np.inf
        self.keys = np.empty(0)
        self.sizes = np.empty(0, dtype=np.int64)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending_count = 0

    def offer(self, keys: np.ndarray, sizes: np.ndarray) -> None:
        candidate = np.isfinite(keys) & (keys >= self.threshold)
        if candidate.any():
            self.pending.append((keys[candidate], sizes[candidate]))
            self.pending_count += int(candidate.sum())
        if self.pending_count > max(len(self.keys), _MIN_COMPACT):
            self._compact()

    def finish(self) -> float:
        """The threshold key: -inf when everything offered fits under the cap."""
        self._compact()
        return float(self.threshold)

    def _compact(self) -> None:
        if not self.pending:
            return
        keys = np.concatenate([self.keys, *(k for k, _ in self.pending)])
        sizes = np.concatenate([self.sizes, *(s for _, s in self.pending)])
        self.pending, self.pending_count = [], 0
        order = np.argsort(-keys, kind="stable")
        keys, sizes = keys[order], sizes[order]
        reached = np.cumsum(sizes) >= self.cap
        if reached.any():
            last = int(np.argmax(reached))
            keep = int(np.searchsorted(-keys, -keys[last], side="right"))
            keys, sizes = keys[:keep], sizes[:keep]
            self.threshold = keys[-1]
        self.keys, self.sizes = keys, sizes


class _Composition:
    """Documents and bytes per category and per language."""

    def __init__(self) -> None:
        self.docs = 0
        self.bytes = 0
        self.by_category: dict[str, dict[str, int]] = {}
        self.by_lang: dict[str, dict[str, int]] = {}

    def add(self, batch: pa.RecordBatch, mask: np.ndarray, sizes: np.ndarray) -> None:
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return
        categories = batch.column("category").to_pylist()
        langs = batch.column("lang").to_pylist()
        for row in rows:
            size = int(sizes[row])
            self.docs += 1
            self.bytes += size
            for table, key in ((self.by_category, categories[row]), (self.by_lang, langs[row])):
                entry = table.setdefault(str(key), {"docs": 0, "bytes": 0})
                entry["docs"] += 1
                entry["bytes"] += size

    def as_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "bytes": self.bytes,
            "by_category": dict(sorted(self.by_category.items())),
            "by_lang": dict(sorted(self.by_lang.items())),
        }
