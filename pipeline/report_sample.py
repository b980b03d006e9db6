"""A bounded look at a stage's rows for the HTML report: a few shards, a few columns, a few rows.

The report must take seconds on a run of any size, so it never scans a stage. ``sample_side`` reads
the first ``rows_per_file`` rows of at most ``max_files`` shards (spread evenly over the manifest),
and only the small columns (ids, category, language, reason and the score columns); ``attach_text``
then reads the ``text`` column of just the shards holding the documents picked as examples. Counts
drawn from a sample are scaled by (rows on that side) / (rows read), and the page says so.

Score columns are found by name, so signals added to a stage later show up without a code change:
every floating-point column named ``lang_score`` or starting with ``quality_``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage

META_COLUMNS = ("id", "source", "category", "lang", "reason", "dup_cluster", "dup_kept_id")
TEXT_CHARS = 300
BINS = 20


def is_score_column(name: str, type_: pa.DataType) -> bool:
    """``lang_score`` and every ``quality_*`` column, when it holds floats."""
    return (name == "lang_score" or name.startswith("quality_")) and pa.types.is_floating(type_)


@dataclass
class SideSample:
    """Rows read from one side (kept or removed) of a stage, and how much of that side they are."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    score_columns: list[str] = field(default_factory=list)
    total_rows: int = 0
    files_read: int = 0

    @property
    def weight(self) -> float:
        """Rows on this side per row read: multiplies sampled counts into estimates."""
        return self.total_rows / len(self.rows) if self.rows else 0.0


def sample_side(fs, directory: str, files: list[dict], max_files: int, rows_per_file: int) -> SideSample:
    """The first ``rows_per_file`` rows of ``max_files`` non-empty shards (manifest ``files``
    entries) spread evenly, or of all of them when there are at most twice that many; no ``text``.
    Each row remembers its shard path and row number."""
    nonempty = [file for file in files if file.get("rows")]
    sample = SideSample(total_rows=sum(file["rows"] for file in nonempty))
    if not nonempty:
        return sample
    # A small run is read whole (exact histograms, every category); a large one, max_files shards.
    count = len(nonempty) if len(nonempty) <= 2 * max_files else max_files
    picks = sorted({round(i * (len(nonempty) - 1) / max(count - 1, 1)) for i in range(count)})
    scores: dict[str, None] = {}
    for index in picks:
        path = storage.join(directory, nonempty[index]["path"])
        with fs.open_input_file(path) as source:
            parquet = pq.ParquetFile(source)
            schema = parquet.schema_arrow
            found = [name for name in schema.names if is_score_column(name, schema.field(name).type)]
            scores.update(dict.fromkeys(found))
            columns = [name for name in (*META_COLUMNS, *found) if name in schema.names]
            batch = first_rows(parquet, rows_per_file, columns)
        sample.files_read += 1
        if batch is None:
            continue
        for row_number, row in enumerate(batch.to_pylist()):
            row["_file"], row["_row"] = path, row_number
            sample.rows.append(row)
    sample.score_columns = list(scores)
    return sample


def first_rows(parquet: pq.ParquetFile, rows: int, columns: list[str]) -> pa.RecordBatch | None:
    """The first ``rows`` rows of ``columns``, reading only the row groups that hold them, one at a
    time: ``iter_batches`` over the whole file reads row groups ahead on several threads, and a
    64 MB shard's text then costs the driver tens of MB for a few hundred characters."""
    groups, covered = [], 0
    while covered < rows and len(groups) < parquet.metadata.num_row_groups:
        covered += parquet.metadata.row_group(len(groups)).num_rows
        groups.append(len(groups))
    return next(parquet.iter_batches(batch_size=rows, row_groups=groups, columns=columns, use_threads=False), None)


def attach_text(fs, rows: list[dict], rows_per_file: int) -> None:
    """Add ``text`` (its first TEXT_CHARS characters) to ``rows`` picked from ``sample_side`` rows,
    reading the text column of each shard involved once."""
    by_file: dict[str, list[dict]] = {}
    for row in rows:
        by_file.setdefault(row["_file"], []).append(row)
    for path, picked in by_file.items():
        with fs.open_input_file(path) as source:
            batch = first_rows(pq.ParquetFile(source), rows_per_file, ["text"])
        texts = batch.column("text") if batch is not None else pa.array([], pa.string())
        for row in picked:
            text = texts[row["_row"]].as_py() if row["_row"] < len(texts) else None
            row["text"] = None if text is None else text[:TEXT_CHARS]
            row["text_chars"] = None if text is None else len(text)


# ------------------------------------------------------------------------------ thresholds


