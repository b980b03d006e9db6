"""Helpers the stage benchmarks share: the corpus, single-core pinning, isolated timed runs, results.

A benchmark measures each contender in a fresh spawned process (``isolated``), so the peak resident
memory it reports belongs to that contender alone, repeats it, and reports medians. Throughput is per
core: the process pins Arrow to one thread (``single_core``) and both wall and CPU seconds are kept,
because on a shared machine CPU time is the steadier of the two.
"""
from __future__ import annotations

import json
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CORPUS = REPO.parent / "shared" / "data" / "corpus-dev"
RESULTS = BENCH / "results"

# corpus-dev predates the pipeline's category names.
CATEGORY_NAMES = {"academic": "papers"}


def corpus_shards(directory: Path = CORPUS) -> list[Path]:
    shards = sorted(Path(directory).glob("*.parquet"))
    if not shards:
        raise SystemExit(f"no Parquet shards in {directory} (the shared dev data is not here)")
    return shards


def document_table(shard: Path) -> pa.Table:
    """A corpus-dev shard in the pipeline's document schema; its source language label goes to meta."""
    from pipeline.stage import DOCUMENT_SCHEMA

    raw = pq.read_table(shard)
    categories = [CATEGORY_NAMES.get(c, c) for c in raw.column("category").to_pylist()]
    meta = [json.dumps({"lang": lang}) for lang in raw.column("lang").to_pylist()]
    columns = [raw.column("id"), raw.column("text"), raw.column("source")]
    return pa.Table.from_arrays([*columns, pa.array(categories), pa.array(meta)], schema=DOCUMENT_SCHEMA)


def write_document_shards(shards: list[Path], directory: Path) -> list[Path]:
    """Convert shards to document-schema Parquet (zstd, as the pipeline writes them) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in shards:
        path = directory / shard.name
        pq.write_table(document_table(shard), path, compression="zstd", row_group_size=2000)
        paths.append(path)
    return paths


def text_megabytes(table: pa.Table) -> float:
    """UTF-8 size of the text column in MB (10^6 bytes), the unit every throughput here uses."""
    return pc.sum(pc.binary_length(table.column("text").cast(pa.binary()))).as_py() / 1e6


def single_core() -> None:
    """Keep Arrow's decoding and compression on this process's one thread, so docs/s is per core."""
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


class Timer:
    """``with Timer() as t: ...`` then ``t.wall`` and ``t.cpu`` in seconds."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a spawned child would report its parent's peak at fork time."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def _measured(fn: Callable[..., dict], args: tuple) -> dict:
    single_core()
    baseline = _peak_rss_mb()  # the interpreter and the imports the benchmark module made
    result = fn(*args)
    result.update(peak_rss_mb=_peak_rss_mb(), baseline_rss_mb=baseline)
    return result


def isolated(fn: Callable[..., dict], *args: Any) -> dict:
    """Run ``fn(*args)`` (a module-level function returning a dict) in a fresh spawned process and
    return its dict plus ``peak_rss_mb``, that process's peak resident memory, and ``baseline_rss_mb``,
    its peak before ``fn`` ran (so ``peak - baseline`` is what ``fn`` itself needed)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measured, fn, args).result()


def medians(runs: list[dict]) -> dict:
    """Median of every numeric field over repeated runs; other fields from the first run."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(run[key] for run in runs)
    merged["repeats"] = len(runs)
    return merged


def throughput(docs: int, megabytes: float, seconds: float) -> dict:
    return {"docs_per_s": round(docs / seconds, 1), "mb_per_s": round(megabytes / seconds, 3)}


def save_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return path
