"""One large plain JSON-lines file, or one Parquet file of one row group: ingest alone, or the
whole run, next to datatrove's reader.

A corpus often comes as one large ``.jsonl`` (a dump, an export). Read as one unit, its ingest is one
task, on one core, however many the run has; cut by byte range (``stages/readers/jsonl.py``), it is
a unit per ``ingest.shard_bytes`` of the file, after a pass that counts each piece's lines and ids
(``stages/ingest_pieces.py``). With ``--format parquet`` the file is Parquet of one row group, which
``stages/readers/parquet.py`` cuts by row count. This benchmark writes corpus-dev ``--copies`` times
into one file (new ids for every copy; the category as a field, read with ``category_field``) and times,
alternately and ``--repeats`` times each, on a local Ray of 1 and 2 workers started before the clock:

- ``--stages ingest`` (the default): ours, ``run --only ingest`` at the default ``shard_bytes``
  (64 MB: the file is cut), and datatrove's ``JsonlReader`` (or ``ParquetReader``) -> ``ParquetWriter`` (zstd) in a
  ``LocalPipelineExecutor`` of one task (a task reads whole files; the input is one file);
- ``--stages all``: ours, the whole run (langid, rules, quality, dedup at ``bench_pipeline``'s
  settings, fused as by default), its wall and each stage's.

To see the change, run it in a worktree of the commit before (where the file is one unit) with
``--no-datatrove``. It reports median wall seconds, MB/s of text per core (wall x workers) and CPU
seconds of every process. Needs ``../shared/data/corpus-dev`` and, for datatrove, the bench extra.

    python bench/bench_large_file.py [--copies 4] [--format jsonl|parquet] [--stages ingest|all] [--repeats 3] [--out large_file_r1]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    CATEGORY_NAMES, ProcessTreeMonitor, Timer, accept_fasttext_numpy2, by_role, compile_bytecode, corpus_shards, isolated,
    quiet_datatrove, repeat_line, save_results, worker_rows,
)


def write_input(copies: int, path: Path, group_rows: int | None = None) -> dict:
    """corpus-dev ``copies`` times as one JSON-lines file, or with a ``.parquet`` path one Parquet
    file of one row group (zstd; what ``pq.write_table`` makes of fewer than a million rows) or of
    groups of ``group_rows``, its ``academic`` as ``papers``; its size and text in MB."""
    rows = [row for shard in corpus_shards() for row in pq.read_table(shard).to_pylist()]
    records = [{**row, "id": f"{copy}-{row['id']}", "category": CATEGORY_NAMES.get(row["category"], row["category"])}
               for copy in range(copies) for row in rows]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path, compression="zstd", row_group_size=group_rows or len(records))
    else:
        with path.open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    text = sum(len(record["text"].encode()) for record in records)
    return {"docs": len(records), "file_mb": round(path.stat().st_size / 1e6, 3), "text_mb": round(text / 1e6, 3)}


def ours(path: str, work: str, workers: int, stages: str, ids: bool = True, shard_bytes: int = 64_000_000) -> dict:
    """Our run on a local Ray of ``workers`` (in a fresh process, Ray started before the clock)."""
    import bench_pipeline
    import ray

    from pipeline.config import parse_config
    from pipeline.runner import run_pipeline

    raw = bench_pipeline.pipeline_config({"by_category": {}}, Path(work), workers, shard_bytes)
    raw["fuse"] = True  # the default: the cut file's pieces go on down the stages in parallel
    raw["inputs"] = [{"name": "dump", "path": path, "category": "web", "category_field": "category"}
                     | ({"id_field": "id"} if ids else {})]
    if stages == "ingest":
        raw["stages"] = {"langid": {}}
    else:
        bench_pipeline.ensure_quality_model()
    config = parse_config(raw)
    with open(f"{work}.log", "w") as sink, contextlib.redirect_stderr(sink):
        bench_pipeline.start_local_ray(workers)
        try:
            with ProcessTreeMonitor() as monitor, Timer() as timer:
                results = run_pipeline(config, use_ray=True, only="ingest" if stages == "ingest" else None,
                                       log=lambda _: None)
            phase = by_role(monitor.mark())
        finally:
            ray.shutdown()
    return {"wall_s": timer.wall, "cpu_s": sum(role["cpu_s"] for role in phase.values()),
            "units": len(results[0].receipts), "docs": sum(r["kept_rows"] for r in results[-1].receipts),
            "stages_s": {result.spec.name: round(result.wall_seconds, 3) for result in results}}


def datatrove(path: str, work: str, workers: int) -> dict:
    """datatrove's JsonlReader (ParquetReader) -> ParquetWriter over the same file: one task (it reads files whole)."""
    accept_fasttext_numpy2()
    quiet_datatrove()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader, ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    reader = ParquetReader if path.endswith(".parquet") else JsonlReader
    pipeline = [reader(str(Path(path).parent), glob_pattern=Path(path).name),
                ParquetWriter(f"{work}/kept", compression="zstd")]
    Path(work).mkdir(parents=True)
    with open(f"{work}/datatrove.log", "w") as sink:  # its loguru sinks write to the descriptors
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    with ProcessTreeMonitor() as monitor, Timer() as timer:
        LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=workers, logging_dir=f"{work}/logs",
                              skip_completed=False, start_method="fork").run()
    phase = by_role(monitor.mark())
    docs = sum(pq.read_metadata(p).num_rows for p in Path(work, "kept").glob("*.parquet"))
    return {"wall_s": timer.wall, "cpu_s": sum(role["cpu_s"] for role in phase.values()), "docs": docs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of corpus-dev in the file (4: 250 MB)")
    parser.add_argument("--stages", choices=("ingest", "all"), default="ingest")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--no-id-field", action="store_true",
                        help="ours without the input's id_field: ids by line number, and the pass before the pieces only counts lines")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                        help="parquet: one file of one row group (cut by row count)")
    parser.add_argument("--row-group-rows", type=int, default=None,
                        help="with --format parquet: rows per row group (default: one group)")
    parser.add_argument("--shard-mb", type=float, default=64.0, help="ingest.shard_bytes of ours, in MB")
    parser.add_argument("--out", default="large_file")
    args = parser.parse_args()
    compile_bytecode()
    worker_counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-large-file-") as tmp:
        path = Path(tmp) / f"dump.{args.format}"
        corpus = write_input(args.copies, path, args.row_group_rows)
        shard_bytes = int(args.shard_mb * 1e6)
        print(f"one file of {corpus['file_mb']} MB: {corpus['docs']:,} documents, {corpus['text_mb']} MB of text",
              file=sys.stderr)
        if args.stages == "all":  # a first run compiles what this tree's stages have not cached yet
            isolated(ours, str(path), f"{tmp}/warm", max(worker_counts), "all", not args.no_id_field, shard_bytes, pin=False)
            shutil.rmtree(f"{tmp}/warm", ignore_errors=True)
        runs: dict[str, list[dict]] = {}
        for repeat in range(args.repeats):
            for workers in worker_counts:
                work = f"{tmp}/ours-{workers}-{repeat}"
                runs.setdefault(f"ours_{workers}", []).append(isolated(ours, str(path), work, workers, args.stages,
                                                                         not args.no_id_field, shard_bytes, pin=False))
                shutil.rmtree(work, ignore_errors=True)
                if not args.no_datatrove and args.stages == "ingest":
                    work = f"{tmp}/dt-{workers}-{repeat}"
                    runs.setdefault(f"datatrove_{workers}", []).append(isolated(datatrove, str(path), work, workers, pin=False))
                    shutil.rmtree(work, ignore_errors=True)
            print(repeat_line(runs, repeat), file=sys.stderr)
    rows = worker_rows(runs, corpus["text_mb"], [(f"ours_{w}", f"datatrove_{w}") for w in worker_counts])
    for name, row in rows.items():
        measured = runs[name]
        if "units" in measured[0]:  # ours
            row["ingest_units"] = measured[0]["units"]
            row["stages_s"] = {stage: round(statistics.median(r["stages_s"][stage] for r in measured), 3)
                               for stage in measured[0]["stages_s"]}
    payload = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "corpus": corpus, "results": rows}
    path = save_results(args.out, payload)
    print("| run | wall s (median) | MB/s per core | CPU s, all processes | ingest units | docs out | stages s | datatrove / ours |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for name, row in rows.items():
        stages = ", ".join(f"{k} {v}" for k, v in row.get("stages_s", {}).items())
        print(f"| {name} | {row['wall_s']} | {row['mb_per_s_per_core']} | {row['cpu_s']} | {row.get('ingest_units', '')} | "
              f"{row['docs']:,} | {stages} | {row.get('datatrove_over_ours', '')} |")
    print(f"\nsaved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
