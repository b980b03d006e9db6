"""What the tokenizer's sample is drawn by: per-document keys and the bounded selections over them.

Every document gets two uniform numbers from a keyed hash of (seed, id): the first decides whether it
is held out for evaluation, the second gives its weighted sampling key (``document_keys``).
``TopBytes`` keeps the highest-keyed documents up to a byte cap in memory proportional to the
selection, and merges with another ``TopBytes``'s selection exactly; ``Composition`` counts documents
and bytes per category and language, and merges too. ``read_batches`` streams the columns they need.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
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


class TopBytes:
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

    def selection(self) -> tuple[np.ndarray, np.ndarray]:
        """The selected items' keys and sizes: what another ``TopBytes`` merges (``offer``)."""
        self._compact()
        return self.keys, self.sizes

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


class Composition:
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

    def merge(self, other: dict[str, Any]) -> None:
        """Add another composition's ``as_dict``."""
        self.docs += other["docs"]
        self.bytes += other["bytes"]
        for table, entries in ((self.by_category, other["by_category"]), (self.by_lang, other["by_lang"])):
            for key, counts in entries.items():
                entry = table.setdefault(key, {"docs": 0, "bytes": 0})
                entry["docs"] += counts["docs"]
                entry["bytes"] += counts["bytes"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "docs": self.docs,
            "bytes": self.bytes,
            "by_category": dict(sorted(self.by_category.items())),
            "by_lang": dict(sorted(self.by_lang.items())),
        }
