"""Benchmark decontamination: drop (or cut) text that shares long n-grams with evaluation test sets.

Contract: a document is *contaminated* when at least ``min_matches`` distinct n-grams of it are in
the benchmark index: 13-grams of normalised words (``word_ngram``; GPT-3 and LLaMA used 13) or,
for Chinese and Japanese, ``cjk_ngram`` consecutive CJK characters (default 20, chosen by
measurement, README "Decontamination and PII"). Normalisation (``ngrams.py``) ignores case,
whitespace, punctuation and markup, so reformatted copies match too.

- ``action: remove`` (default): contaminated documents go to removed/ with reason
  ``benchmark_contamination``.
- ``action: redact``: the matched spans (from the first character of each matched n-gram to the last
  of it, merged) are replaced by ``redaction``; the document is kept unless fewer than
  ``min_chars_after_redact`` non-space characters remain (then removed, same reason).

Every row gets ``contamination`` (string, null when clean): a JSON list, one entry per benchmark
item matched (at most ``max_reported_items``), ``{"benchmark", "item", "ngram", "matches", "spans"}``:
the benchmark's name, the item's id, the text of its first matched n-gram as normalised tokens, how
many distinct n-grams matched and the ``[start, end)`` character offsets of the matched text in the
document as it came in.

Benchmarks are files named in the config (``benchmarks``: JSONL, JSONL.gz or Parquet; ``fields``
to index, ``a+b`` joins two fields with a newline so n-grams may run across them). The index
(``index.py``) is an asset: ``ensure_assets`` builds it in the driver when missing or built from
other files or settings, ``fingerprint`` is its sha256 (part of the stage hash), and each worker
loads it once per process from ``index_path`` (a path every node sees, like the quality model).

``frequency_cap`` (documents): ``prepare`` counts, over the stage's whole input (``context.map``,
one task per shard), how many documents contain each benchmark n-gram; n-grams found in more
documents than the cap are boilerplate (licence headers, ``if __name__ == "__main__":``) and are
ignored. null skips that pass. The ignored n-grams and their counts go to ``_scratch/``.

Stats: ``contaminated_docs.<benchmark>``, ``matched_ngrams.<benchmark>``, ``ignored_common_hits``,
``redacted_docs``, ``redacted_chars``, ``examples.<benchmark>`` (id, item, n-gram).
"""
from __future__ import annotations

import io
import json
import os
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from pipeline import storage
from pipeline.stage import PrepareContext, Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats
from stages.decontaminate.index import Index, build_index, load_index, read_meta, settings
from stages.decontaminate.ngrams import ngrams, spans, text_hashes

REASON = "benchmark_contamination"
IGNORED_FILE = "ignored_ngrams.npy"


class Benchmark(StageConfig):
    """One benchmark file to index."""

    name: str = Field(description="how removals name it, e.g. gsm8k")
    path: str = Field(description="JSONL (.gz) or Parquet file of the test set")
    fields: list[str] = Field(description="fields whose text is indexed; 'a+b' indexes a and b joined", min_length=1)
    id_field: str | None = Field(None, description="field naming each item; null: the row number")


class DecontaminateConfig(StageConfig):
    """The ``stages.decontaminate`` section."""

    benchmarks: list[Benchmark] = Field(default_factory=list, description="test sets to remove")
    index_path: str = Field("models/decontam/index.npz", description="where the n-gram index is built")
    word_ngram: int = Field(13, ge=3, le=64, description="words per n-gram (space-delimited text)")
    cjk_ngram: int = Field(20, ge=3, le=128, description="characters per n-gram of Chinese/Japanese text")
    min_matches: int = Field(1, ge=1, description="distinct matched n-grams that make a document contaminated")
    action: Literal["remove", "redact"] = "remove"
    redaction: str = Field("", description="what replaces a cut span (action: redact)")
    min_chars_after_redact: int = Field(
        50, ge=0, description="a redacted document with fewer non-space characters left is removed")
    frequency_cap: int | None = Field(
        20, ge=1, description="ignore benchmark n-grams found in more input documents than this; null: no corpus pass")
    max_reported_items: int = Field(10, ge=1, description="entries of `contamination` per document")

    @field_validator("benchmarks")
    @classmethod
    def _unique_names(cls, benchmarks: list[Benchmark]) -> list[Benchmark]:
        names = [b.name for b in benchmarks]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names must be unique, got {names}")
        return benchmarks


