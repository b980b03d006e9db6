"""Reads of dedup's all-to-all exchanges as the corpus grows: direct (every task of a step over shards or
partitions reads its slice of every file of the step before) against two levels (a gather task per
block of targets, then one file per task: ``stages.dedup.exchange``).

    python bench/bench_dedup_shuffle.py [--shards 16 64 256] [--docs 40] [--partitions 16] [--block 32] \
        [--repeats 2]
    python bench/bench_dedup_shuffle.py --corpus-dev 2 --shards 16 64 --ray --out dedup_shuffle_corpus_dev

For each S in ``--shards``: a synthetic corpus of S Parquet shards of ``--docs`` documents (random
prose; a third of the documents are edited copies, and some share a paragraph, of a document anywhere
earlier in the corpus, so that candidate pairs and paragraph removals cross every pair of shards), or
with ``--corpus-dev F`` bench_scale's corpus of F x corpus-dev (its copies past 1x perturbed) cut into
S shards of equal row counts. Then dedup's whole prepare (``Dedup.prepare``: every step, keeper rounds included), in a fresh spawned
process with one Arrow thread on the local disk, once per path and repeat, the paths interleaved so
that the machine's load drifts over both alike:

- direct: ``shuffle.gather: never``;
- two level: ``gather: auto`` with ``gather_above_reads: 0`` and ``gather_block: --block``, i.e. what
  a corpus above the threshold gets: blocks of min(B, targets / 8) targets (of 2 for 16
  partitions), an exchange with fewer than 16 targets staying direct.

Per step: tasks, files opened (through the job's filesystem: each would be a request on an object
store), the most any task opened, read system calls and MB read (``/proc/self/io`` of the process:
footers, row groups and the input shards), task-seconds (the sum of the tasks' wall times: medians
over the repeats). The stage's decisions, clusters, edges and summary, and the kept and removed rows
of every shard (``Dedup.process``, written as Parquet), must be byte-identical between the paths.
With ``--ray``, the dedup stage also runs through ``run_pipeline`` on a local Ray (2 CPUs) both ways,
and its kept/ and removed/ files and those scratch files must be byte-identical. Prints a Markdown
table and writes bench/results/dedup_shuffle.json (``--out``). The counts are exact; the seconds are
noisy on a shared machine.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import pyarrow as pa  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench_shuffle import CountingOpens, io_counters  # noqa: E402  (the mixture's shuffle benchmark counts the same way)
from common import isolated, save_results  # noqa: E402

WORDS = ("river mountain quietly seven library orange theory garden planet silver morning window history "
         "market engine forest number bridge letter summer winter station harbor music island report signal "
         "village paper stone cloud motor table doctor camera valley pocket").split()
# No kept reads (``stages.dedup.kept_reads``): every task opens its files as a task alone in its process
# would, as on a cluster of many workers, so the counts are the exchange layouts' own.
PATHS = {"direct": {"gather": "never", "read_cache_mb": 0},
         "two level": {"gather": "auto", "gather_above_reads": 0, "read_cache_mb": 0}}
COMPARED = ("decisions/*", "clusters*/*", "edges/*", "summary.json")  # what later steps and the stage read


def prose(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_corpus(directory: Path, shards: int, docs: int, seed: int = 0) -> dict[str, str]:
    """``shards`` Parquet files of ``docs`` documents each; shard name -> path, in order."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    texts, inputs = [], {}
    for shard in range(shards):
        rows = []
        for row in range(docs):
            kind = rng.random()
            if texts and kind < 0.2:  # a near copy: a few words changed
                words = rng.choice(texts).split(" ")
                for _ in range(3):
                    words[rng.randrange(len(words))] = rng.choice(WORDS)
                text = " ".join(words)
            elif texts and kind < 0.33:  # a page sharing a paragraph with an earlier one
                text = rng.choice(texts).split("\n")[0] + "\n" + prose(rng, 60)
            else:
                text = prose(rng, 40) + "\n" + prose(rng, 60) + "\n" + prose(rng, 30)
            texts.append(text)
            rows.append({"id": f"s{shard}-{row}", "text": text, "category": "web"})
        path = directory / f"part-{shard:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        inputs[path.stem] = str(path)
    return inputs


