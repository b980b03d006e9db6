"""``python -m pipeline report``: what each stage kept and removed, why, and how fast; then what
the tokenizer and mixture steps produced.

Reads only what the runner wrote (manifests, and receipts for stages still in progress; the
tokenizer's report.json, the mixture's composition.json and manifest.json), so it works on a
finished run, a partial one, or one that is running right now. ``--html`` also writes the page of
``pipeline.html_report`` (``<work_dir>/report.html``), which ``stage_summary`` feeds for stages
without a manifest yet.
"""
from __future__ import annotations

import json
import posixpath

from pipeline import registry, storage
from pipeline.config import PipelineConfig
from pipeline.planning import StageSpec, plan_stages, read_manifest
from pipeline.presentation import RUNNER_STATS, removed_by_reason, runner_stats
from pipeline.stats import Stats


def stage_summary(spec: StageSpec) -> dict:
    """Counts for one stage from its receipts: units done, documents, bytes, reasons, task time.
    The receipts are read one at a time and summed, not held: a stage can have tens of thousands."""
    fs = spec.filesystem
    totals = dict.fromkeys(("units", "input_rows", "kept_rows", "removed_rows", "input_bytes", "seconds"), 0)
    by_reason = Stats()  # only the runner's reason counters: a stage's whole stats are in _stats.json
    for path in storage.list_files(fs, storage.join(spec.directory, "_receipts"), ".json"):
        receipt = storage.read_json(fs, path)
        if receipt.get("config_hash") == spec.hash:
            totals["units"] += 1
            for key in ("input_rows", "kept_rows", "removed_rows", "input_bytes", "seconds"):
                totals[key] += receipt[key]
            by_reason.merge(runner_stats(receipt["stats"]).get("by_reason", {}))
    manifest = read_manifest(fs, spec)
    complete = manifest is not None and manifest.get("config_hash") == spec.hash
    task_seconds, input_bytes = totals["seconds"], totals["input_bytes"]
    return {
        "stage": spec.name,
        "directory": spec.directory,
        "complete": complete,
        "units_done": totals["units"],
        "docs_in": totals["input_rows"],
        "kept": totals["kept_rows"],
        "removed": totals["removed_rows"],
        "removed_by_reason": removed_by_reason({RUNNER_STATS: {"by_reason": by_reason}}),
        "mb_in": round(input_bytes / 1e6, 3),
        "task_seconds": round(task_seconds, 3),
        "mb_per_s_per_task": round(input_bytes / 1e6 / task_seconds, 3) if task_seconds else None,
    }


def steps_summary(config: PipelineConfig) -> dict:
    """What each registered step with a ``summary`` wrote (tokenizer size and compression, mixture
    tokens and phases), by step name; steps that have not run are left out."""
    summary: dict = {}
    for step in registry.steps():
        found = step.summary(config) if step.summary is not None else None
        if found:
            summary[step.name] = found
    return summary


def print_report(config: PipelineConfig, as_json: bool = False) -> None:
    summaries = [stage_summary(spec) for spec in plan_stages(config)]
    steps = steps_summary(config)
    if as_json:
        steps_json = {name: {k: v for k, v in found.items() if k != "text"} for name, found in steps.items()}
        print(json.dumps({"stages": summaries, **steps_json}, indent=2))
        return
    print(f"{'stage':<10} {'state':<9} {'units':>5} {'docs in':>9} {'kept':>9} {'removed':>8} "
          f"{'MB in':>8} {'MB/s/task':>9}  removed by reason")
    for s in summaries:
        state = "done" if s["complete"] else ("partial" if s["units_done"] else "not run")
        reasons = ", ".join(f"{k} {v:,}" for k, v in s["removed_by_reason"].items()) or "-"
        speed = f"{s['mb_per_s_per_task']:.1f}" if s["mb_per_s_per_task"] else "-"
        print(f"{s['stage']:<10} {state:<9} {s['units_done']:>5} {s['docs_in']:>9,} {s['kept']:>9,} "
              f"{s['removed']:>8,} {s['mb_in']:>8.2f} {speed:>9}  {reasons}")
    for found in steps.values():
        print(found["text"])
    print(f"outputs under {posixpath.dirname(summaries[0]['directory'])}")
