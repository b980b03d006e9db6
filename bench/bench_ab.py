"""Before and after: the whole pipeline of two checkouts of this project, run alternately on the same
inputs, ours only (no datatrove), to measure one change on a noisy machine.

Each run is a fresh process of the checkout's own ``bench_pipeline.ours_run`` (Ray's start included,
stage by stage as the main benchmark runs them); the order alternates every pair (A B, B A, ...), and
the medians of the end-to-end and per-stage walls are printed per worker count. A checkout is a
directory, e.g. a ``git worktree add ../before <commit>`` of the commit before the change; run each
once first so that numba's cache of its kernels and the checkout's own copies of the tables
``pipeline.table_cache`` keeps are warm (``--warm``).

    python bench/bench_ab.py ../before . --scale 4 --layout mixed --workers 1,2 --pairs 3
    python bench/bench_ab.py ../before . --corpus bench/results/corpus-short --workers 1   # bench/shape_corpus.py's
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

CHILD = r'''
import json, sys
root, config_path, workers, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
sys.path[:0] = [root, root + "/bench"]
import bench_pipeline
raw = json.load(open(config_path))
raw["ray"]["num_cpus"], raw["work_dir"] = workers, work
result = bench_pipeline.ours_run(raw, True)
print("RESULT " + json.dumps({"end_to_end_s": result["end_to_end_wall_s"],
                              "stages": {name: stage["wall_s"] for name, stage in result["stages"].items()}}))
'''


def run(root: Path, config: Path, workers: int, scratch: Path, tables: Path) -> dict:
    """One run of checkout ``root``; ``tables``: its own ``pipeline.table_cache`` directory, since
    checkouts that define a table differently would each replace the other's copy at every run."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    environment = {**os.environ, "PYTHONPATH": str(root), "PIPELINE_CACHE_DIR": str(tables)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(config), str(workers), str(scratch / "run")],
                          capture_output=True, text=True, cwd=root, env=environment)
    found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not found:
        raise SystemExit(f"run of {root} with {workers} workers failed:\n{done.stderr[-3000:]}")
    return json.loads(found[0][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="checkout A (e.g. a git worktree of the commit before)")
    parser.add_argument("after", type=Path, help="checkout B")
    parser.add_argument("--corpus", type=Path, default=None,
                        help="directory of Parquet shards, as bench_pipeline.py (default: corpus-dev)")
    parser.add_argument("--scale", type=float, default=1.0, help="corpus-dev copies, as bench_pipeline.py")
    parser.add_argument("--layout", choices=["category", "mixed"], default="category")
    parser.add_argument("--shard-mb", type=float, default=5.0)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="one untimed run of each checkout first")
    args = parser.parse_args()

    import bench_pipeline
    from common import corpus_shards

    bench_pipeline.ensure_quality_model()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ab_"))
    try:
        shards = corpus_shards(args.corpus) if args.corpus else corpus_shards()
        inputs = bench_pipeline.prepare_inputs(bench_pipeline.corpus_table(shards, args.scale),
                                               tmp / "inputs", args.shard_mb, args.layout)
        config = tmp / "config.json"
        config.write_text(json.dumps(bench_pipeline.pipeline_config(inputs, tmp / "work", 1,
                                                                    int(args.shard_mb * 1e6))))
        roots = {"A": args.before.resolve(), "B": args.after.resolve()}
        workers = [int(w) for w in args.workers.split(",")]
        if args.warm:
            for name, root in roots.items():
                run(root, config, workers[0], tmp / "work", tmp / f"tables-{name}")
        results: dict[tuple[str, int], list[dict]] = {}
        for pair in range(args.pairs):
            for count in workers:
                for name in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                    result = run(roots[name], config, count, tmp / "work", tmp / f"tables-{name}")
                    results.setdefault((name, count), []).append(result)
                    print(f"pair {pair + 1} {name} {count} workers: {result['end_to_end_s']:.2f} s "
                          + ", ".join(f"{s} {w:.2f}" for s, w in result["stages"].items()), flush=True)
        for count in workers:
            for name in ("A", "B"):
                runs = results[(name, count)]
                stages = {s: statistics.median(r["stages"][s] for r in runs) for s in runs[0]["stages"]}
                print(f"{name} ({roots[name]}), {count} workers: median end to end "
                      f"{statistics.median(r['end_to_end_s'] for r in runs):.2f} s; "
                      + ", ".join(f"{s} {w:.2f}" for s, w in stages.items()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
