"""The stage contract: what every document stage implements, and nothing more.

A stage is a small class in ``stages/<name>.py``::

    class RulesConfig(StageConfig):          # typed, validated, unknown keys rejected
        min_words: int = 50

    class Rules(Stage):
        name = "rules"
        Config = RulesConfig

        def __init__(self, config: RulesConfig):   # load models here: once per worker
            ...

        def process(self, batch: pa.Table) -> StageOutput:
            reasons = [...]                  # None = keep, "too_few_words" = drop
            return split(batch, reasons, stats)

``process`` is pure: it sees one batch of documents (an Arrow table in the document schema plus the
columns earlier stages added) and returns the rows it keeps, the rows it removes (same columns plus
``reason``), and counters. It never does I/O on the corpus; the runner owns reading, writing, Ray,
retries, receipts, conservation checks and progress. Stages that need a view of the whole corpus
(deduplication) also implement ``prepare``, which the runner calls once before any ``process`` call.
Stages whose output depends on a file outside the config (a trained model) implement
``ensure_assets`` (build it when missing, before the run is planned), ``assets_missing`` (whether
it would build something) and ``fingerprint`` (its content hash, which joins the stage's config
hash, so a retrained model reruns the stage).

Document schema (columns every shard has): ``id`` (stable, unique), ``text``, ``source``,
``category`` (web | encyclopedia | books | papers | code | others) and ``meta`` (a JSON string).
A stage may add columns; it never renames or drops one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from pipeline.stats import Stats

CATEGORIES = ("web", "encyclopedia", "books", "papers", "code", "others")

DOCUMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("category", pa.string()),
        ("meta", pa.string()),
    ]
)

REASON_COLUMN = "reason"


class StageConfig(BaseModel):
    """Base for every stage's configuration: unknown keys are an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StageOutput:
    """What ``process`` returns for one batch.

    ``removed`` has every column of ``kept`` plus ``reason`` (a short snake_case string such as
    ``lang_not_kept``). ``stats`` holds the stage's own counters; the runner adds document and byte
    counts per reason, category and language on its own.
    """

    kept: pa.Table
    removed: pa.Table
    stats: Stats = field(default_factory=Stats)


class Stage:
    """Base class of a document stage. Subclasses set ``name`` and ``Config`` and implement ``process``."""

    name: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    # True: ``process`` sees the whole shard in one table (its decisions may depend on other rows).
    # False: the worker streams the shard in batches of ``batch_rows`` rows (memory per task bounded
    # by the batch), and ``process`` must decide each row alone; the output is the same either way.
    whole_shard: ClassVar[bool] = True

    def __init__(self, config: StageConfig):
        self.config = config

    @classmethod
    def ensure_assets(cls, config: StageConfig, log: Any) -> None:
        """Optional: create the files the stage needs and cannot get from its config (train its
        model) when they are missing. Runs in the driver before the run is planned."""

    @classmethod
    def assets_missing(cls, config: StageConfig) -> bool:
        """Whether ``ensure_assets`` would build something. The run then has work whatever its outputs
        hold, and on a machine's first run the workers compile while the driver builds
        (``pipeline.warmup.start_warm_up``)."""
        return False

    @classmethod
    def fingerprint(cls, config: StageConfig) -> str:
        """The content hash of those files; part of the stage's config hash. Empty when none."""
        return ""

    def prepare(self, context: "PrepareContext") -> None:
        """Optional global pass over all input shards, run once (in the driver) before any shard.

        It may fan work out with ``context.map``. Whatever it writes must go to ``context.scratch``
        atomically (``pipeline.storage``), so a rerun after a crash can skip finished steps.
        """

    def begin_shard(self, shard: str, scratch: str, filesystem: Any) -> None:
        """Called in the worker before the batches of one shard; ``shard`` is its name, e.g.
        ``part-000-00003-0000``, and ``scratch`` (on ``filesystem``) is where ``prepare`` left its
        work. Stages whose decisions were made in ``prepare`` load this shard's share here."""

    def process(self, batch: pa.Table) -> StageOutput:
        raise NotImplementedError


@dataclass
class PrepareContext:
    """Handed to ``Stage.prepare``: the stage's inputs, a scratch directory and a parallel map.

    ``map(fn, items)`` runs ``fn(item)`` for every item on the executor the run uses (Ray tasks, or
    in-process with ``--no-ray``) and returns the results in item order; ``fn`` must be a picklable
    module-level function; ``workers`` tasks run at once. ``scratch`` is a directory (local path or URI) owned by this stage and
    this config hash (wiped when the config changes); ``filesystem`` is its pyarrow filesystem.
    ``inputs`` maps shard name -> input Parquet path, in shard order (for the source stage: unit name
    -> the unit's ``InputFile``s). ``log(message)`` prints progress.
    """

    inputs: dict[str, str]
    scratch: str
    filesystem: Any
    map: Any
    log: Any
    workers: int = 1  # how many of ``map``'s tasks run at once, for a stage that sizes its tasks by it


def split(
    batch: pa.Table,
    reasons: Sequence[str | None],
    stats: Stats | None = None,
    **new_columns: pa.Array | Sequence[Any],
) -> StageOutput:
    """Add ``new_columns`` to ``batch`` and split it by ``reasons`` (None keeps the row).

    This is the one way stages build their output, so every row lands in exactly one side.
    """
    if len(reasons) != batch.num_rows:
        raise ValueError(f"got {len(reasons)} reasons for {batch.num_rows} rows")
    for column, values in new_columns.items():
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if column in batch.column_names:
            batch = batch.set_column(batch.column_names.index(column), column, array)
        else:
            batch = batch.append_column(column, array)
    reason_array = pa.array(reasons, type=pa.string())
    removed_mask = pc.is_valid(reason_array)
    kept = batch.filter(pc.invert(removed_mask))
    removed = batch.append_column(REASON_COLUMN, reason_array).filter(removed_mask)
    return StageOutput(kept=kept, removed=removed, stats=stats if stats is not None else Stats())


class RowFilter(Stage):
    """A stage that judges each document on its own: implement ``reason(row)`` (None keeps it).

    ``columns`` are the columns ``row`` holds (a dict per document). The runner counts documents and
    bytes per reason, category and language for every stage, so a filter gets its stats for free;
    ``self.stats`` (a ``Stats``) is there for counters of its own, reported under the stage's name::

        class ShortDocs(RowFilter):
            name = "short_docs"
            Config = ShortDocsConfig          # min_chars: int = 200
            columns = ("text",)

            def reason(self, row: dict) -> str | None:
                return "too_short" if len(row["text"]) < self.config.min_chars else None
    """

    columns: ClassVar[tuple[str, ...]] = ("text",)
    whole_shard: ClassVar[bool] = False  # each row alone: the worker streams the shard in batches

    def reason(self, row: dict) -> str | None:
        raise NotImplementedError

    def process(self, batch: pa.Table) -> StageOutput:
        self.stats = Stats()
        reasons = [self.reason(row) for row in batch.select(list(self.columns)).to_pylist()]
        return split(batch, reasons, self.stats)
