"""Dedup's all-to-all exchanges, read directly or through a gather level (a two-level shuffle).

An exchange: a map step writes one file per source (a shard or a partition) sorted by its first
column, and each task of the next step (a target: a partition, or a shard, i.e. the document numbers
of ``shard_range``) needs its key range from every one of those files. They are:

    exchange             map files (sources)               targets     read by
    bands                bands/ (S shards)                 partitions  candidates
    candidates           candidates/ (P partitions)        shards      attach signatures
    candidate signatures candidates-with-signature/ (S)    shards      verify
    paragraphs           paragraphs/ (S, each round)       partitions  paragraph removals
    paragraph removals   paragraph-removals/ (P, each)     shards      short keepers, decisions
    successor removals   successor-removals/ (P, each)     shards      short keepers
    components edges     components/edges/ (E edge files)  partitions  unique edges
    components arcs-k    components/arcs-k/ (P, each step) partitions  the star step k, labels
    components nodes     components/nodes/ (P)             shards      cluster members (each round)
    components labels    components/labels/ (P)            shards      cluster members (each round)
    cluster members      cluster-members/ (S, each round)  partitions  cluster keepers, giant rows
    cluster keepers      cluster-keepers/ (P, each)        shards      cluster rows
    giant rows           cluster-keepers/giant-* (P, each) shards      cluster rows

The components' exchanges (``stages.dedup.star``, ``partitioned``) keep counts for the driver in their
map files' footers (``write(counts=...)``): the driver reads those, the gathered files are only for
the targets' tasks.

Directly (``shuffle.gather``), every target's task opens every map file: sources x targets reads,
S x S for verify, and each open parses a footer that lists up to one row group per target (none of
less than ``shuffle.MIN_GROUP_BYTES``: a small map file is one row group, which every target reads
whole). Through the gather level, a map file holds one row group per block of B consecutive targets
(``write``); one gather task per block (``gather_block``) reads that row group from every map file,
one coalesced read each after a footer of targets / B row groups, and writes one file per target of
its block (``gathered_path``); a target's task then reads that file alone (``read``). Reads: sources
x ceil(targets / B) + targets, for writing the exchanged rows once more. ``Exchange.between``
chooses the way per exchange, from ``DedupConfig.shuffle``.

Either way a target's task gets the same table, the same rows in the same order: its rows of each map
file in file order (map files are sorted by key), map file after map file. A gathered file holds
exactly that, and only how it is cut into chunks differs, which no task's output depends on
(``tests/test_dedup_gather.py`` compares the stage's output and scratch files byte for byte).

Commit: a gather task renames its files into place in target order, the last target's last, so that
file is the block's commit point (``gather_step``). Gathered files live under their block size
(``gathered/<map directory>/block-<B>/``): a run resumed with another ``gather_block`` finds no
half-written block of the old size in the way. Map files are read by key statistics, not by layout,
so a resumed run whose ``shuffle`` settings changed reads every file either way correctly.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.row_groups import RowGroupBuffer, row_group_output
from stages.dedup.shuffle import (
    DOC_BITS, Job, Step, gather, overlapping_row_groups, sorted_with_counts, write_row_groups, write_sorted,
)

# A gather task moves its block's share of the whole exchange: with fewer tasks than this, the gather
# level would serialize what the direct way spreads over every target's task, so with ``gather: auto``
# the block shrinks to keep this many (and an exchange with fewer targets than twice this stays direct).
MIN_GATHER_TASKS = 8
GROUP_BYTES = 1 << 20  # decoded bytes of one target's rows written as one row group of its gathered file
# Pieces (one map file's rows for a target) held before they are written as a row group, however small:
# each costs some objects and allocator slack besides its rows, and at S x S a piece is a few rows.
GROUP_PIECES = 64


@dataclass(frozen=True)
class Exchange:
    """Map files ``directory/<prefix><source>`` (``sources`` of them) read by ``targets`` tasks, each
    the key range of one partition or, with ``to_shards``, of one shard; through gather tasks of
    ``block`` targets each, or directly when ``block`` is None. A ``prefix`` tells two exchanges
    whose map files share a directory apart (``cluster-keepers/giant-<partition>``)."""

    name: str
    directory: str
    sources: int
    targets: int
    to_shards: bool
    block: int | None
    prefix: str = ""

    @classmethod
    def between(cls, job: Job, name: str, directory: str, sources: int, targets: int, to_shards: bool,
                prefix: str = "") -> "Exchange":
        """The exchange, gathered or not as ``job.config.shuffle`` says for its size."""
        settings = job.config.shuffle
        if settings.gather != "auto":
            gathered = settings.gather == "always" and sources > 0 and targets > 0
            block = settings.gather_block if gathered else None
            return cls(name, directory, sources, targets, to_shards, block, prefix)
        block = max(1, min(settings.gather_block, targets // MIN_GATHER_TASKS))
        direct = reads(sources, targets, None)
        gathered = direct > settings.gather_above_reads and reads(sources, targets, block) < direct
        return cls(name, directory, sources, targets, to_shards, block if gathered else None, prefix)

    def path(self, job: Job, source: int) -> str:
        """Map file ``source``."""
        return job.path(self.directory, f"{self.prefix}{source:05d}")

    def paths(self, job: Job) -> list[str]:
        return [self.path(job, source) for source in range(self.sources)]

    def keys(self, first: int, stop: int) -> tuple[int, int]:
        """The key range ``[low, high)`` of targets ``first`` to ``stop`` - 1."""
        return (first << DOC_BITS, stop << DOC_BITS) if self.to_shards else (first, stop)

    def target_of(self, keys: np.ndarray) -> np.ndarray:
        return keys >> DOC_BITS if self.to_shards else keys

    def blocks(self) -> tuple[range, ...]:
        """The targets of each gather task."""
        return tuple(range(first, min(first + self.block, self.targets))
                     for first in range(0, self.targets, self.block))


def reads(sources: int, targets: int, block: int | None) -> int:
    """Files an exchange opens: every map file per target directly; with gather blocks of ``block``
    targets, every map file per block plus one gathered file per target."""
    if block is None:
        return sources * targets
    return sources * math.ceil(targets / block) + targets


def gathered_path(job: Job, exchange: Exchange, target: int) -> str:
    """Target ``target``'s rows of every map file of ``exchange``, as its gather task wrote them."""
    return storage.join(job.scratch, "gathered", job.directory(exchange.directory),
                        f"{exchange.prefix}block-{exchange.block}", f"{target:05d}.parquet")


