"""Peak memory of one worker task on a 256 MB-of-text shard: a RowFilter stage reading the whole
shard (``whole_shard = True``, how every stage ran before) against streaming it in batches of
``batch_rows`` rows (the RowFilter default). Each measurement runs in a fresh process.

    python bench/bench_streaming.py [--mb 256] [--batch-rows 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline.stage import RowFilter, StageConfig  # noqa: E402


class KeepLong(RowFilter):
    name = "keep_long"
    Config = StageConfig

    def reason(self, row: dict) -> str | None:
        return "short" if len(row["text"]) < 500 else None


class KeepLongWhole(KeepLong):
    name = "keep_long_whole"
    whole_shard = True


def make_shard(path: Path, megabytes: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, size, n = [], 0, 0
    words = "the quick brown fox jumps over a lazy dog while data pipelines stream batches".split()
    with pq.ParquetWriter(path, pa.schema([(c, pa.string()) for c in ("id", "text", "source", "category", "meta")]),
                          compression="zstd") as writer:
        while size < megabytes * 1_000_000:
            text = " ".join(words[(n + i) % len(words)] for i in range(40 + n % 400))
            rows.append({"id": f"d{n}", "text": text, "source": "s", "category": "web", "meta": "{}"})
            size += len(text)
            n += 1
            if len(rows) == 20000:
                writer.write_table(pa.Table.from_pylist(rows, writer.schema), row_group_size=2000)
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, writer.schema), row_group_size=2000)


def measure(shard: str, whole: bool, batch_rows: int, out: str) -> dict:
    import pyarrow.fs as pafs

    from pipeline.planning import StageSpec, Unit
    from pipeline.worker import run_unit

    stage = KeepLongWhole if whole else KeepLong
    spec = StageSpec(2, stage.name, StageConfig(), "bench", out, pafs.LocalFileSystem(), stage, batch_rows)
    started = time.perf_counter()
    receipt = run_unit((spec, Unit("part-0", shard, "x")))
    return {"whole_shard": whole, "batch_rows": batch_rows, "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "input_rows": receipt["input_rows"], "kept_rows": receipt["kept_rows"],
            "kept_sha256": receipt["kept_files"][0]["sha256"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        shard, whole, out = args.child
        print(json.dumps(measure(shard, whole == "1", args.batch_rows, out)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "shard.parquet"
        make_shard(shard, args.mb)
        print(f"shard: {shard.stat().st_size / 1e6:.0f} MB on disk, {args.mb} MB of text")
        results = []
        for whole in ("1", "0"):
            done = subprocess.run([sys.executable, __file__, "--batch-rows", str(args.batch_rows),
                                   "--child", str(shard), whole, os.path.join(tmp, f"out{whole}")],
                                  capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout))
            print(results[-1])
        assert results[0]["kept_sha256"] == results[1]["kept_sha256"], "streaming changed the output"


if __name__ == "__main__":
    main()