def write_corpus_dev(directory: Path, shards: int, factor: float, seed: int = 0) -> dict[str, str]:
    """bench_scale's corpus of ``factor`` x corpus-dev, in ``shards`` files of equal row counts."""
    import numpy as np

    import bench_scale

    base = bench_scale.load_corpus(bench_scale.CORPUS, seed)
    settings = argparse.Namespace(seed=seed, edits=3, file_mb=1e9)  # bench_scale's defaults; one file
    bench_scale.build_corpus(base, factor, directory / "whole", {}, settings)
    table = pq.read_table(directory / "whole" / "part-00000.parquet")
    shutil.rmtree(directory / "whole")
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    inputs = {}
    for index in range(shards):
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(table.slice(bounds[index], bounds[index + 1] - bounds[index]), path, compression="zstd")
        inputs[path.stem] = str(path)
    return inputs


def file_digests(root: Path, patterns: tuple[str, ...]) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for pattern in patterns for path in sorted(root.glob(pattern)) if path.is_file()}


def prepare_counted(inputs: dict[str, str], scratch: str, config: dict) -> dict:
    """In this process: dedup's prepare; per step its tasks, opens, reads, MB read and task-seconds;
    digests of the scratch files later steps read and of every shard's kept and removed rows."""
    from pipeline import storage
    from pipeline.stage import PrepareContext
    from stages.dedup import Dedup, DedupConfig
    from pipeline.executor import run_group

    disk = CountingOpens()
    steps: list[dict] = []

    def log(line: str) -> None:
        found = re.match(r"(.+): (\d+) items", line)
        if found:
            steps.append({"step": found.group(1), "tasks": int(found.group(2)), "opens": 0, "max_opens": 0,
                          "reads": 0, "mb_read": 0.0, "task_s": 0.0})

    def map_(fn, items):
        step = steps[-1]
        if fn is run_group:  # counted item by item, as the exchanges predict
            fn, items = items[0].fn, [item for group in items for item in group.items]
        for item in items:
            disk.opens = 0
            calls, read = io_counters()
            started = time.perf_counter()
            fn(item)
            step["task_s"] += time.perf_counter() - started
            after_calls, after_read = io_counters()
            step["opens"] += disk.opens
            step["max_opens"] = max(step["max_opens"], disk.opens)
            step["reads"] += after_calls - calls
            step["mb_read"] += (after_read - read) / 2**20

    started = time.perf_counter()
    stage = Dedup(DedupConfig(**config))
    stage.prepare(PrepareContext(inputs=inputs, scratch=scratch, filesystem=disk, map=map_, log=log))
    wall = time.perf_counter() - started
    local = pafs.LocalFileSystem()
    for shard, path in inputs.items():
        stage.begin_shard(shard, scratch, local)
        output = stage.process(pq.read_table(path))
        storage.write_parquet(local, f"{scratch}/out/kept/{shard}.parquet", output.kept)
        storage.write_parquet(local, f"{scratch}/out/removed/{shard}.parquet", output.removed)
    digests = file_digests(Path(scratch), COMPARED + ("out/*/*",))
    return {"steps": [s for s in steps if s["tasks"]], "wall_s": wall, "digests": digests}


def stage_on_ray(inputs: dict[str, str], work: str, config: dict) -> dict:
    """The dedup stage alone through ``run_pipeline`` on a fresh local Ray, one shard per input file;
    digests of its kept/ and removed/ files and of the scratch files later steps read."""
    from pipeline.config import parse_config
    from pipeline.runner import run_pipeline

    raw = {"work_dir": str(work), "ray": {"num_cpus": 2},
           "inputs": [{"name": "c", "path": str(Path(next(iter(inputs.values()))).parent), "format": "parquet",
                       "category_field": "category", "id_field": "id"}],
           "ingest": {"shard_bytes": 10**12, "max_files_per_unit": 1}, "stages": {"dedup": config}}
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bars
        run_pipeline(parse_config(raw), use_ray=True, log=lambda _: None)
    stage = Path(work) / "02_dedup"
    return {"shards": len(list((stage / "kept").glob("*.parquet"))),
            "gathered": (stage / "_scratch" / "gathered").is_dir(),
            "digests": file_digests(stage, ("kept/*", "removed/*") + tuple(f"_scratch/{p}" for p in COMPARED))}


