"""Where ours' 1 -> 2 worker efficiency goes, stage by stage (issue 21 asks 90% for every stage).

Efficiency is the time with 1 worker / (2 x the time with 2 workers). Three measurements per stage,
on corpus-dev as each stage sees it (the same inputs, shard size and stage settings as
``bench_pipeline.py``'s main section):

- **machine**: the stage's own work (``Stage.process`` over its whole input, in memory, in batches of
  ``--batch-rows``; for dedup, its signatures: normalising, shingling and MinHashing every document)
  in one process alone, then in two processes at once, each doing the same work, started together
  (forked from one that has loaded the stage and run it once). Their speed next to the one alone is
  what this machine gives a second worker (shared caches, memory bandwidth, the hypervisor), with no
  files, no Ray and nothing paid per worker. ``parquet`` is the same for writing and reading the
  rules stage's input as zstd Parquet, every stage's I/O.
- **Ray, first run**: the stage through the runner (``run_pipeline(only=stage)``, stage by stage as
  ``bench_pipeline.py`` runs it) on a local Ray of 1, then 2 CPUs, whose workers have run the stages
  before it but not this one: the efficiency of a pipeline run.
- **Ray, warm**: the same stage run again (``--repeats`` times, median) on the same workers, which have
  paid their first-task costs (numba, the models, imports): what Ray and the runner cost beyond the
  machine.

Also reported: the task seconds (the sum of the stage's receipts) with 2 workers against 1, warm;
more than 100% means the same tasks ran slower while two ran at once.

    python bench/bench_efficiency.py --out efficiency
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench_pipeline import (  # noqa: E402
    STAGES, corpus_table, ensure_quality_model, load_average, log, machine, one_arrow_thread, pipeline_config,
    prepare_inputs, start_local_ray, versions,
)
from common import CORPUS, RESULTS, compile_bytecode, corpus_shards, isolated, save_results  # noqa: E402

WORK = RESULTS / "efficiency"


# ----------------------------------------------------------------------------------- Ray

def ray_runs(config_raw: dict, repeats: int) -> dict:
    """Each stage, in pipeline order, once on workers that have not run it and ``repeats`` times
    more; per run: wall seconds and the sum of its tasks' seconds."""
    from pipeline import runner
    from pipeline.config import parse_config

    config = parse_config(config_raw)
    task_seconds: list[float] = []
    original = runner.run_stage

    def measured_stage(spec, *args, **kwargs):
        result = original(spec, *args, **kwargs)
        task_seconds.append(sum(receipt["seconds"] for receipt in result.receipts))
        return result

    runner.run_stage = measured_stage
    results: dict[str, list[dict]] = {}
    start_local_ray(config.ray.num_cpus)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # progress bars
            for stage in STAGES:
                for _ in range(repeats + 1):
                    task_seconds.clear()
                    started = time.perf_counter()
                    runner.run_pipeline(config, use_ray=True, only=stage, force=True, log=lambda _: None)
                    results.setdefault(stage, []).append(
                        {"wall_s": time.perf_counter() - started, "task_s": sum(task_seconds)})
    finally:
        runner.run_stage = original
        import ray

        ray.shutdown()
    return results


# ----------------------------------------------------------------------------------- machine

def stage_work(config_raw: dict, work_dir: Path, stage: str, batch_rows: int) -> Callable[[], None]:
    """The stage's own work over its whole input, in memory: a function to call repeatedly."""
    from pipeline import registry
    from pipeline.config import parse_config

    index = STAGES.index(stage)
    source = work_dir / f"{index:02d}_{STAGES[index - 1]}" / "kept"
    table = pa.concat_tables([pq.read_table(path) for path in sorted(source.glob("*.parquet"))])
    batches = [table.slice(start, batch_rows) for start in range(0, table.num_rows, batch_rows)]
    config = parse_config(config_raw).stage_configs()[stage]
    if stage == "dedup":
        from stages.dedup.documents import _signatures

        job = SimpleNamespace(config=config)
        return lambda: [_signatures(job, batch) for batch in batches]
    instance = registry.stage_class(stage)(config)
    return lambda: [instance.process(batch) for batch in batches]


def parquet_work(work_dir: Path) -> Callable[[], None]:
    """Writing the rules stage's input as zstd Parquet (row groups of 2,000) and reading it back."""
    source = work_dir / "02_langid" / "kept"
    table = pa.concat_tables([pq.read_table(path) for path in sorted(source.glob("*.parquet"))])

    def run() -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=2000)
        pq.read_table(pa.BufferReader(sink.getvalue()))

    return run


def _timed_child(work: Callable[[], None], barrier, results) -> None:
    barrier.wait()
    started = time.perf_counter()
    work()
    results.put(time.perf_counter() - started)


def alone_and_together(work: Callable[[], None], repeats: int) -> dict:
    """``work`` timed in one forked process alone and in two at once, interleaved ``repeats`` times;
    medians (for two, the slower of the pair)."""
    context = multiprocessing.get_context("fork")
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for count in (1, 2):
            barrier, results = context.Barrier(count), context.Queue()
            children = [context.Process(target=_timed_child, args=(work, barrier, results)) for _ in range(count)]
            for child in children:
                child.start()
            seconds = [results.get() for _ in children]
            for child in children:
                child.join()
            times[count].append(max(seconds))
    alone, together = statistics.median(times[1]), statistics.median(times[2])
    return {"alone_s": alone, "together_s": together, "speed": alone / together, "runs": times}