def write(job: Job, exchange: Exchange, source: int, table: pa.Table, counts: dict | None = None) -> None:
    """Map file ``source`` of ``exchange``: ``table`` sorted by its first column, in about a row group
    per target (directly) or exactly one per block of targets that has rows (gathered), with
    ``counts`` in its footer (``shuffle.read_counts``)."""
    path = exchange.path(job, source)
    if exchange.block is None:
        write_sorted(job, path, table, exchange.targets, counts)
        return
    table = sorted_with_counts(table, counts)
    block = exchange.target_of(table.column(0).to_numpy()) // exchange.block
    write_row_groups(job, path, table, (np.flatnonzero(np.diff(block)) + 1).tolist())


def read(job: Job, exchange: Exchange, target: int) -> pa.Table:
    """Every row of ``target``'s key range, from every map file in order (without their counts)."""
    if exchange.block is None:
        return gather(job, exchange.paths(job), *exchange.keys(target, target + 1))
    return storage.read_parquet(job.filesystem, gathered_path(job, exchange, target)).replace_schema_metadata(None)


def gather_step(job: Job, exchange: Exchange, suffix: str = "") -> Step:
    """The gather level of ``exchange``: one task per block, done when its last target's file is there."""
    blocks = exchange.blocks()
    return Step(f"gather {exchange.name}{suffix}", gather_block,
                tuple((exchange, number) for number in range(len(blocks))),
                lambda item: gathered_path(job, exchange, blocks[item[1]][-1]))


def steps(job: Job, exchange: Exchange, suffix: str = "") -> list[Step]:
    """The steps an exchange adds between its map and its reduce step: its gather level, or none."""
    return [] if exchange.block is None else [gather_step(job, exchange, suffix)]


def gather_block(task: tuple[Job, tuple[Exchange, int]]) -> None:
    """One block of an exchange: its rows of every map file, written one file per target."""
    job, (exchange, number) = task
    targets = exchange.blocks()[number]
    low, high = exchange.keys(targets.start, targets.stop)
    with contextlib.ExitStack() as stack:
        outputs: dict[int, RowGroupBuffer] = {}
        for path in exchange.paths(job):
            with job.filesystem.open_input_file(path) as source:
                parquet = pq.ParquetFile(source, pre_buffer=True)  # the block's row group: one read
                if not outputs:
                    schema = parquet.schema_arrow.remove_metadata()
                    # Entered last target first, so that the stack commits them in target order.
                    for target in reversed(targets):
                        written = gathered_path(job, exchange, target)
                        # no statistics: the file is read whole, and they would only grow its footer
                        outputs[target] = stack.enter_context(row_group_output(
                            job.filesystem, written, schema, GROUP_BYTES, GROUP_PIECES, write_statistics=False))
                groups = overlapping_row_groups(parquet, low, high)
                if not groups:
                    continue
                rows = parquet.read_row_groups(groups).replace_schema_metadata(None)
            owner = exchange.target_of(rows.column(0).to_numpy())  # sorted, as the map file is
            bounds = np.searchsorted(owner, np.arange(targets.start, targets.stop + 1))
            for index, start, end in zip(targets, bounds[:-1], bounds[1:]):
                if end > start:
                    outputs[index].add(rows.take(pa.array(np.arange(start, end))))