def bench_size(shards: int, args, scratch: Path) -> list[dict]:
    partitions, block, repeats = args.partitions, args.block, args.repeats
    if args.corpus_dev:
        inputs = write_corpus_dev(scratch / f"corpus-{shards}", shards, args.corpus_dev)
    else:
        inputs = write_corpus(scratch / f"corpus-{shards}", shards, args.docs)
    runs: dict[str, list[dict]] = {path: [] for path in PATHS}
    for repeat in range(repeats):
        for path, settings in PATHS.items():  # interleaved
            config = {"partitions": partitions, "shuffle": {**settings, "gather_block": block}}
            work = scratch / f"{shards}-{repeat}-{path.replace(' ', '-')}"
            runs[path].append(isolated(prepare_counted, inputs, str(work), config))
            shutil.rmtree(work)
            print(f"  S = {shards}, {path}, repeat {repeat + 1}: {runs[path][-1]['wall_s']:.1f} s", flush=True)
    digests = [run["digests"] for path in PATHS for run in runs[path]]
    if any(d != digests[0] for d in digests) or not any(k.startswith("edges/") for k in digests[0]):
        raise SystemExit(f"S = {shards}: the paths wrote different decisions, clusters, edges or rows")
    print(f"  S = {shards}: {len(digests[0])} files byte-identical across paths and repeats", flush=True)
    if args.ray:
        on_ray = {path: isolated(stage_on_ray, inputs, str(scratch / f"ray-{shards}-{path.replace(' ', '-')}"),
                                 {"partitions": partitions, "shuffle": {**settings, "gather_block": block}}, pin=False)
                  for path, settings in PATHS.items()}
        direct, two = on_ray["direct"], on_ray["two level"]
        if direct["digests"] != two["digests"] or direct["shards"] != shards or not two["gathered"]:
            raise SystemExit(f"S = {shards}: on Ray, the paths wrote different files")
        print(f"  S = {shards}, on Ray: {len(direct['digests'])} files byte-identical "
              f"(kept/, removed/, scratch)", flush=True)
    rows = []
    for path in PATHS:
        for index, step in enumerate(runs[path][0]["steps"]):
            measured = [run["steps"][index] for run in runs[path]]
            rows.append({"shards": shards, "partitions": partitions, "path": path, **step,
                         "mb_read": round(statistics.median(s["mb_read"] for s in measured), 2),
                         "task_s": round(statistics.median(s["task_s"] for s in measured), 3)})
        rows.append({"shards": shards, "partitions": partitions, "path": path, "step": "whole prepare",
                     "tasks": sum(s["tasks"] for s in runs[path][0]["steps"]),
                     "opens": sum(s["opens"] for s in runs[path][0]["steps"]),
                     "max_opens": max(s["max_opens"] for s in runs[path][0]["steps"]),
                     "reads": sum(s["reads"] for s in runs[path][0]["steps"]),
                     "mb_read": round(statistics.median(sum(s["mb_read"] for s in r["steps"]) for r in runs[path]), 2),
                     "task_s": round(statistics.median(sum(s["task_s"] for s in r["steps"]) for r in runs[path]), 3),
                     "wall_s": round(statistics.median(r["wall_s"] for r in runs[path]), 2)})
    shutil.rmtree(scratch / f"corpus-{shards}")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| S | path | step | tasks | opens | most opens, one task | read calls | MB read | task-s |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['shards']} | {row['path']} | {row['step']} | {row['tasks']:,} | {row['opens']:,} | "
                     f"{row['max_opens']:,} | {row['reads']:,} | {row['mb_read']:,} | {row['task_s']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", nargs="+", type=int, default=[16, 64, 256])
    parser.add_argument("--docs", type=int, default=40, help="documents per shard")
    parser.add_argument("--corpus-dev", type=float, default=None, metavar="F",
                        help="bench_scale's corpus of F x corpus-dev instead of the synthetic one")
    parser.add_argument("--ray", action="store_true", help="also compare the stage's output on a local Ray")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--block", type=int, default=32, help="shuffle.gather_block")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path, interleaved; tables show medians")
    parser.add_argument("--out", default="dedup_shuffle", help="results as bench/results/OUT.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-dedup-shuffle-"))
    rows = []
    try:
        for shards in args.shards:
            rows += bench_size(shards, args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = markdown(rows)
    print(table)
    path = save_results(args.out, {"command": "python bench/bench_dedup_shuffle.py " + " ".join(sys.argv[1:]),
                                   "settings": vars(args), "rows": rows, "markdown": table})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
