"""Stage fusion (``fuse: true``): consecutive per-document stages run as one task per unit of the first.

A stage is *per-document* when it has no global pass (``Stage.prepare``): its units are then the
kept files of the stage before it, one unit per file and named as the file, so the next stage's
work on a unit can start as soon as this stage has written it. langid, rules, quality and pii are;
dedup and decontaminate are not. The source stage (ingest) reads its own input (``run_unit``,
several kept files per unit): it may lead a group, never follow, and its global pass (the pieces of
the large files it cuts, indexed) runs before the group's tasks.

The driver (``pipeline.runner``) runs each maximal run of such stages that has work as one group:
one task per unit of its first stage (``run_chain``). The task runs that unit as the worker would;
the kept file it writes is also handed on in memory to the next stage's unit of the same name, and
so on down the group, batch by batch where the stages stream (``whole_shard = False``); of a source
unit's kept files, only the first (``_HandingWriter``): the others get tasks of their own as soon
as the source task returns (``follow_ups``, through the executor's ``more``). Every stage
still writes its kept/ and removed/ files (nothing is read back), checks conservation per unit and
gets one receipt per unit, committed after its files; the driver writes the manifests in stage order.

Same bytes as without fusion: a stage gets exactly the tables it would get reading the file it is
handed. Rows handed on to a streaming stage are cut into the batches ``worker.batches`` reads (the
fewest whole row groups with at least ``batch_rows`` rows), one Arrow chunk per row group as it reads
them; a whole-shard stage gets its input in one chunk per column, as ``ParquetFile.read`` gives it.
The layout matters: a whole-shard write cuts a column's pages by its Arrow chunks, so rules' kept
file would differ otherwise. ``tests/test_fusion.py`` compares every file's sha256 and the JSON.

Resume: a task commits its receipts after all its files, in stage order, so a task that dies leaves
none, or the receipts of its first stages. ``fused_tasks`` follows each unit down the group through
the receipts that are valid (config hash, input fingerprint) and starts a task at the first stage
without one, reading that stage's input from disk; the same walk finds the source's kept files that
were not handed on. A task that redoes a stage redoes the stages after
it on what it wrote, even where an older receipt of theirs would still match: a streamed file's
fingerprint is known only when it is closed, after the next stage has read its rows.
"""
from __future__ import annotations

import math
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.executor import Failure
from pipeline.planning import StageSpec, Unit, kept_units, list_units, up_to_date, upstream_of
from pipeline.stage import Stage
from pipeline.stats import Stats
from pipeline.worker import UnitOutput, UnitWriter, batches, guarded, make_receipt, stage_instance, text_bytes



@dataclass(frozen=True)
class Chain:
    """The stages one fused task runs, in order: a group, or its tail for a unit whose earlier
    stages are committed already."""

    specs: tuple[StageSpec, ...]

    @property
    def name(self) -> str:  # what names the task, as a stage's name does an unfused one
        return "+".join(spec.name for spec in self.specs)

    @property
    def label(self) -> str:  # the progress bar's: "02 langid + 03 rules + 04 quality"
        return " + ".join(spec.label for spec in self.specs)


def _per_document(spec: StageSpec) -> bool:
    return spec.stage_type.prepare is Stage.prepare


def _reads_own_input(spec: StageSpec) -> bool:
    return getattr(spec.stage_type, "run_unit", None) is not None


def stage_group(specs: list[StageSpec], chosen: list[StageSpec], position: int, config: PipelineConfig,
                force: bool) -> list[StageSpec]:
    """The stages that run together from ``chosen[position]`` on. With ``config.fuse``, a
    per-document stage that has work (or ``force``) leads the chosen stages after it that can follow
    (per-document, reading the stage before), as far as they go; otherwise it is alone, so an up to
    date stage is only reported, as without fusion. The stages after the first are taken whatever
    their state: what they have to do is known only once the first has run."""
    first = chosen[position]
    if not config.fuse or not (_per_document(first) or _reads_own_input(first)):
        return [first]
    if not force and up_to_date(first, list_units(first, upstream_of(specs, first), config)) is not None:
        return [first]
    group = [first]
    for spec in chosen[position + 1:]:
        if not _per_document(spec) or _reads_own_input(spec):
            break
        group.append(spec)
    return group


