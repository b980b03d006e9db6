"""What the driver and ``report`` print about stages: one-line summaries and reason totals."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.planning import StageSpec

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
