"""The tokenizer's training sample: deterministic, weighted by category and language, capped by bytes.

Two streaming passes over the input shards, read as Parquet record batches, so memory follows the
size of the sample, never of the corpus. Each pass runs as tasks (``executor.map``) over contiguous
groups of shards, and the driver only merges what they return:

1. ``plan_sample``: each document gets two uniform numbers from a hash of (seed, id)
   (``tokenizer.sample_keys``, which also holds the bounded selections and counters). The first
   holds it out for evaluation (``holdout_fraction``); the rest get the sampling key
   ``log(u) / weight`` (Efraimidis-Spirakis weighted sampling without replacement), and the sample
   is the documents with the largest keys, taken until ``sample_bytes`` is reached. A task keeps
   only its group's best candidates (a document of the corpus-wide selection is in its group's
   selection, so nothing the merge needs is dropped); the driver merges them into one threshold
   key. Held-out documents are capped the same way at ``eval_bytes``.
2. ``write_sample``: each task writes its group's documents at or above the threshold to
   ``part-NNNNN.txt`` in the sample directory (local or a URI every node can read), one training line
   per line of text, and returns its held-out documents. Lines longer than ``max_sentence_length``
   bytes, which sentencepiece would skip without a word, are cut at a space or a character boundary
   and counted. The sample is the parts in order (``read_sample``), i.e. the documents in shard order.

Which documents are drawn, and the sample's lines in order, depend only on (id, text, category,
lang), the config and the order of the shards, never on batch size, grouping or worker count.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.executor import InProcessExecutor
from tokenizer.config import TokenizerConfig
from tokenizer.sample_keys import Composition, TopBytes, document_keys, read_batches

_WRITE_BLOCK = 1 << 20  # characters of sample text encoded and written at once
TASKS_PER_WORKER = 2  # groups of shards per worker: a slow group does not hold up the pass alone


@dataclass(frozen=True)
class SamplePlan:
    """Outcome of the first pass: the two threshold keys and the corpus's composition."""

    sample_threshold: float
    heldout_threshold: float
    corpus: dict[str, Any]