def machine_runs(config_raw: dict, work_dir: str, repeats: int, batch_rows: int) -> dict:
    """``alone_and_together`` for each stage's work and for Parquet I/O, in this process's children."""
    one_arrow_thread()
    results = {}
    for stage in STAGES[1:]:
        work = stage_work(config_raw, Path(work_dir), stage, batch_rows)
        work()  # loads models and kernels before the fork, so the children time the work alone
        results[stage] = alone_and_together(work, repeats)
    work = parquet_work(Path(work_dir))
    work()
    results["parquet"] = alone_and_together(work, repeats)
    return results


# ----------------------------------------------------------------------------------- report

def summarise(ray: dict[int, dict], machine_results: dict) -> dict:
    rows = {}
    for stage in STAGES:
        one, two = ray[1][stage], ray[2][stage]
        warm_one = statistics.median(run["wall_s"] for run in one[1:])
        warm_two = statistics.median(run["wall_s"] for run in two[1:])
        rows[stage] = {
            "machine": machine_results.get(stage, {}).get("speed"),
            "ray_first": one[0]["wall_s"] / (2 * two[0]["wall_s"]),
            "ray_warm": warm_one / (2 * warm_two),
            "first_s": [one[0]["wall_s"], two[0]["wall_s"]],
            "warm_s": [warm_one, warm_two],
            "task_s_2_vs_1": statistics.median(run["task_s"] for run in two[1:])
            / statistics.median(run["task_s"] for run in one[1:]),
        }
    rows["parquet"] = {"machine": machine_results["parquet"]["speed"]}
    return rows


def render(report: dict) -> str:
    meta = report["meta"]
    lines = [
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; machine: {meta['machine']['nproc']} cores ({meta['machine']['cpu']}); load before "
        f"{meta['load_before']}, after {meta['load_after']}; corpus: {meta['corpus']['docs']:,} documents, "
        f"{meta['corpus']['text_mb']} MB, {meta['corpus']['files']} files; repeats {meta['repeats']}",
        "",
        "| stage | machine: speed of each of two at once | Ray, first run: efficiency (1 / 2 workers, s) "
        "| Ray, warm: efficiency (1 / 2 workers, s) | task seconds, 2 workers / 1, warm |",
        "|---|---:|---:|---:|---:|",
    ]
    pct = lambda value: "–" if value is None else f"{value:.0%}"  # noqa: E731
    for stage, row in report["summary"].items():
        if stage == "parquet":
            lines.append(f"| Parquet write + read (zstd) | {pct(row['machine'])} | – | – | – |")
            continue
        first, warm = row["first_s"], row["warm_s"]
        lines.append(f"| {stage} | {pct(row['machine'])} | {pct(row['ray_first'])} ({first[0]:.2f} / {first[1]:.2f}) "
                     f"| {pct(row['ray_warm'])} ({warm[0]:.2f} / {warm[1]:.2f}) | {pct(row['task_s_2_vs_1'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(CORPUS), help="directory of Parquet shards (corpus-dev)")
    parser.add_argument("--shard-mb", type=float, default=5.0, help="MB of text per input file and shard")
    parser.add_argument("--repeats", type=int, default=3, help="warm Ray runs per stage, and machine repeats")
    parser.add_argument("--batch-rows", type=int, default=1000, help="rows per batch of the machine measurement")
    parser.add_argument("--out", default="efficiency", help="results name: bench/results/NAME.json and .md")
    args = parser.parse_args()

    meta = {"command": " ".join(["python bench/bench_efficiency.py", *sys.argv[1:]]), "date": date.today().isoformat(),
            "machine": machine(), "versions": versions(), "load_before": load_average(), "repeats": args.repeats}
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    compile_bytecode()
    inputs = prepare_inputs(corpus_table(corpus_shards(Path(args.corpus)), 1), WORK / "inputs", args.shard_mb)
    meta["corpus"] = {k: v for k, v in inputs.items() if k != "by_category"}
    ensure_quality_model()
    shard_bytes = int(args.shard_mb * 1e6)
    ray = {}
    for workers in (1, 2):
        log(f"Ray with {workers} worker(s): each stage once, then {args.repeats} times warm")
        config = pipeline_config(inputs, WORK / f"ray-{workers}", workers, shard_bytes)
        ray[workers] = isolated(ray_runs, config, args.repeats, pin=False)
    log("machine: each stage's work in one process, then two at once")
    config = pipeline_config(inputs, WORK / "ray-1", 1, shard_bytes)
    machine_results = isolated(machine_runs, config, str(WORK / "ray-1"), args.repeats, args.batch_rows, pin=False)
    meta["load_after"] = load_average()
    report = {"meta": meta, "summary": summarise(ray, machine_results), "ray_runs": ray, "machine_runs": machine_results}
    save_results(args.out, report)
    markdown = render(report)
    (RESULTS / f"{args.out}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
