"""Ingest of an input made of many small files (one document each), ours against datatrove's reader.

Corpora of one file per document are common (an article per ``.txt`` file, a page per JSON file),
and there the cost is per file, not per byte: listing, naming, opening and reading each one, and
what a unit of work does per file. This benchmark writes ``--files`` files of one corpus-dev
document each (cycled, with new ids, past the corpus's 17,619), as JSON lines and as plain text,
and times, alternately and ``--repeats`` times each:

- ours: ``run`` with only the ingest stage (``--only ingest``), on a local Ray of 1 and 2 workers
  started before the clock (as ``bench_pipeline.py`` does), ``ingest.shard_bytes`` 5 MB (units of
  at most ``max_files_per_unit``, 1,000 files); its wall includes planning (listing the files);
- datatrove: ``JsonlReader`` -> ``ParquetWriter`` (zstd) in a ``LocalPipelineExecutor`` with as
  many tasks as ours made units (``--datatrove-tasks units``; every task lists the whole folder and
  reads its share, so its time grows faster than the file count) or as workers (``workers``), and
  1 or 2 workers (JSON lines only: datatrove has no plain-text reader).

It reports median wall seconds, files/s and MB/s of text per core (wall x workers) and CPU seconds
of every process of the run. Needs ``../shared/data/corpus-dev`` and, for datatrove, the bench extra.

    python bench/bench_many_files.py [--files 20000] [--repeats 3] [--out many_files_r1]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    ProcessTreeMonitor, Timer, accept_fasttext_numpy2, by_role, compile_bytecode, corpus_shards, isolated,
    quiet_datatrove, repeat_line, save_results, worker_rows,
)

SHARD_BYTES = 5_000_000


def write_inputs(files: int, directory: Path) -> dict:
    """``files`` one-document files per layout (jsonl/, txt/) from corpus-dev; their text in MB."""
    texts = []
    for shard in corpus_shards():
        texts += pq.read_table(shard, columns=["text"]).column("text").to_pylist()
        if len(texts) >= files:
            break
    chosen = [texts[i % len(texts)] for i in range(files)]
    for layout in ("jsonl", "txt"):
        (directory / layout).mkdir(parents=True)
    for i, text in enumerate(chosen):
        (directory / "jsonl" / f"doc-{i:06d}.jsonl").write_text(json.dumps({"id": f"d{i}", "text": text}) + "\n")
        (directory / "txt" / f"doc-{i:06d}.txt").write_text(text)
    return {"files": files, "text_mb": round(sum(len(t.encode()) for t in chosen) / 1e6, 3)}


def ours(layout_dir: str, work: str, workers: int) -> dict:
    """Our ingest alone on a local Ray of ``workers`` (in a fresh process, started before the clock)."""
    import contextlib

    import bench_pipeline
    import ray

    from pipeline.config import parse_config
    from pipeline.runner import run_pipeline

    layout = Path(layout_dir).name
    source = {"name": "many", "path": layout_dir, "category": "web"} | ({"id_field": "id"} if layout == "jsonl" else {})
    config = parse_config({"work_dir": work, "ray": {"num_cpus": workers}, "inputs": [source],
                           "ingest": {"shard_bytes": SHARD_BYTES}, "stages": {"langid": {}}})
    with open(f"{work}.log", "w") as sink, contextlib.redirect_stderr(sink):
        bench_pipeline.start_local_ray(workers)
        try:
            with ProcessTreeMonitor() as monitor, Timer() as timer:
                (result,) = run_pipeline(config, use_ray=True, only="ingest", log=lambda _: None)
            phase = by_role(monitor.mark())
        finally:
            ray.shutdown()
    return {"wall_s": timer.wall, "cpu_s": sum(role["cpu_s"] for role in phase.values()),
            "units": len(result.receipts), "docs": sum(r["kept_rows"] for r in result.receipts)}


def datatrove(layout_dir: str, work: str, workers: int, tasks: int) -> dict:
    """datatrove's JsonlReader -> ParquetWriter over the same files, ``tasks`` tasks on ``workers``."""
    accept_fasttext_numpy2()
    quiet_datatrove()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import ParquetWriter

    pipeline = [JsonlReader(layout_dir, glob_pattern="*.jsonl"), ParquetWriter(f"{work}/kept", compression="zstd")]
    Path(work).mkdir(parents=True)
    with open(f"{work}/datatrove.log", "w") as sink:  # its loguru sinks write to the descriptors
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    with ProcessTreeMonitor() as monitor, Timer() as timer:
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=f"{work}/logs",
                              skip_completed=False, start_method="fork").run()
    phase = by_role(monitor.mark())
    docs = sum(pq.read_metadata(path).num_rows for path in Path(work, "kept").glob("*.parquet"))
    return {"wall_s": timer.wall, "cpu_s": sum(role["cpu_s"] for role in phase.values()), "docs": docs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--datatrove-tasks", default="units",
                        help="datatrove's task count: 'units' (as many as ours made units) or 'workers'")
    parser.add_argument("--out", default="many_files")
    args = parser.parse_args()
    compile_bytecode()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-many-files-") as tmp:
        corpus = write_inputs(args.files, Path(tmp) / "in")
        print(f"{corpus['files']:,} files of one document, {corpus['text_mb']} MB of text", file=sys.stderr)
        runs: dict[str, list[dict]] = {}
        for repeat in range(args.repeats):
            for workers in worker_counts:
                for layout in ("jsonl", "txt"):
                    name, work = f"ours_{layout}_{workers}", f"{tmp}/{layout}-{workers}-{repeat}"
                    runs.setdefault(name, []).append(isolated(ours, f"{tmp}/in/{layout}", work, workers, pin=False))
                    shutil.rmtree(work, ignore_errors=True)
                if not args.no_datatrove:
                    name, work = f"datatrove_jsonl_{workers}", f"{tmp}/dt-{workers}-{repeat}"
                    tasks = runs[f"ours_jsonl_{workers}"][-1]["units"] if args.datatrove_tasks == "units" else workers
                    runs.setdefault(name, []).append(
                        isolated(datatrove, f"{tmp}/in/jsonl", work, workers, tasks, pin=False))
                    shutil.rmtree(work, ignore_errors=True)
                print(repeat_line(runs, repeat), file=sys.stderr)
    rows = worker_rows(runs, corpus["text_mb"], [(f"ours_jsonl_{w}", f"datatrove_jsonl_{w}") for w in worker_counts])
    for name, row in rows.items():
        row["files_per_s_per_core"] = round(corpus["files"] / (row["wall_s"] * int(name.rsplit("_", 1)[1])), 1)
    payload = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "corpus": corpus, "results": rows}
    path = save_results(args.out, payload)
    print("| run | wall s (median) | files/s per core | MB/s per core | CPU s, all processes | docs out | datatrove / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['wall_s']} | {row['files_per_s_per_core']:,} | {row['mb_per_s_per_core']} | "
              f"{row['cpu_s']} | {row['docs']:,} | {row.get('datatrove_over_ours', '')} |")
    print(f"\nsaved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