def threshold_for(stage: str, config: dict, column: str, category: str | None, lang: str | None) -> float | None:
    """The cut a stage applies to ``column`` for one document's category and language, from the
    stage config recorded in its ``_stage.json``; None when it applies none (or is unknown here).

    quality: ``thresholds`` keyed ``<category>/<lang>``, ``<category>``, ``*/<lang>``, ``*``, most
    specific first (as ``stages.quality.QualityConfig.threshold``). langid: ``min_score`` unless
    ``min_score_by_lang`` overrides it, on ``lang_score``.
    """
    value = None
    if stage == "quality" and column == "quality_score":
        thresholds = config.get("thresholds") or {}
        for key in (f"{category}/{lang}", f"{category}", f"*/{lang}", "*"):
            if key in thresholds:
                value = thresholds[key]
                break
    elif stage == "langid" and column == "lang_score":
        if category not in (config.get("bypass_categories") or []):
            value = (config.get("min_score_by_lang") or {}).get(lang, config.get("min_score"))
    # Outputs written by another version of a stage may record its config in another shape: a
    # threshold that is not a number is not drawn rather than breaking the report.
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def near_threshold(rows: list[dict], stage: str, config: dict, limit: int) -> list[dict]:
    """Up to ``limit`` kept rows whose score is closest above their threshold (the ones a slightly
    stricter setting would drop), each with ``_threshold`` and ``_column`` set."""
    candidates = []
    for row in rows:
        for column in ("quality_score", "lang_score"):
            value = row.get(column)
            if value is None:
                continue
            threshold = threshold_for(stage, config, column, row.get("category"), row.get("lang"))
            if threshold is not None and value >= threshold:
                candidates.append((value - threshold, row.get("id") or "", row, column, threshold))
    candidates.sort(key=lambda item: (item[0], item[1]))
    picked = []
    for _, _, row, column, threshold in candidates[:limit]:
        picked.append({**row, "_column": column, "_threshold": threshold})
    return picked


# ------------------------------------------------------------------------------ histograms


def histograms(kept: SideSample, removed: SideSample, column: str, stage: str, config: dict,
               max_langs: int = 12) -> dict | None:
    """Per language, the estimated count of kept and removed documents in each bin of ``column``,
    and the thresholds the stage applies there (value, the categories it applies to, and whether
    that is every category sampled in the language). None if no row has a value.

    Scores in [0, 1] get 20 bins of 0.05 (the quality stage's own buckets); any other range (a
    perplexity) is cut at its 1st and 99th percentile so that one outlier does not flatten it.
    """
    values = [row[column] for side in (kept, removed) for row in side.rows if row.get(column) is not None]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.min() >= 0.0 and array.max() <= 1.0:
        low, high = 0.0, 1.0
    else:
        low, high = (float(x) for x in np.percentile(array, [1, 99]))
        if high <= low:
            low, high = float(array.min()), float(array.max()) + 1e-9
    edges = np.linspace(low, high, BINS + 1)
    langs: dict[str, dict] = {}
    cut: dict[tuple, float | None] = {}  # threshold_for per (category, language): a few, for thousands of rows
    for name, side in (("kept", kept), ("removed", removed)):
        scored = [row for row in side.rows if row.get(column) is not None and math.isfinite(row[column])]
        weight = side.weight
        bins = np.searchsorted(edges, np.array([row[column] for row in scored], dtype=np.float64), side="right") - 1
        for row, index in zip(scored, np.clip(bins, 0, BINS - 1).tolist()):
            lang = row.get("lang") or "und"
            entry = langs.get(lang) or langs.setdefault(lang, {"kept": [0.0] * BINS, "removed": [0.0] * BINS,
                                                               "rows": 0, "thresholds": {}, "categories": set()})
            entry[name][index] += weight
            entry["rows"] += 1
            entry["categories"].add(row.get("category") or "?")
            key = (row.get("category"), lang)
            threshold = cut[key] if key in cut else cut.setdefault(key, threshold_for(stage, config, column, *key))
            if threshold is not None:
                categories = entry["thresholds"].setdefault(threshold, set())
                categories.add(row.get("category") or "?")
    ordered = sorted(langs.items(), key=lambda item: (-item[1]["rows"], item[0]))[:max_langs]
    return {
        "column": column, "stage": stage, "edges": [float(e) for e in edges],
        "sampled": {"kept": len(kept.rows), "removed": len(removed.rows)},
        "total": {"kept": kept.total_rows, "removed": removed.total_rows},
        "langs": [{"lang": lang, "rows": entry["rows"], "kept": np.round(entry["kept"], 1).tolist(),
                   "removed": np.round(entry["removed"], 1).tolist(),
                   "thresholds": [{"value": value, "categories": sorted(cats),
                                   "all_categories": cats == entry["categories"]}
                                  for value, cats in sorted(entry["thresholds"].items())]}
                  for lang, entry in ordered],
        "more_langs": max(0, len(langs) - max_langs),
    }
