"""Records whose other fields dwarf their text: ingest's wall time and peak memory.

Datasets often keep a page's HTML (or another large field) beside its extracted text; ingest carries
every field but the text in ``meta``. This benchmark writes ``--rows`` records of corpus-dev text
(3-20 kB each), each beside an ``html`` field of ``--field-kb`` kB (distinct per row, so Parquet
does not dictionary-encode it), as one ``.jsonl.gz`` (read whole, one unit) and one Parquet file
(one row group), and runs ``python -m pipeline run CONFIG --only ingest --no-ray`` on each, in a
subprocess, with the default ``shard_bytes``. It reports wall seconds, the peak resident memory
of the run's largest process (``common.ProcessTreeMonitor``: the kernel's high-water mark, polled
every 0.2 s), and the kept shards ingest made. To see a change, run it in a worktree of the commit
before as well. Needs ``../shared/data/corpus-dev``; the inputs take ``rows x field-kb`` of disk
space while it runs (2.2 GB by default).

    python bench/bench_wide_rows.py [--rows 2200] [--field-kb 1000] [--out wide_rows]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ProcessTreeMonitor, compile_bytecode, corpus_shards, save_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def write_inputs(rows: int, field_kb: int, directory: Path) -> dict[str, Path]:
    """The same records as ``wide.jsonl.gz`` and ``wide.parquet``."""
    texts = [text for text in pq.read_table(corpus_shards()[1], columns=["text"])["text"].to_pylist()
             if 3000 < len(text) < 20000]
    body = "x" * (field_kb * 1000)
    table = pa.table({"id": list(range(rows)), "text": [f"{texts[i % len(texts)]} {i}" for i in range(rows)],
                      "html": pa.array([f"<div id={i}>{body}</div>" for i in range(rows)], pa.large_string())})
    paths = {"jsonl.gz": directory / "wide.jsonl.gz", "parquet": directory / "wide.parquet"}
    with gzip.open(paths["jsonl.gz"], "wt", encoding="utf-8", compresslevel=1) as out:
        for record in table.to_pylist():
            out.write(json.dumps(record) + "\n")
    pq.write_table(table, paths["parquet"], compression="zstd")
    return paths


def ingest(path: Path, work: Path) -> dict:
    """``run --only ingest --no-ray`` on one input file in a subprocess: wall, peak MB, shards."""
    config = work.with_suffix(".json")
    config.write_text(json.dumps({"work_dir": str(work), "inputs": [
        {"name": "wide", "path": str(path), "category": "web", "id_field": "id"}]}))
    command = [sys.executable, "-m", "pipeline", "run", str(config), "--only", "ingest", "--no-ray"]
    with ProcessTreeMonitor() as monitor:
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
    # the run's processes, not this one (which held the inputs while it wrote them)
    peak = max(entry["peak_mb"] for pid, entry in monitor.mark().items() if pid != os.getpid())
    return {"wall_s": round(wall, 2), "peak_mb": round(peak), "shards": len(list((work / "01_ingest" / "kept").glob("*.parquet")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2200)
    parser.add_argument("--field-kb", type=int, default=1000, help="kB of the html field beside each text")
    parser.add_argument("--out", default="wide_rows")
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="bench-wide-rows-") as tmp:
        paths = write_inputs(args.rows, args.field_kb, Path(tmp))
        results = {form: ingest(path, Path(tmp) / f"work-{form.replace('.', '-')}") for form, path in paths.items()}
    payload = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), "rows": args.rows,
               "field_kb": args.field_kb, "results": results}
    saved = save_results(args.out, payload)
    print("| input | wall s | peak MB (largest process) | kept shards |")
    print("|---|---:|---:|---:|")
    for form, row in results.items():
        print(f"| {form} | {row['wall_s']} | {row['peak_mb']:,} | {row['shards']} |")
    print(f"\nsaved {saved}", file=sys.stderr)


if __name__ == "__main__":
    main()
