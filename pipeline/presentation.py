"""What the driver and ``report`` print about stages: one-line summaries and reason totals."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import IngestConfig, PipelineConfig
from pipeline.planning import StageSpec, list_units

RUNNER_STATS = "runner"  # the namespace of the counters the worker keeps for every stage (pipeline.worker)


@dataclass
class StageResult:
    spec: StageSpec
    receipts: list[dict]
    reused: int
    wall_seconds: float
    up_to_date: bool = False  # nothing to do: receipts come from the manifest
    reasons: dict[str, int] | None = None  # removed documents per reason (the receipts hold no stats)


def runner_stats(stats: dict) -> dict:
    """The worker's counters (by_category, by_lang, by_reason, examples) of a receipt or _stats.json."""
    return stats.get(RUNNER_STATS, {})


def reason_totals(receipts: list[dict]) -> dict[str, int]:
    """Removed documents per reason over receipts that hold their stats, most frequent first."""
    return removed_by_reason(*(receipt["stats"] for receipt in receipts))


def removed_by_reason(*stats: dict) -> dict[str, int]:
    """Removed documents per reason over stats (a receipt's or merged ones), most frequent first."""
    reasons: dict[str, int] = {}
    for one in stats:
        for reason, counts in runner_stats(one).get("by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + counts.get("removed_docs", 0)
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1]))


def summary_line(result: StageResult) -> str:
    """One line per stage: documents in/kept/removed by reason, size and speed; for a stage that
    was up to date, just that (it did nothing, so a speed would mean nothing)."""
    receipts = result.receipts
    docs_in = sum(r["input_rows"] for r in receipts)
    kept = sum(r["kept_rows"] for r in receipts)
    if result.up_to_date:
        return (f"{result.spec.name}: up to date ({len(receipts)} units, {docs_in:,} in, {kept:,} kept, "
                f"{docs_in - kept:,} removed)")
    removed = ", ".join(f"{reason} {count:,}" for reason, count in (result.reasons or {}).items())
    megabytes = sum(r["input_bytes"] for r in receipts) / 1e6
    task_seconds = sum(r["seconds"] for r in receipts)
    speed = f"{megabytes / result.wall_seconds:.1f} MB/s" if result.wall_seconds else "-"
    per_core = f"{megabytes / task_seconds:.1f} MB/s per task" if task_seconds else "-"
    reuse = f", {result.reused} reused" if result.reused else ""
    return (f"[{result.spec.label}] {len(receipts)} units{reuse} | {docs_in:,} in, {kept:,} kept, "
            f"{docs_in - kept:,} removed ({removed or 'none'}) | {megabytes:.1f} MB, "
            f"{result.wall_seconds:.1f} s, {speed}, {per_core}")


def parallelism_note(result: StageResult, executor, config: PipelineConfig) -> str | None:
    """Lines after a run's ingest on Ray: ``shards_note`` and ``uncut_note``, or None."""
    ray = getattr(executor, "started", None)
    if result.spec.name != "ingest" or result.up_to_date or ray is None:
        return None
    notes = [shards_note(result, ray.workers, config.ingest.shard_bytes), uncut_note(result, ray.workers, config)]
    return "\n".join(note for note in notes if note) or None


def uncut_note(result: StageResult, workers: int, config: PipelineConfig) -> str | None:
    """A line when the ingest of one input file read whole (more than one and a half ``shard_bytes``,
    a task of its own) was more than a worker's share of the run's input, on a run of two workers or
    more: a reader cuts a plain JSON-lines or a Parquet file, not a compressed stream
    (``.jsonl.gz``), a WARC or text file. Many such files of like size are read in parallel, a file
    each, and are not pointed out."""
    target = config.ingest.shard_bytes
    units = list_units(result.spec, None, config)
    total = sum(item.size for unit in units for item in unit.source)
    whole = [item for unit in units if len(unit.source) == 1 for item in unit.source
             if item.piece is None and item.size >= 1.5 * target and item.size * workers > total]
    if workers < 2 or not whole:
        return None
    largest = max(whole, key=lambda item: item.size)
    return (f"note: ingest read {len(whole)} large input file{'s' if len(whole) > 1 else ''} whole, in one task each "
            f"(the largest: {largest.source.name}/{largest.relative}, {largest.size / 1e6:,.1f} MB on disk): compressed "
            f"JSON lines, WARC and text files are not cut. Files of about `ingest.shard_bytes` ({target}) each, "
            f"plain JSON lines or Parquet would be read by {workers} workers at once.")


SMALL_SHARD = 1_000_000  # bytes of text: a shard smaller than this on average is pointed out
DEFAULT_SHARD_BYTES = IngestConfig.model_fields["shard_bytes"].default


def shards_note(result: StageResult, workers: int, shard_bytes: int) -> str | None:
    """A line after a run's ingest when it made fewer shards than four per Ray worker, or more than
    16 per worker of under ``SMALL_SHARD`` text on average; else None.

    Every later stage runs one task per shard, so with fewer shards than workers some workers wait
    through every stage, and with a few each a stage waits on its largest shards: at the default
    64 MB, corpus-dev (59 MB in 5 inputs) made 5 shards of 1.2-22.3 MB, and with 2 workers its
    quality and dedup stages took 0.93 s and 1.61 s against 0.71 s and 1.40 s with 12 shards of
    4.9 MB (medians of 3). The shard size it suggests makes about six per worker. Said only where
    Ray ran the stage (``executor.started``: the number of workers is known)."""
    shards = sum(len(receipt["kept_files"]) for receipt in result.receipts)
    text = sum(receipt["kept_bytes"] for receipt in result.receipts)
    if not text:
        return None
    suggested = max(1, int(float(f"{min(text / (6 * workers), DEFAULT_SHARD_BYTES):.2g}")))
    if shards < 4 * workers:
        return (f"note: ingest made {shards} shards for {workers} workers, fewer than four each; every later "
                f"stage runs a task per shard, so workers will wait. `ingest.shard_bytes: {suggested}` (now "
                f"{shard_bytes}) would make about six each.")
    # Many small shards cost each later stage its fixed work per shard (a task, its files): corpus-dev
    # at shard_bytes 20,000 made 1,937 shards of 30 KB, and took 30.9 s in the four per-document
    # stages and 87.2 s in dedup on 2 workers, where its 12 shards of 4.9 MB take about 4 s and 1.5 s.
    if shards > 16 * workers and text < shards * SMALL_SHARD and suggested > shard_bytes:  # (not cut by meta)
        return (f"note: ingest made {shards:,} shards of {text / shards / 1e3:,.0f} KB on average; every later stage "
                f"pays a task and its files per shard, which at this size cost more than the documents. "
                f"`ingest.shard_bytes: {suggested}` (now {shard_bytes}) would make "
                f"{'about six for each worker' if suggested < DEFAULT_SHARD_BYTES else 'shards of the default size'}.")
    return None