def fused_tasks(group: list[StageSpec], units: list[Unit],
                seen: Callable[[StageSpec, dict], Any] | None = None) -> list[tuple[Chain, Unit]]:
    """The tasks that bring every stage of ``group`` up to date, given its first stage's ``units``:
    each unit goes down the group through its valid receipts (their kept files are the next stage's
    units) to the first stage without one, where a task starts that runs that stage and the rest.
    A source unit's kept files after its first get tasks of their own as soon as its task returns
    (``follow_ups``); on a resumed run, those a killed run left without one are found here. The
    driver asks here again once all tasks are done, a check that should find nothing left.
    ``seen(spec, receipt)`` is called on each valid receipt, in stage order."""
    tasks = []
    for position, spec in enumerate(group):
        done = spec.ledger.done({unit.name: unit.fingerprint for unit in units}, spec.hash)
        for receipt in done.values() if seen else ():
            seen(spec, receipt)
        chain = Chain(tuple(group[position:]))
        tasks += [(chain, unit) for unit in units if unit.name not in done]
        units = kept_units(spec, [done[unit.name] for unit in units if unit.name in done])
    return tasks


def follow_ups(group: list[StageSpec], receipts: list[dict]) -> list[tuple[Chain, Unit]]:
    """The tasks a returned task leaves: for a source unit's task, one per kept file it wrote and did
    not hand on (``_HandingWriter``), down the rest of the group; none for any other. They can start
    at once, while other source units are still being read."""
    source = next((r for r in receipts if r["stage"] == group[0].name), None)
    if source is None or len(group) < 2 or not _reads_own_input(group[0]):
        return []
    handed = {r["unit"] for r in receipts if r["stage"] == group[1].name}
    chain = Chain(tuple(group[1:]))
    return [(chain, unit) for unit in kept_units(group[0], [source]) if unit.name not in handed]


def run_chain(task: tuple[Chain, Unit]) -> list[dict] | Failure:
    """Run one unit of the chain's first stage, and the chain's next stages on the kept file it
    writes (a source unit: on its first); commit every receipt once all the files are written, in
    stage order. Returns the receipts, or a Failure for what retrying cannot fix (as
    ``worker.run_unit``)."""
    chain, unit = task
    return guarded(unit.name, lambda: _run_chain(chain.specs, unit))


def _run_chain(specs: tuple[StageSpec, ...], unit: Unit) -> list[dict]:
    clock = _Clock()
    with ExitStack() as files:  # an error anywhere removes every file still being written
        if _reads_own_input(specs[0]):
            done = _run_source(specs, unit, files, clock)
        else:
            link = _Link(specs, unit.name, files, clock)
            with clock.charging(link.key), specs[0].filesystem.open_input_file(unit.source) as source:
                parquet = pq.ParquetFile(source)  # read as worker.run_unit reads it
                for table in [parquet.read()] if link.stage.whole_shard else batches(parquet, specs[0].batch_rows):
                    link.take(table)
            done = link.close(unit.fingerprint)
    for spec, receipt in done:  # in stage order: a task that dies here leaves its first stages done
        spec.ledger.commit(receipt["unit"], receipt)  # last: each unit's commit point
    return [receipt for _, receipt in done]


def _run_source(specs, unit: Unit, files: ExitStack, clock: "_Clock") -> list[tuple[StageSpec, dict]]:
    """The source stage's unit, its first kept file handed on to the chain's next stages."""
    head, key = specs[0], (specs[0].index, unit.name)
    with clock.charging(key):
        writer = _HandingWriter(head, specs[1:], files, clock)
        output = stage_instance(head).run_unit(unit, writer)
        receipt = make_receipt(head, unit.name, unit.fingerprint, output, writer, clock.seconds(key))
    return [(head, receipt)] + writer.done


class _HandingWriter(UnitWriter):
    """The source stage's writer: the unit's first kept file, once written, also goes on in memory
    to the next stages' unit of its name; ``done`` collects their receipts.

    Only the first: a unit of a large input file that cannot be cut (a .jsonl.gz) writes many
    shards, and handing on every one would run the later stages on them one after another in this
    task. The others wait on disk for tasks of their own, which the driver starts as soon as this
    task returns (``follow_ups``), and run in parallel, as without fusion."""

    def __init__(self, spec: StageSpec, rest: tuple[StageSpec, ...], files: ExitStack, clock: "_Clock"):
        super().__init__(spec)
        self.rest, self.files, self.clock = rest, files, clock
        self.done: list[tuple[StageSpec, dict]] = []

    def write(self, side: str, name: str, table: pa.Table) -> dict:
        written = super().write(side, name, table)
        if side == "kept" and not self.done:
            link = _Link(self.rest, name, self.files, self.clock)
            link.feed(table)
            self.done += link.close(written["sha256"])
        return written


