"""Step 3b, between scatter and pack where it pays: the gather level of a two-level shuffle.

Scatter (``mixture.packing``) writes, per input shard and phase, one file whose row groups are the
training shards, so a pack task that reads its row group from every scatter file opens S files, S x T
per phase of T training shards, and parses S footers that list T row groups each. For a phase that
goes through this level, scatter writes one row group per block of B consecutive training shards
instead, and a gather task (``gather_block``) per block reads that row group from every scatter file
(one coalesced read, ``mixture.pack.read_row_groups``, after a footer of T / B row groups) and
appends each training shard's runs to that shard's own file, ``gather/<phase>/part-NNNNN.parquet``.
Its pack task then reads that one file. Files opened per phase: S x ceil(T / B) by gather tasks plus
T by pack tasks, for writing the dealt tokens once more. ``uses_gather`` chooses, per phase, from
``MixtureConfig.gather``.

The training shards do not change: a gather file holds its shard's runs in the order a pack task
reads them from the scatter files (input shards in order, then file order), and pack orders them by a
stable sort on ``SORT_KEYS``; row groups and batches are read in whatever sizes, and pack's output
does not depend on them.

Memory: per training shard of the block, the runs read for it that wait to be written as a row group
(up to ``GROUP_BYTES`` decoded or ``GROUP_PIECES`` pieces, about 1.4 MiB with the pieces' overhead:
B x 1.4 MiB, 180 MiB at B = 128, at most); and one scatter file at a time: its parsed footer (about
8.5 times its serialized size, 7 kB per row group), its row group of the block, compressed (up to
``mixture.pack.PREBUFFER_BYTES`` at a time), and one decoded batch. On an object
store each of the B open outputs also buffers up to one upload part.

Commit: each gather file is renamed into place when complete, and the block's receipt
(``gather/<phase>/_receipts/block-NNNNN.json``) is written after all of them.
"""
from __future__ import annotations

import contextlib
import posixpath
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mixture.pack import read_row_groups, row_group_shards
from pipeline import storage
from pipeline.row_groups import RowGroupBuffer, row_group_output
from pipeline.commit import Ledger

GROUP_BYTES = 1 << 20  # decoded bytes of one training shard's runs written as one row group
# Pieces (one scatter file's runs of a shard) held before they are written as a row group, however
# small: each costs about 6 kB of objects and allocator slack besides its data, which at the 5 TB
# plan's 4 kB pieces would double what a task holds.
GROUP_PIECES = 64


@dataclass(frozen=True)
class GatherTask:
    """Training shards ``first`` to ``stop`` - 1 of one phase: read from every scatter file of the
    phase (``sources``, a ``mixture.packing.ScatterFiles``), written one file each to ``directory``."""

    phase: str
    block: int
    first: int
    stop: int
    sources: Sequence[str]
    directory: str
    step_hash: str


def gather_path(directory: str, shard: int) -> str:
    """Training shard ``shard``'s runs, gathered from every scatter file of its phase."""
    return storage.join(directory, f"part-{shard:05d}.parquet")


def block_name(block: int) -> str:
    return f"block-{block:05d}"


def reads(inputs: int, shards: int, block: int | None) -> int:
    """File reads of a phase's pack step: ``inputs`` scatter files x ``shards`` training shards in
    one level; with gather blocks of ``block`` shards, one per scatter file and block plus one per
    training shard."""
    if block is None:
        return inputs * shards
    return inputs * -(-shards // block) + shards


def uses_gather(mode: str, above_reads: int, block: int, inputs: int, shards: int) -> bool:
    """Whether a phase of ``shards`` training shards dealt from ``inputs`` input shards goes through
    the gather level (``MixtureConfig.gather``: auto, always or never)."""
    if mode != "auto":
        return mode == "always" and inputs > 0  # without input shards there is no scatter file to gather from
    one_level = reads(inputs, shards, None)
    return one_level > above_reads and reads(inputs, shards, block) < one_level


def gather_block(task: GatherTask) -> dict:
    """Write the gather file of every training shard of the block; then the block's receipt."""
    started = time.perf_counter()
    fs, directory = storage.resolve(task.directory)
    runs = 0
    with contextlib.ExitStack() as stack:
        outputs: dict[int, RowGroupBuffer] = {}
        for source in task.sources:
            source_fs, path = storage.resolve(source)
            with source_fs.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle, pre_buffer=True)  # the block's adjacent row groups: one read
                if not outputs:  # the scatter files' schema, so that pack reads the same column types
                    outputs = {shard: stack.enter_context(row_group_output(
                        fs, gather_path(directory, shard), parquet.schema_arrow, GROUP_BYTES, GROUP_PIECES))
                               for shard in range(task.first, task.stop)}
                mine = [group for group, (first, last) in enumerate(row_group_shards(parquet.metadata))
                        if first < task.stop and last >= task.first]
                for batch in read_row_groups(parquet, mine):
                    for shard, part in _by_shard(batch):
                        if shard in outputs:  # a row group may hold other blocks' shards too
                            outputs[shard].add(part)
                            runs += part.num_rows
            # What this file's row groups and batches took is free now: handed back to the system, it
            # does not pile up in Arrow's allocator over thousands of files (the gather task of
            # tests/test_mixture_shuffle.py peaked 85 MB over 4 files and 100 over 16 without it, 67 with).
            pa.default_memory_pool().release_unused()
    stored = sum(fs.get_file_info(gather_path(directory, shard)).size for shard in range(task.first, task.stop))
    receipt = {"phase": task.phase, "block": task.block, "shards": [task.first, task.stop], "runs": runs,
               "bytes": stored, "step_hash": task.step_hash, "seconds": round(time.perf_counter() - started, 4)}
    Ledger(fs, posixpath.join(directory, "_receipts"), key="step_hash").commit(block_name(task.block), receipt)
    return receipt


def _by_shard(batch: pa.RecordBatch) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The batch's runs per training shard (scatter files are sorted by it). A part of a batch is
    copied, so that what an output holds is what it counts, not the whole batch behind a slice."""
    shards = batch.column("shard").to_numpy()
    bounds = np.flatnonzero(np.diff(shards)) + 1
    if not len(bounds):
        yield int(shards[0]), batch
        return
    for start, end in zip([0, *bounds.tolist()], [*bounds.tolist(), len(shards)]):
        yield int(shards[start]), batch.take(pa.array(np.arange(start, end)))