@dataclass
class SampleResult:
    """Outcome of the second pass: what went into the sample, its part files in order (none when
    only the held-out documents were wanted), and the held-out documents."""

    stats: dict[str, Any]
    heldout: list[dict[str, str]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PlanPart:
    """A first-pass task: one group of shards (what a failure message names)."""

    config: TokenizerConfig = field(repr=False)
    shard_paths: list[str]


@dataclass(frozen=True)
class PartPlan:
    """What a first-pass task returns: its group's candidates (keys and sizes) and composition."""

    sample: tuple[np.ndarray, np.ndarray]
    heldout: tuple[np.ndarray, np.ndarray]
    corpus: dict[str, Any]


@dataclass(frozen=True)
class WritePart:
    """A second-pass task: one group of shards, the plan, and its part file (None: held-out only)."""

    config: TokenizerConfig = field(repr=False)
    shard_paths: list[str]
    plan: SamplePlan = field(repr=False)
    path: str | None


def draw_sample(
    config: TokenizerConfig, shard_paths: list[str], sample_dir: str, log=print, executor=None
) -> SampleResult:
    """Both passes: write the training lines under ``sample_dir``; return stats, held-out documents
    and the part files. ``executor`` (``pipeline.executor``) runs the tasks; None: this process."""
    log(f"tokenizer: planning a {config.sample_bytes:,}-byte sample over {len(shard_paths)} shards")
    plan = plan_sample(config, shard_paths, executor)
    result = write_sample(config, shard_paths, plan, sample_dir, executor)
    sample = result.stats["sample"]
    log(
        f"tokenizer: sample of {sample['docs']:,} documents, {sample['bytes']:,} bytes, "
        f"{sample['lines']:,} lines ({sample['long_lines']:,} long lines split); "
        f"{len(result.heldout):,} held-out documents"
    )
    return result


def plan_sample(config: TokenizerConfig, shard_paths: list[str], executor=None) -> SamplePlan:
    """First pass: find the sampling and held-out thresholds in bounded memory."""
    executor = executor or InProcessExecutor()
    sample = TopBytes(config.sample_bytes)
    heldout = TopBytes(config.eval_bytes)
    corpus = Composition()
    tasks = [PlanPart(config, group) for group in _groups(shard_paths, executor)]
    for part in executor.map(plan_part, tasks, "tokenizer sample plan"):
        sample.offer(*part.sample)
        heldout.offer(*part.heldout)
        corpus.merge(part.corpus)
    return SamplePlan(sample.finish(), heldout.finish(), corpus.as_dict())


def plan_part(task: PlanPart) -> PartPlan:
    """The first pass over one group of shards (a task)."""
    sample = TopBytes(task.config.sample_bytes)
    heldout = TopBytes(task.config.eval_bytes)
    corpus = Composition()
    for batch in read_batches(task.shard_paths):
        keys = document_keys(task.config, batch)
        sample.offer(keys.sample, keys.sizes)
        heldout.offer(keys.heldout, keys.sizes)
        corpus.add(batch, np.ones(batch.num_rows, dtype=bool), keys.sizes)
    return PartPlan(sample.selection(), heldout.selection(), corpus.as_dict())


def write_sample(
    config: TokenizerConfig, shard_paths: list[str], plan: SamplePlan, sample_dir: str | None, executor=None
) -> SampleResult:
    """Second pass: write the drawn documents' lines as part files under ``sample_dir`` (None: write
    nothing); collect the held-out documents."""
    executor = executor or InProcessExecutor()
    groups = _groups(shard_paths, executor)
    paths = [storage.join(sample_dir, f"part-{index:05d}.txt") if sample_dir else None
             for index in range(len(groups))]
    tasks = [WritePart(config, group, plan, path) for group, path in zip(groups, paths)]
    drawn = Composition()
    lines = {"lines": 0, "long_lines": 0, "chunks_from_long_lines": 0}
    heldout: list[dict[str, str]] = []
    for part in executor.map(write_part, tasks, "tokenizer sample"):
        drawn.merge(part["drawn"])
        for key in lines:
            lines[key] += part["lines"][key]
        heldout.extend(part["heldout"])
    stats = {
        "corpus": plan.corpus,
        "sample": {**drawn.as_dict(), **lines},
        "heldout": {"docs": len(heldout), "bytes": sum(len(d["text"].encode()) for d in heldout)},
    }
    return SampleResult(stats=stats, heldout=heldout, parts=[path for path in paths if path])


def write_part(task: WritePart) -> dict[str, Any]:
    """The second pass over one group of shards (a task): its part file, composition, line counts
    and held-out documents."""
    config, plan = task.config, task.plan
    drawn = Composition()
    lines = {"lines": 0, "long_lines": 0, "chunks_from_long_lines": 0}
    heldout: list[dict[str, str]] = []
    with _part_file(task.path) as out:
        for batch in read_batches(task.shard_paths):
            keys = document_keys(config, batch)
            in_sample = np.isfinite(keys.sample) & (keys.sample >= plan.sample_threshold)
            in_heldout = np.isfinite(keys.heldout) & (keys.heldout >= plan.heldout_threshold)
            drawn.add(batch, in_sample, keys.sizes)
            if task.path:
                texts = batch.column("text").to_pylist()
                for row in np.flatnonzero(in_sample):
                    _write_lines(texts[row], config.max_sentence_length, out, lines)
            heldout.extend(_rows(batch, np.flatnonzero(in_heldout)))
    return {"drawn": drawn.as_dict(), "lines": lines, "heldout": heldout}


def read_sample(parts: list[str]) -> Iterator[str]:
    """The training lines of the sample's part files, in order, without their newlines."""
    for part in parts:
        filesystem, path = storage.resolve(part)
        with filesystem.open_input_stream(path) as source:
            rest = b""
            while block := source.read(1 << 20):
                # A newline byte is never inside a UTF-8 character: splitting bytes is splitting text.
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    yield line.decode()


def heldout_documents(config: TokenizerConfig, shard_paths: list[str], executor=None) -> list[dict[str, str]]:
    """The held-out documents alone (for evaluating an already trained tokenizer)."""
    plan = plan_sample(config, shard_paths, executor)
    return write_sample(config, shard_paths, plan, None, executor).heldout


def _groups(shard_paths: list[str], executor) -> list[list[str]]:
    """Contiguous groups of shards, about ``TASKS_PER_WORKER`` per worker, in shard order."""
    if not shard_paths:
        return []
    size = math.ceil(len(shard_paths) / (TASKS_PER_WORKER * executor.workers))
    return [shard_paths[start:start + size] for start in range(0, len(shard_paths), size)]


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


@contextmanager
def _part_file(path: str | None) -> Iterator[Any]:
    """A writer of one part file (atomic; text encoded in blocks of about ``_WRITE_BLOCK`` characters),
    or, for no path, none."""
    if path is None:
        yield None
        return
    filesystem, local = storage.resolve(path)
    with storage.atomic_output(filesystem, local) as sink:
        writer = _BlockWriter(sink)
        yield writer
        writer.flush()


class _BlockWriter:
    """``write(text)`` into a binary sink, a block at a time."""

    def __init__(self, sink: Any):
        self.sink, self.pending, self.size = sink, [], 0

    def write(self, text: str) -> None:
        self.pending.append(text)
        self.size += len(text)
        if self.size >= _WRITE_BLOCK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.sink.write("".join(self.pending).encode())
        self.pending, self.size = [], 0


def _rows(batch: pa.RecordBatch, rows: np.ndarray) -> list[dict[str, str]]:
    if len(rows) == 0:
        return []
    return batch.take(pa.array(rows)).to_pylist()