class _Link:
    """One stage of a chain on one unit. It takes its input as the worker reads the unit's file
    (``take``: one batch, or the whole shard) or as the stage before hands it on (``feed``: rows in
    file order, cut here into those same tables); writes its kept and removed files; and feeds its
    kept rows to the next link, the next stage's unit of the same name."""

    def __init__(self, specs: tuple[StageSpec, ...], name: str, files: ExitStack, clock: "_Clock"):
        self.spec, self.name, self.clock = specs[0], name, clock
        self.key = (self.spec.index, name)
        with clock.charging(self.key):  # a model loads here on a worker's first unit: the stage's time
            self.stage = stage_instance(self.spec)
            self.stage.begin_shard(name, self.spec.scratch, self.spec.filesystem)
            self.writer = UnitWriter(self.spec)
            self.rows = self.read_bytes = self.taken = 0
            self.stats = Stats()
            self.pending: list[pa.Table] = []  # rows fed and not yet taken
            self.schema: pa.Schema | None = None  # the first table fed: the schema of the file fed
            # a streamed file's batch: the fewest whole row groups with at least batch_rows rows
            self.batch_rows = math.ceil(self.spec.batch_rows / storage.ROW_GROUP_ROWS) * storage.ROW_GROUP_ROWS
            self.streams = files.enter_context(ExitStack())
            if not self.stage.whole_shard:
                self.kept = self.streams.enter_context(self.writer.stream("kept", name))
                self.removed = self.streams.enter_context(self.writer.stream("removed", name))
            self.next = _Link(specs[1:], name, files, clock) if len(specs) > 1 else None

    def feed(self, table: pa.Table) -> None:
        """The next rows of the input; a streaming stage takes each batch as soon as it is complete."""
        with self.clock.charging(self.key):
            if self.schema is None:
                self.schema = table.schema
            if table.num_rows:
                self.pending.append(table)
            while not self.stage.whole_shard and sum(t.num_rows for t in self.pending) >= self.batch_rows:
                rows = pa.concat_tables(self.pending)
                self.pending = [rows.slice(self.batch_rows)] if rows.num_rows > self.batch_rows else []
                self.take(_by_row_group(rows.slice(0, self.batch_rows)))

    def take(self, table: pa.Table) -> None:
        """Process one batch as read from the file (a whole-shard stage: its whole input)."""
        with self.clock.charging(self.key):
            output = self.stage.process(table)
            if self.stage.whole_shard:
                self.outputs = ([self.writer.write("kept", self.name, output.kept)],
                              [self.writer.write("removed", self.name, output.removed)])
            else:
                self.kept.write(output.kept)
                self.removed.write(output.removed)
            self.stats.merge(output.stats)
            self.rows += table.num_rows
            self.read_bytes += text_bytes(table)
            self.taken += 1
            if self.next is not None:
                self.next.feed(output.kept)

    def close(self, fingerprint: str) -> list[tuple[StageSpec, dict]]:
        """The input is complete and its file's sha256 is ``fingerprint``: take the rows left (a
        file's last batch; an empty file is one empty batch), finish the files, make the receipt
        (checking conservation), then close the next link on the kept file. Returns the receipts."""
        with self.clock.charging(self.key):
            if self.pending or not self.taken:
                rows = pa.concat_tables(self.pending) if self.pending else self.schema.empty_table()
                # as the file would be read: a whole shard in one chunk per column (ParquetFile.read)
                self.take(rows.combine_chunks() if self.stage.whole_shard else _by_row_group(rows))
            self.streams.close()  # the streamed files are complete now, their sha256 known
            if not self.stage.whole_shard:
                self.outputs = ([self.writer.file(self.kept)], [self.writer.file(self.removed)])
            output = UnitOutput(self.rows, self.read_bytes, *self.outputs, self.stats)
            receipt = make_receipt(self.spec, self.name, fingerprint, output, self.writer, self.clock.seconds(self.key))
        done = [(self.spec, receipt)]
        if self.next is not None:
            done += self.next.close(receipt["kept_files"][0]["sha256"])
        return done


def _by_row_group(table: pa.Table) -> pa.Table:
    """``table`` laid out as ``worker.batches`` reads a streamed file: one chunk per row group."""
    return pa.concat_tables([table.slice(start, storage.ROW_GROUP_ROWS).combine_chunks()
                             for start in range(0, table.num_rows, storage.ROW_GROUP_ROWS)] or [table])


class _Clock:
    """Charges a task's time to the unit being worked on (``charging(key)``, nested as links hand
    rows on), so each receipt's ``seconds`` is its own stage's work, as in an unfused task."""

    def __init__(self):
        self.spent: dict[Hashable, float] = {}
        self.current: Hashable | None = None
        self.since = time.perf_counter()

    @contextmanager
    def charging(self, key: Hashable) -> Iterator[None]:
        previous = self._switch(key)
        try:
            yield
        finally:
            self._switch(previous)

    def _switch(self, key: Hashable | None) -> Hashable | None:
        now = time.perf_counter()
        if self.current is not None:
            self.spent[self.current] = self.spent.get(self.current, 0.0) + now - self.since
        previous, self.current, self.since = self.current, key, now
        return previous

    def seconds(self, key: Hashable) -> float:
        running = time.perf_counter() - self.since if key == self.current else 0.0
        return self.spent.get(key, 0.0) + running
