"""Read packed training shards as numpy batches, resumable from any sequence position.

::

    from tokenizer import TrainingShards

    shards = TrainingShards(f"{work_dir}/mixture", phase="pretrain")
    for batch in shards.batches(batch_size=8, start=saved_position):
        batch.tokens          # (B, seq_len + 1) uint16/uint32: inputs tokens[:, :-1], targets tokens[:, 1:]
        batch.n_tokens        # (B,) real tokens per row; the rest of a row is pad_id (a shard's last row)
        batch.segment_starts  # B arrays: where each document segment begins in its row
        batch.segment_ids     # B lists: the document id of each segment
        saved_position = batch.end   # resume here: the next call yields exactly the following batches

Sequences are numbered across the phase's shards in manifest order. Batches are aligned to
``start``: iterating from ``start`` and resuming from any ``batch.end`` yields the same batches as
one uninterrupted pass. Memory is one Parquet row group plus one batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage

MANIFEST = "manifest.json"


@dataclass
class Batch:
    """Consecutive training sequences ``start`` .. ``end - 1`` of a phase."""

    start: int
    tokens: np.ndarray
    n_tokens: np.ndarray
    segment_starts: list[np.ndarray]
    segment_ids: list[list[str]]

    @property
    def end(self) -> int:
        """The position to resume from after this batch."""
        return self.start + len(self.tokens)


class TrainingShards:
    """One phase of the training shards that ``mixture.run_mixture`` wrote under ``directory``."""

    def __init__(self, directory: str, phase: str):
        self.directory = directory
        self.filesystem, self.root = storage.resolve(directory)
        self.manifest = storage.read_json(self.filesystem, storage.join(self.root, MANIFEST))
        phases = {entry["name"]: entry for entry in self.manifest["phases"]}
        if phase not in phases:
            raise KeyError(f"no phase {phase!r} in {directory}; phases are {', '.join(phases)}")
        self.phase = phases[phase]
        self.seq_len = self.manifest["seq_len"]
        self.eod_id = self.manifest["eod_id"]
        self.pad_id = self.manifest["pad_id"]

    def __len__(self) -> int:
        """Sequences in the phase."""
        return self.phase["sequences"]

    def batches(self, batch_size: int, start: int = 0, drop_last: bool = False) -> Iterator[Batch]:
        """Batches of ``batch_size`` sequences from sequence ``start`` on, across shard boundaries; the
        last one is shorter unless ``drop_last``."""
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        if not 0 <= start <= len(self):
            raise ValueError(f"start {start} is outside 0..{len(self)}")
        pending: list[pa.Table] = []
        held, position = 0, start
        for table in self._tables_from(start):
            pending.append(table)
            held += table.num_rows
            while held >= batch_size:
                rows = pa.concat_tables(pending)
                yield _batch(position, rows.slice(0, batch_size))
                pending, held, position = [rows.slice(batch_size)], held - batch_size, position + batch_size
        if held and not drop_last:
            yield _batch(position, pa.concat_tables(pending))

    def _tables_from(self, start: int) -> Iterator[pa.Table]:
        """The rows from sequence ``start`` on, one Parquet row group at a time."""
        first = 0
        for shard in self.phase["shards"]:
            last = first + shard["sequences"]
            if last > start:
                path = storage.join(self.root, shard["path"])
                with self.filesystem.open_input_file(path) as handle:
                    parquet = pq.ParquetFile(handle)
                    offset = first
                    for group in range(parquet.num_row_groups):
                        rows = parquet.metadata.row_group(group).num_rows
                        if offset + rows > start:
                            table = parquet.read_row_group(group)
                            yield table.slice(max(0, start - offset))
                        offset += rows
            first = last


def _batch(start: int, table: pa.Table) -> Batch:
    tokens = table.column("tokens").combine_chunks()
    width = tokens.type.list_size
    return Batch(
        start=start,
        tokens=tokens.flatten().to_numpy().reshape(-1, width),
        n_tokens=table.column("n_tokens").to_numpy(),
        segment_starts=[np.asarray(starts, np.int32) for starts in table.column("segment_starts").to_pylist()],
        segment_ids=table.column("segment_ids").to_pylist(),
    )
