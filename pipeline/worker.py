"""The worker side: run one unit of one stage and commit it with a receipt. Runs inside a Ray task
(or in-process with ``--no-ray`` and ``python -m pipeline stage``).

A stage implements either ``process(batch)``, and the worker reads its shard, calls it, and writes
kept/ and removed/; or ``run_unit(unit, writer)`` (the source stage), reading its own input and
writing through ``writer``. Either way the worker then checks conservation (rows in = kept +
removed) once, and writes the receipt last, after every output file is complete: a unit that fails
part-way (a crash, a full disk) has no receipt, and a rerun redoes it.

Counters are namespaced (``RUNNER_STATS``): the document and byte counts per category, language and
reason, and example ids, that the worker computes for every stage go under ``runner``; what the stage
reports itself goes under the stage's name. ``_stats.json`` merges them over units.
"""
from __future__ import annotations

import gc
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.errors import ConservationError, InputError, OutputError, StorageError
from pipeline.executor import Failure
from pipeline.planning import StageSpec, Unit
from pipeline.stage import REASON_COLUMN, Stage
from pipeline.stats import Stats

from pipeline.presentation import RUNNER_STATS


@dataclass
class UnitOutput:
    """What one unit read and wrote, before the worker adds its bookkeeping to make a receipt."""

    input_rows: int
    input_bytes: int
    kept_files: list[dict]
    removed_files: list[dict]
    stats: Stats  # the stage's own counters


class UnitWriter:
    """Writes a unit's kept/ and removed/ shards atomically and counts what it wrote."""

    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.counts = Stats()

    def write(self, side: str, name: str, table: pa.Table) -> dict:
        path = f"{side}/{name}.parquet"
        self.check(table, path)
        _, sha256 = storage.write_parquet(self.spec.filesystem, storage.join(self.spec.directory, path), table)
        self.counts.merge(output_stats(table, kept=side == "kept"))
        return {"path": path, "rows": table.num_rows, "bytes": text_bytes(table), "sha256": sha256}

    def check(self, table: pa.Table, path: str) -> None:
        """Arrow's full validation of a table before it is written (every string UTF-8, every offset
        within its buffer: 2.4 GB/s here, under 1% of a stage): a stage's bug that made malformed
        text stops its unit with an OutputError, instead of writing bytes every later stage,
        the tokenizer included, would take for text."""
        for name, column in zip(table.column_names, table.columns):
            start = 0
            for chunk in column.chunks:
                try:
                    chunk.validate(full=True)
                except pa.ArrowException as error:
                    raise OutputError(f"stage {self.spec.name} made invalid data for {path}, not written (a bug "
                                      f"in the stage): column {name!r}{_where(table, start, error)}: {error}") from None
                start += len(chunk)

    def stream(self, side: str, name: str) -> "_CountedStream":
        """A ``storage.ParquetStream`` for one side, counting its rows as they are written."""
        return _CountedStream(self, side, name)

    def file(self, stream: "_CountedStream") -> dict:
        return {"path": stream.relative, "rows": stream.rows, "bytes": stream.text_bytes, "sha256": stream.sha256}


def _where(table: pa.Table, chunk_start: int, error: Exception) -> str:
    """`` at row R (id X)`` for Arrow's "... at string index K" of a chunk starting at row ``chunk_start``."""
    found = re.search(r"string index (\d+)", str(error))
    if not found:
        return ""
    row = chunk_start + int(found.group(1))
    return f" at row {row}" + (f" (id {table['id'][row]})" if "id" in table.column_names else "")


class _CountedStream(storage.ParquetStream):
    def __init__(self, writer: UnitWriter, side: str, name: str):
        self.relative = f"{side}/{name}.parquet"
        super().__init__(writer.spec.filesystem, storage.join(writer.spec.directory, self.relative))
        self.counts, self.kept, self.text_bytes = writer.counts, side == "kept", 0
        self.check = writer.check

    def write(self, table: pa.Table) -> None:
        self.check(table, self.relative)
        super().write(table)
        self.counts.merge(output_stats(table, kept=self.kept))
        self.text_bytes += text_bytes(table)
        self.flush()


_LOADED: dict[tuple[str, str], Stage] = {}


def stage_instance(spec: StageSpec) -> Stage:
    """The stage object of this worker process; built (and its models loaded) once per config.

    What was just built lives as long as the process, as do the modules imported for it, so it is
    moved out of the cyclic garbage collector's generations (``gc.freeze``). Otherwise Python's
    full collections rescan every object of the worker, numba's types and Ray's included: a pause
    of 50-60 ms each, two of them in a 1-worker run of corpus-dev (in the first langid and the
    first quality task). A frozen object is still freed when nothing refers to it; only one in a
    reference cycle would stay."""
    key = (spec.name, spec.hash)
    if key not in _LOADED:
        _LOADED[key] = spec.stage_type(spec.config)
        gc.freeze()
    return _LOADED[key]


def run_unit(task: tuple[StageSpec, Unit]) -> dict | Failure:
    """Process one unit and commit it with a receipt; a Failure for what retrying cannot fix."""
    spec, unit = task
    return guarded(unit.name, lambda: _run_unit(spec, unit))


def _run_unit(spec: StageSpec, unit: Unit) -> dict:
    started = time.perf_counter()
    stage = stage_instance(spec)
    writer = UnitWriter(spec)
    run = getattr(stage, "run_unit", None)
    if run is not None:
        output = run(unit, writer)
    elif stage.whole_shard:
        output = _process_unit(spec, stage, unit, writer)
    else:
        output = _stream_unit(spec, stage, unit, writer)
    receipt = make_receipt(spec, unit.name, unit.fingerprint, output, writer, time.perf_counter() - started)
    spec.ledger.commit(unit.name, receipt)  # last: the unit's commit point
    return receipt