class Decontaminate(Stage):
    """Removes or redacts documents that share n-grams with benchmark test data (module docstring)."""

    name = "decontaminate"
    Config = DecontaminateConfig
    whole_shard = False  # each document is judged alone: the worker streams the shard in batches

    def __init__(self, config: DecontaminateConfig):
        super().__init__(config)
        self._ignored = np.zeros(0, np.uint64)

    # ------------------------------------------------------------------ assets and the corpus pass

    @classmethod
    def ensure_assets(cls, config: DecontaminateConfig, log) -> None:
        """Build the index when it is missing or was built from other files or settings."""
        for bench in config.benchmarks:
            if not os.path.exists(bench.path):
                raise FileNotFoundError(f"decontaminate: benchmark {bench.name!r}: no file {bench.path}")
        meta = read_meta(config.index_path)
        if meta is not None and meta.get("settings") == settings(config):
            return
        log(f"decontaminate: building the benchmark index {config.index_path}")
        meta = build_index(config, config.index_path, log=log)
        log(f"decontaminate: {meta['distinct_ngrams']} distinct n-grams in {meta['build_seconds']} s")

    @classmethod
    def fingerprint(cls, config: DecontaminateConfig) -> str:
        return storage.sha256(*storage.resolve(config.index_path)) if os.path.exists(config.index_path) else ""

    @property
    def index(self) -> Index:
        return load_index(self.config.index_path)

    def prepare(self, context: PrepareContext) -> None:
        """Count, per benchmark n-gram, the input documents that contain it; keep those over the cap."""
        if self.config.frequency_cap is None or not self.config.benchmarks:
            return
        target = storage.join(context.scratch, IGNORED_FILE)
        if storage.exists(context.filesystem, target):
            return
        storage.remove_temporaries(context.filesystem, context.scratch)
        items = [(path, context.filesystem, self.config) for path in context.inputs.values()]
        parts = context.map(count_documents, items)
        hashes = np.concatenate([h for h, _ in parts]) if parts else np.zeros(0, np.uint64)
        counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, np.int64)
        unique, inverse = np.unique(hashes, return_inverse=True)
        totals = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
        common = totals > self.config.frequency_cap
        index = self.index
        rows = index.lookup(unique[common])
        summary = sorted(({"benchmark": index.names[index.bench[r]], "item": index.item_id(index.bench[r], index.item[r]),
                           "documents": int(n)} for r, n in zip(rows, totals[common])), key=lambda d: -d["documents"])
        storage.write_json(context.filesystem, storage.join(context.scratch, "ignored_ngrams.json"),
                           {"cap": self.config.frequency_cap, "ignored": int(common.sum()),
                            "benchmark_ngrams_seen": int(len(unique)), "most_common": summary[:50]})
        buffer = io.BytesIO()
        np.save(buffer, unique[common])
        storage.write_bytes(context.filesystem, target, buffer.getvalue())
        context.log(f"{int(common.sum())} of {len(unique)} benchmark n-grams seen in the corpus are in more "
                    f"than {self.config.frequency_cap} documents: ignored")

    def begin_shard(self, shard: str, scratch: str, filesystem) -> None:
        if self.config.frequency_cap is None or not self.config.benchmarks:
            return
        path = storage.join(scratch, IGNORED_FILE)
        if not storage.exists(filesystem, path):
            raise RuntimeError(f"decontaminate: no {path}; prepare did not finish")
        with filesystem.open_input_file(path) as handle:
            self._ignored = np.load(io.BytesIO(handle.read()))

    # ------------------------------------------------------------------------------ per batch

    def matches(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(text index, index row) of every n-gram of ``texts`` in the index and not ignored."""
        grams = ngrams(texts, self.config.word_ngram, self.config.cjk_ngram)
        rows = self.index.lookup(grams.hash)
        hit = rows >= 0
        if len(self._ignored) and hit.any():
            hit &= ~np.isin(grams.hash, self._ignored)
        return grams.text[hit], rows[hit]

    def process(self, batch: pa.Table) -> StageOutput:
        """Find each document's benchmark n-grams; remove or redact the contaminated ones."""
        stats = Stats()
        texts = batch.column("text").combine_chunks() if batch.num_rows else pa.array([], pa.string())
        docs, rows = self.matches(texts) if batch.num_rows and self.config.benchmarks else (np.zeros(0, np.int64),) * 2
        reasons: list[str | None] = [None] * batch.num_rows
        column: list[str | None] = [None] * batch.num_rows
        new_texts: dict[int, str] = {}
        ids = batch.column("id")
        for doc in np.unique(docs):
            doc_rows = np.unique(rows[docs == doc])
            if len(doc_rows) < self.config.min_matches:
                continue
            text = texts[int(doc)].as_py()
            report = self._report(text, set(doc_rows.tolist()))
            column[doc] = json.dumps(report[: self.config.max_reported_items], ensure_ascii=False)
            for entry in report:
                stats.add("matched_ngrams", entry["benchmark"], entry["matches"])
            for name in sorted({entry["benchmark"] for entry in report}):
                stats.add("contaminated_docs", name, 1)
                first = next(e for e in report if e["benchmark"] == name)
                stats.example("examples", name, {"id": ids[int(doc)].as_py(), "item": first["item"], "ngram": first["ngram"]})
            if self.config.action == "remove":
                reasons[doc] = REASON
                continue
            cut = _cut(text, _merge([s for entry in report for s in entry["spans"]]), self.config.redaction)
            stats.add("redacted_chars", len(text) - len(cut) + 0)
            if sum(not c.isspace() for c in cut) < self.config.min_chars_after_redact:
                reasons[doc] = REASON
            else:
                stats.add("redacted_docs", 1)
                new_texts[int(doc)] = cut
        columns = {"contamination": pa.array(column, pa.string())}
        if new_texts:
            values = texts.to_pylist()
            for doc, cut in new_texts.items():
                values[doc] = cut
            columns["text"] = pa.array(values, pa.string())
        return split(batch, reasons, stats, **columns)

    def _report(self, text: str, wanted: set[int]) -> list[dict]:
        """One entry per matched benchmark item: first n-gram text, distinct matches, spans."""
        index, n = self.index, (self.config.word_ngram, self.config.cjk_ngram)
        tokens = spans(text)
        ignored = set(self._ignored.tolist()) if len(self._ignored) else set()
        entries: dict[tuple[int, int], dict] = {}
        for stream, grams in text_hashes(text, *n, tokens).items():
            if not grams:
                continue
            found = index.lookup(np.array([h for h, _ in grams], np.uint64))
            words, offsets = (tokens.words, tokens.word_spans) if stream == 0 else (tokens.cjk, tokens.cjk_spans)
            joiner = " " if stream == 0 else ""
            for (h, start), row in zip(grams, found.tolist()):
                if row < 0 or row not in wanted or h in ignored:
                    continue
                key = (int(index.bench[row]), int(index.item[row]))
                span = [offsets[start][0], offsets[start + n[stream] - 1][1]]
                entry = entries.get(key)
                if entry is None:
                    entries[key] = {"benchmark": index.names[key[0]], "item": index.item_id(*key),
                                    "ngram": joiner.join(words[start:start + n[stream]]),
                                    "matches": 1, "spans": [span], "_rows": {row}}
                else:
                    entry["spans"].append(span)
                    entry["_rows"].add(row)
                    entry["matches"] = len(entry["_rows"])
        report = sorted(entries.values(), key=lambda e: (-e["matches"], e["benchmark"], e["item"]))
        for entry in report:
            entry.pop("_rows")
            entry["spans"] = _merge(entry["spans"])
        return report


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    """Overlapping or touching [start, end) ranges joined, in order."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _cut(text: str, ranges: list[list[int]], redaction: str) -> str:
    pieces, position = [], 0
    for start, end in ranges:
        pieces.append(text[position:start])
        pieces.append(redaction)
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def count_documents(item) -> tuple[np.ndarray, np.ndarray]:
    """One shard of ``prepare``'s pass: (benchmark n-gram hash, documents of the shard containing it)."""
    path, filesystem, config = item
    with filesystem.open_input_file(path) as source:
        texts = pq.ParquetFile(source).read(columns=["text"]).column("text").combine_chunks()
    stage = Decontaminate(config)
    grams = ngrams(texts, config.word_ngram, config.cjk_ngram)
    hit = stage.index.lookup(grams.hash) >= 0
    pairs = np.unique(np.stack([grams.text[hit].astype(np.uint64), grams.hash[hit]], axis=1), axis=0)
    hashes, counts = np.unique(pairs[:, 1], return_counts=True) if len(pairs) else (np.zeros(0, np.uint64), np.zeros(0, np.int64))
    return hashes.astype(np.uint64), counts.astype(np.int64)
