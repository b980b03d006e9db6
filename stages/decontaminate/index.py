"""The benchmark n-gram index: built once in the driver, read by every worker from its file.

The file (``.npz``, no pickles) holds three arrays, sorted by hash, one row per distinct n-gram:
``hashes`` (uint64), ``bench`` (uint16, index into the benchmark list) and ``item`` (uint32, index
into that benchmark's item ids), plus ``meta``, a JSON document (as bytes) with the settings the
index was built with (``settings``: n-gram sizes, benchmark files and their sha256, fields) and what
was indexed (item ids, n-gram counts, fields too short to give an n-gram). An n-gram that occurs in
several items or benchmarks is attributed to the first one in config order.

Lookups are vectorised: a bitmap over the top bits of the hashes (16 bits per indexed n-gram, so
about 6% of the n-grams of clean text pass it) sends only likely hits to ``np.searchsorted``. Ten
million n-grams take 140 MB in memory (bench/bench_decontam.py ``index``).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.decontaminate.ngrams import ngrams

FORMAT_VERSION = 1


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: str, columns: list[str]) -> list[dict]:
    """The rows of a benchmark file (JSONL, optionally .gz, or Parquet), only ``columns``."""
    if path.endswith(".parquet"):
        table = pq.read_table(path)
        present = [c for c in columns if c in table.column_names]
        return table.select(present).to_pylist()
    opener = gzip.open if path.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                rows.append({c: record.get(c) for c in columns})
    return rows


def settings(config: Any) -> dict:
    """What the index depends on: the n-gram sizes and each benchmark file's content and fields."""
    return {
        "format": FORMAT_VERSION, "word_ngram": config.word_ngram, "cjk_ngram": config.cjk_ngram,
        "benchmarks": [{**bench.model_dump(mode="json"), "sha256": file_sha256(bench.path)}
                       for bench in config.benchmarks],
    }


def build_index(config: Any, path: str, log=print) -> dict:
    """Index every configured benchmark field's n-grams; write ``path`` atomically; return meta."""
    started = time.perf_counter()
    hashes, benches, items, described = [], [], [], []
    for b, bench in enumerate(config.benchmarks):
        parts = [field.split("+") for field in bench.fields]
        columns = sorted({c for p in parts for c in p} | ({bench.id_field} if bench.id_field else set()))
        rows = read_rows(bench.path, columns)
        ids = [str(row.get(bench.id_field)) if bench.id_field else str(i) for i, row in enumerate(rows)]
        texts, owners = [], []
        for i, row in enumerate(rows):
            for fields in parts:
                values = [row.get(f) for f in fields]
                if any(isinstance(v, str) and v for v in values):
                    texts.append("\n".join(v for v in values if isinstance(v, str)))
                    owners.append(i)
        grams = ngrams(pa.array(texts, pa.string()), config.word_ngram, config.cjk_ngram)
        owners_array = np.asarray(owners, dtype=np.int64)
        covered = np.zeros(len(texts), bool)
        covered[grams.text] = True
        hashes.append(grams.hash)
        benches.append(np.full(len(grams.hash), b, np.uint16))
        items.append(owners_array[grams.text].astype(np.uint32) if len(grams.text) else np.zeros(0, np.uint32))
        described.append({"name": bench.name, "items": ids, "rows": len(rows), "fields_indexed": len(texts),
                          "fields_too_short": int((~covered).sum()), "ngrams": int(len(grams.hash))})
        log(f"decontaminate: {bench.name}: {len(rows)} items, {len(grams.hash)} n-grams "
            f"({int((~covered).sum())} fields shorter than one n-gram)")
    all_hashes = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    order = np.argsort(all_hashes, kind="stable")  # stable: a shared n-gram stays with its first item
    sorted_hashes = all_hashes[order]
    first = np.ones(len(sorted_hashes), bool)
    first[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
    keep = order[first]
    meta = {"settings": settings(config), "benchmarks": described, "distinct_ngrams": int(first.sum()),
            "build_seconds": round(time.perf_counter() - started, 3)}
    arrays = {"hashes": all_hashes[keep],
              "bench": (np.concatenate(benches) if benches else np.zeros(0, np.uint16))[keep],
              "item": (np.concatenate(items) if items else np.zeros(0, np.uint32))[keep],
              "meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as handle:
        handle.write(buffer.getvalue())
    os.replace(temporary, path)
    return meta


def read_meta(path: str) -> dict | None:
    """The index's meta document, or None when there is no readable index at ``path``."""
    try:
        with np.load(path) as data:
            return json.loads(bytes(data["meta"]).decode("utf-8"))
    except (OSError, KeyError, ValueError):
        return None


@dataclass
class Index:
    """A loaded index (see the module docstring) with its lookup bitmap."""

    hashes: np.ndarray
    bench: np.ndarray
    item: np.ndarray
    meta: dict
    bitmap: np.ndarray
    shift: np.uint64

    @classmethod
    def load(cls, path: str) -> "Index":
        with np.load(path) as data:
            hashes, bench, item = data["hashes"], data["bench"], data["item"]
            meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        bits = max(16, int(np.ceil(np.log2(max(len(hashes), 1) * 16))))
        shift = np.uint64(64 - bits)
        bitmap = np.zeros(1 << (bits - 3), np.uint8)
        top = hashes >> shift
        np.bitwise_or.at(bitmap, (top >> np.uint64(3)).astype(np.int64),
                         (np.uint8(1) << (top & np.uint64(7)).astype(np.uint8)))
        return cls(hashes, bench, item, meta, bitmap, shift)

    @property
    def names(self) -> list[str]:
        return [b["name"] for b in self.meta["benchmarks"]]

    def item_id(self, bench: int, item: int) -> str:
        return self.meta["benchmarks"][bench]["items"][item]

    def lookup(self, queries: np.ndarray) -> np.ndarray:
        """For each query hash, its row in the index, or -1."""
        out = np.full(len(queries), -1, np.int64)
        if len(queries) == 0 or len(self.hashes) == 0:
            return out
        top = queries >> self.shift
        maybe = (self.bitmap[(top >> np.uint64(3)).astype(np.int64)] >> (top & np.uint64(7)).astype(np.uint8)) & 1
        candidates = np.flatnonzero(maybe)
        if len(candidates):
            position = np.searchsorted(self.hashes, queries[candidates])
            position = np.minimum(position, len(self.hashes) - 1)
            found = self.hashes[position] == queries[candidates]
            out[candidates[found]] = position[found]
        return out


_CACHE: dict[tuple, Index] = {}


def load_index(path: str) -> Index:
    """The index at ``path``, loaded once per process (and again only if the file changes)."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE.clear()  # one index per process at a time: a rebuilt one replaces the old one
        _CACHE[key] = Index.load(path)
    return _CACHE[key]