def guarded(name: str, work: Callable[[], Any]) -> Any:
    """``work()``, or a Failure for the errors of unit ``name`` that retrying cannot fix."""
    try:
        return work()
    except (InputError, ConservationError, OutputError) as error:  # the same input fails the same way again
        return Failure(str(error))
    except StorageError as error:  # disk full, no permission: retrying will not help
        return Failure(f"unit {name}: {error}")


def make_receipt(spec: StageSpec, name: str, fingerprint: str, output: UnitOutput, writer: UnitWriter,
                 seconds: float) -> dict:
    """The receipt of unit ``name`` once its files are written, after checking conservation (rows
    in = kept + removed): a ConservationError naming the stage and the unit if they differ."""
    kept_rows = sum(f["rows"] for f in output.kept_files)
    removed_rows = sum(f["rows"] for f in output.removed_files)
    if kept_rows + removed_rows != output.input_rows:
        raise ConservationError(f"stage {spec.name} lost rows in {name}: read {output.input_rows}, "
                                f"kept {kept_rows}, removed {removed_rows}")
    stats = Stats({RUNNER_STATS: writer.counts})
    if output.stats:
        stats[spec.name] = output.stats
    return {
        "input_rows": output.input_rows, "input_bytes": output.input_bytes,
        "kept_rows": kept_rows, "kept_bytes": sum(f["bytes"] for f in output.kept_files),
        "removed_rows": removed_rows, "removed_bytes": sum(f["bytes"] for f in output.removed_files),
        "kept_files": output.kept_files, "removed_files": output.removed_files, "stats": stats,
        "unit": name, "stage": spec.name, "config_hash": spec.hash,
        "input_fingerprint": fingerprint, "seconds": round(seconds, 4),
    }


def _process_unit(spec: StageSpec, stage: Stage, unit: Unit, writer: UnitWriter) -> UnitOutput:
    """A ``process`` stage's unit: the whole shard in one table, split into kept and removed."""
    stage.begin_shard(unit.name, spec.scratch, spec.filesystem)
    with spec.filesystem.open_input_file(unit.source) as source:
        table = pq.ParquetFile(source).read()
    if unit.limit is not None:
        table = table.slice(0, unit.limit)
    output = stage.process(table)
    kept = writer.write("kept", unit.name, output.kept)
    removed = writer.write("removed", unit.name, output.removed)
    return UnitOutput(table.num_rows, text_bytes(table), [kept], [removed], Stats().merge(output.stats))


def _stream_unit(spec: StageSpec, stage: Stage, unit: Unit, writer: UnitWriter) -> UnitOutput:
    """A streaming stage's unit: whole row groups in, about ``spec.batch_rows`` rows at a time, kept
    and removed streamed out (``storage.ParquetStream``: byte for byte the files ``_process_unit``
    writes); memory is bounded by a batch plus one row group."""
    stage.begin_shard(unit.name, spec.scratch, spec.filesystem)
    rows = read_bytes = 0
    stats = Stats()
    with spec.filesystem.open_input_file(unit.source) as source:
        parquet = pq.ParquetFile(source)
        with writer.stream("kept", unit.name) as kept, writer.stream("removed", unit.name) as removed:
            for table in batches(parquet, spec.batch_rows):
                if unit.limit is not None:
                    table = table.slice(0, max(unit.limit - rows, 0))
                output = stage.process(table)
                kept.write(output.kept)
                removed.write(output.removed)
                stats.merge(output.stats)
                rows += table.num_rows
                read_bytes += text_bytes(table)
                if unit.limit is not None and rows >= unit.limit:
                    break
    return UnitOutput(rows, read_bytes, [writer.file(kept)], [writer.file(removed)], stats)


def batches(parquet: pq.ParquetFile, batch_rows: int):
    """Consecutive row groups joined into tables of at least ``batch_rows`` rows (the last may be
    smaller; a shard without row groups gives one empty table)."""
    pending: list[pa.Table] = []
    for index in range(parquet.num_row_groups):
        pending.append(parquet.read_row_group(index))
        if sum(table.num_rows for table in pending) >= batch_rows:
            yield pa.concat_tables(pending)
            pending = []
    if pending or not parquet.num_row_groups:
        yield pa.concat_tables(pending) if pending else parquet.schema_arrow.empty_table()


def output_stats(table: pa.Table, kept: bool) -> Stats:
    """Documents and text bytes per category, per language (when known) and per removal reason,
    and the first ids per reason (``examples``)."""
    stats = Stats()
    if table.num_rows == 0:
        return stats
    side = "kept" if kept else "removed"
    lengths = pc.binary_length(table.column("text"))
    keys = [("category", "by_category")]
    if "lang" in table.column_names:
        keys.append(("lang", "by_lang"))
    if not kept:
        keys.append((REASON_COLUMN, "by_reason"))
    for column, heading in keys:
        grouped = pa.table({"key": pc.fill_null(table.column(column), "unknown"), "len": lengths})
        for row in grouped.group_by("key").aggregate([("len", "sum"), ("len", "count")]).to_pylist():
            stats.add(heading, row["key"], f"{side}_docs", row["len_count"])
            stats.add(heading, row["key"], f"{side}_bytes", row["len_sum"] or 0)
    if not kept:
        stats.examples("examples", table.column(REASON_COLUMN).to_pylist(),
                       lambda rows: table.column("id").take(rows).to_pylist())
    return stats


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of the text column (what MB/s figures count)."""
    if table.num_rows == 0:
        return 0
    return int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
