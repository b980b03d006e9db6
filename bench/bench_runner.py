"""Runner overhead: Ray start-up, and per-shard cost of the runner against bare Parquet read+write.

    python bench/bench_runner.py [--corpus ../shared/data/corpus-dev] [--repeats 3]

1. bare: read every corpus shard with pyarrow and write it back (zstd), one process, no Ray;
2. ingest: the corpus through the ingest stage (Parquet in, document shards out) on local Ray;
3. passthrough: a stage that keeps every row, run by the runner on Ray with 1 and with 2 workers over
   the ingested shards. Its task time minus the bare time is the runner's per-shard overhead
   (receipts, sha256, per-category stats, Ray scheduling).
Prints a table and writes bench/results/runner.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from common import CORPUS, REPO, save_results  # noqa: E402
from pipeline import registry  # noqa: E402
from pipeline.config import parse_config  # noqa: E402
from pipeline.executor import RayExecutor  # noqa: E402
from pipeline.local_ray import start_local_ray  # noqa: E402
from pipeline.runner import plan_stages, run_stage  # noqa: E402


def bare_read_write(shards: list[Path], out: Path) -> float:
    started = time.perf_counter()
    for shard in shards:
        pq.write_table(pq.read_table(shard), out / shard.name, compression="zstd", row_group_size=2000)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    registry.STAGES["passthrough"] = "passthrough_stage:Passthrough"
    import ray

    started = time.perf_counter()
    start_local_ray(2, configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{BENCH}"}})
    ray.get(ray.remote(lambda: None).remote())  # first task: a worker process exists
    ray_start = time.perf_counter() - started
    results = {"ray_start_seconds": round(ray_start, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = parse_config({
            "work_dir": str(tmp / "work"),
            "inputs": [{"name": "corpus", "path": args.corpus, "category": "others", "id_field": "id"}],
            "ingest": {"shard_bytes": 8_000_000},
            "stages": {"passthrough": {}},
        })
        ingest, passthrough = plan_stages(config)
        executor = RayExecutor(config.ray)
        result = run_stage(ingest, None, config, executor, log=lambda _: None)
        megabytes = sum(r["input_bytes"] for r in result.receipts) / 1e6
        shards = [Path(ingest.directory) / f["path"] for r in result.receipts for f in r["kept_files"]]
        results.update(corpus_mb=round(megabytes, 1), shards=len(shards),
                       ingest_wall_seconds=round(result.wall_seconds, 2))
        bare, walls = [], {1: [], 2: []}
        task_seconds = {1: [], 2: []}
        for _ in range(args.repeats):
            out = tmp / "bare"
            out.mkdir(exist_ok=True)
            bare.append(bare_read_write(shards, out))
            for workers in (1, 2):
                executor.workers = workers
                run = run_stage(passthrough, ingest, config, executor, force=True, log=lambda _: None)
                walls[workers].append(run.wall_seconds)
                task_seconds[workers].append(sum(r["seconds"] for r in run.receipts))
    bare_s = statistics.median(bare)
    one = statistics.median(walls[1])
    results.update(
        bare_read_write_seconds=round(bare_s, 3),
        passthrough_wall_seconds_1_worker=round(one, 3),
        passthrough_wall_seconds_2_workers=round(statistics.median(walls[2]), 3),
        passthrough_task_seconds_1_worker=round(statistics.median(task_seconds[1]), 3),
        overhead_per_shard_seconds=round((one - bare_s) / len(shards), 4),
        overhead_share_of_wall=round((one - bare_s) / one, 3),
        bare_mb_per_s=round(megabytes / bare_s, 1),
        passthrough_mb_per_s_1_worker=round(megabytes / one, 1),
        scaling_1_to_2_workers=round(one / statistics.median(walls[2]) / 2, 3),
    )
    print(json.dumps(results, indent=2))
    save_results("runner", results)


if __name__ == "__main__":
    main()
