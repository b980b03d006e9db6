"""Dedup's clusters step both ways on synthetic duplicate graphs: the single task (every edge in one
union-find, ``stages.dedup.components.labels``) against the distributed one (``stages.dedup.star`` rounds, then ``stages.dedup.partitioned``).

    python bench/bench_components.py [--edges 1e6,1e7] [--graphs clusters,chain] [--partitions 16]
                                     [--workers 2] [--shards 16] [--ways single_task,distributed]
                                     [--gather auto] [--gather-block 32] [--repeats 1]
                                     [--giant 0] [--giant-shape tree] [--no-compare]
                                     [--work $TMPDIR/bench-components] [--out components]

    # the components' exchanges read directly or through the gather level, at 16, 64, 256 partitions
    for p in 16 64 256; do python bench/bench_components.py --edges 1e6 --graphs clusters --ways distributed \
        --gather never,always --partitions $p --repeats 2 --out components-gather-$p; done

    # 10^8 edges on 16 cores, each way on its own (inputs: about 1.5 GB per way)
    python bench/bench_components.py --edges 1e8 --graphs clusters --workers 16 --partitions 64 \
        --shards 64 --ways distributed --out components-1e8-distributed

Graphs (``--graphs``), each with about ``--edges`` edges, over documents numbered as dedup numbers
them in ``--shards`` shards (a tenth of the documents in no cluster):

- clusters: what near-duplicate detection finds. Cluster sizes are Pareto-distributed (most of 2-5
  documents, the largest 100,000); in each, every document links to a random earlier one (a random
  tree, as band collisions chain documents), plus half as many random edges again inside the
  cluster. Members are spread over the corpus; 30 % of the edges are exact.
- chain: one path through every document in random order, the worst case for the number of rounds.

``--giant N`` adds one cluster of N documents to either graph (a template repeated across a site):
``--giant-shape tree``, each member linked to a random earlier one, or ``star``, one random member
linked to every other. In the last rounds its arcs all point at its root, the case that once put a
whole cluster into one task.

``--gather`` runs the distributed way once per ``shuffle.gather`` setting listed (its exchanges read
directly, through the gather level in blocks of ``--gather-block`` targets, or as the size decides:
``stages.dedup.exchange``), and ``--repeats`` runs every way that many times, in alternating order.

Each way (``--ways``) runs as Ray tasks on a fresh local Ray with ``--workers`` CPUs, on a copy of
the same scratch files (docs/, edges/: verified edges, one file per shard), keep: longest. Every
task measures itself: wall and CPU seconds and its peak resident memory (VmHWM, reset when the task
starts, so a reused Ray worker reports this task's peak only), the files it opened (through the
job's filesystem, ``bench_shuffle.CountingOpens``: each would be a request on an object store) and
the bytes its read system calls returned (``bench_shuffle.io_counters``: footers and row groups, and
whatever else the worker process read meanwhile). Per step: tasks, wall seconds (the step's, from
the driver), CPU seconds of all its tasks, files opened and MB read by all its tasks, the largest
task's peak, the largest growth of a task over the size its worker had when the task started (a Ray
worker with pyarrow loaded holds about 200-250 MB already), and the most rows one task read
(``task_rows``: arcs in a star step, members in ``cluster keepers`` and ``giant rows``; counted from
the files afterwards). The rows and summary every run writes must be byte-identical (checked when
more than one runs, else the benchmark fails; ``--no-compare`` skips that). Each run also records
one sha256 over its outputs (``output_sha256``), so runs of one way each can be compared afterwards.

Results: bench/results/``--out``.json and a table on stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import filecmp
import hashlib
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from bench_shuffle import CountingOpens, io_counters  # noqa: E402  (the shuffle benchmarks count the same way)
from common import peak_rss_mb, reset_peak_rss, save_results  # noqa: E402
from pipeline import storage  # noqa: E402
from pipeline.local_ray import start_local_ray  # noqa: E402
from stages.dedup import DedupConfig, clusters, documents, partitioned, star  # noqa: E402
from stages.dedup.shuffle import Job, Step  # noqa: E402
from stages.dedup.steps import make_job  # noqa: E402

LARGEST_CLUSTER = 100_000


# ----------------------------------------------------------------------------- graphs

def cluster_graph(rng: np.random.Generator, edges: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(u, v) as member numbers 0..members-1, and the number of members: Pareto-sized random trees
    plus random edges inside the clusters."""
    sizes = []
    budget = edges / 1.5  # a tree has size - 1 edges; the extras add half as many
    while budget > 0:
        drawn = np.minimum((rng.pareto(1.3, 100_000) * 2 + 2).astype(np.int64), LARGEST_CLUSTER)
        sizes.append(drawn)
        budget -= (drawn - 1).sum()
    sizes = np.concatenate(sizes)
    sizes = sizes[:np.searchsorted(np.cumsum(sizes - 1), edges / 1.5) + 1]
    offset = np.repeat(np.cumsum(sizes) - sizes, sizes)
    position = np.arange(sizes.sum()) - offset
    child = position > 0
    tree_u = offset[child] + (rng.random(int(child.sum())) * position[child]).astype(np.int64)
    tree_v = offset[child] + position[child]
    extra = edges - len(tree_u)
    cluster = rng.choice(len(sizes), size=extra, p=(sizes - 1) / (sizes - 1).sum())
    start, size = (np.cumsum(sizes) - sizes)[cluster], sizes[cluster]
    extra_u = start + (rng.random(extra) * size).astype(np.int64)
    extra_v = start + (rng.random(extra) * size).astype(np.int64)
    return np.concatenate([tree_u, extra_u]), np.concatenate([tree_v, extra_v]), int(sizes.sum())


def chain_graph(rng: np.random.Generator, edges: int) -> tuple[np.ndarray, np.ndarray, int]:
    members = np.arange(edges + 1)
    return members[:-1], members[1:], edges + 1


GRAPHS: dict[str, Callable] = {"clusters": cluster_graph, "chain": chain_graph}


def giant_cluster(rng: np.random.Generator, size: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of one cluster of members 0..size-1: a random tree (each member linked to a random
    earlier one) or a star around a random member."""
    if shape == "star":
        hub = int(rng.integers(size))
        leaves = np.delete(np.arange(size), hub)
        return np.full(len(leaves), hub), leaves
    child = np.arange(1, size)
    return (rng.random(size - 1) * child).astype(np.int64), child


def write_inputs(job: Job, graph: str, edges: int, seed: int = 0, giant: int = 0, giant_shape: str = "tree") -> dict:
    """docs/ and edges/ of ``job``'s scratch for one synthetic graph, with a ``giant`` cluster of that
    many documents if not 0; what it holds. The files are written by a thread per CPU (Parquet
    encoding releases the GIL); the random draws stay in one order, so a seed gives the same files
    whatever the CPUs."""
    rng = np.random.default_rng(seed)
    u, v, members = GRAPHS[graph](rng, edges)
    if giant:
        giant_u, giant_v = giant_cluster(rng, giant, giant_shape)
        u, v, members = np.concatenate([u, giant_u + members]), np.concatenate([v, giant_v + members]), members + giant
    shards = len(job.shards)
    documents_total = int(members * 1.1)
    per_shard = np.diff(np.linspace(0, documents_total, shards + 1).astype(np.int64))
    numbers = np.concatenate([(shard << 32) + np.arange(n) for shard, n in enumerate(per_shard)])
    doc = rng.permutation(numbers)[:members]  # members spread over the corpus, in random order
    del numbers
    u, v = doc[u], doc[v]
    del doc
    first, second = np.minimum(u, v), np.maximum(u, v)  # as dedup writes them: first document first
    del u, v
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        written = []
        for shard, n in enumerate(per_shard):
            number = np.arange(n) + (shard << 32)
            table = pa.table({
                "doc": number, "id": pa.array(number).cast(pa.string()),
                "chars": rng.integers(100, 100_000, n), "quality_score": pa.nulls(n, pa.float32()),
            }, schema=documents.DOCS_SCHEMA)
            written.append(pool.submit(storage.write_parquet, job.filesystem, job.path(documents.DOCS, shard), table))
        exact = rng.random(len(first)) < 0.3
        # verify writes the edges of a shard's documents there; a stable sort keeps each shard's order
        edge_shard = (second >> 32).astype(np.int32)
        order = np.argsort(edge_shard, kind="stable")
        first, second, exact = first[order], second[order], exact[order]
        bounds = np.append(0, np.cumsum(np.bincount(edge_shard, minlength=shards)))
        del edge_shard, order
        for shard in range(shards):
            rows = slice(bounds[shard], bounds[shard + 1])
            written.append(pool.submit(storage.write_parquet, job.filesystem, job.path(documents.EDGES, shard),
                                       pa.table({"u": first[rows], "v": second[rows], "exact": exact[rows]})))
        for future in written:
            future.result()
    return {"graph": graph, "edges": int(len(first)), "clustered_documents": members, "documents": documents_total,
            "giant": giant, "giant_shape": giant_shape if giant else None}


# ----------------------------------------------------------------------------- measuring

class TaskOpens(CountingOpens):
    """``CountingOpens`` that travels to a Ray task (pickled as a fresh one: its count starts at 0
    there); ``CountingOpens`` itself cannot be unpickled, its ``__getattr__`` recursing before
    ``local`` is set."""

    def __reduce__(self):
        return type(self), ()


def measured(fn: Callable) -> Callable:
    """``fn`` as a task that reports its own wall, CPU and peak memory (VmHWM, reset at its start),
    the files it opened through its job's filesystem and the bytes it read."""
    def task(item):
        reset_peak_rss()
        base = peak_rss_mb()
        disk = item[0].filesystem
        opens = disk.opens
        _, read = io_counters()
        wall, cpu = time.perf_counter(), time.process_time()
        fn(item)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"wall_s": wall, "cpu_s": cpu, "peak_mb": peak_rss_mb(), "base_mb": base,
                "opens": disk.opens - opens, "mb_read": (io_counters()[1] - read) / 2**20}
    return task


def task_rows(job: Job, step: Step) -> int | None:
    """The most rows one task of ``step`` read from the exchange before it (the ``part`` column of
    its input files, counted per partition); None for the per-shard steps."""
    if step.name.startswith("components: unique edges"):
        directory, files = star.ROUTED, len(documents.edge_files(job))
    elif step.name.startswith(("components: large star", "components: small star", "components: labels")):
        directory, files = star.arcs(step.items[0][0]), job.config.partitions
    elif step.name.startswith(("cluster keepers", "giant rows")):
        directory, files = partitioned.MEMBERS, len(job.shards)
    else:
        return None
    counts = np.zeros(job.config.partitions, np.int64)
    for path in job.paths(directory, files):
        part = storage.read_parquet(job.filesystem, path, columns=["part"])["part"].to_numpy()
        counts += np.bincount(part, minlength=job.config.partitions)
    return int(counts.max())


def run_steps(job: Job, steps, record: list[dict]) -> None:
    """Each step's tasks on Ray (the next step is asked for once this one finished, as star needs)."""
    import ray

    for step in steps:
        started = time.perf_counter()
        remote = ray.remote(num_cpus=1, max_retries=0)(measured(step.fn))
        tasks = ray.get([remote.remote((job, item)) for item in step.items])
        record.append({
            "step": step.name, "tasks": len(tasks), "wall_s": round(time.perf_counter() - started, 2),
            "cpu_s": round(sum(t["cpu_s"] for t in tasks), 2),
            "opens": sum(t["opens"] for t in tasks), "max_opens": max(t["opens"] for t in tasks),
            "mb_read": round(sum(t["mb_read"] for t in tasks), 2),
            "task_peak_mb": round(max(t["peak_mb"] for t in tasks), 1),
            "task_growth_mb": round(max(t["peak_mb"] - t["base_mb"] for t in tasks), 1),
            "task_rows": task_rows(job, step),
        })
        print(f"    {record[-1]}", flush=True)


def run_names(ways: list[str], gathers: list[str], repeats: int) -> list[tuple[str, str, str]]:
    """(name, way, gather setting) of every run: the distributed way once per gather setting, every
    run ``repeats`` times, the order reversed on every other repeat (interleaved)."""
    once = [(way, way, "auto") for way in ways if way == "single_task"] + [
        ("distributed" if gathers == ["auto"] else f"distributed, gather {gather}", way, gather)
        for way in ways if way == "distributed" for gather in gathers]
    return [(name + (f" #{repeat + 1}" if repeats > 1 else ""), way, gather)
            for repeat in range(repeats) for name, way, gather in (once if repeat % 2 == 0 else once[::-1])]


def both_ways(work: Path, graph: str, edges: int, shards: int, partitions: int, ways: list[str],
              workers: int, compare: bool = True, giant: int = 0, giant_shape: str = "tree",
              gathers: list[str] = ("auto",), gather_block: int = 32, repeats: int = 1) -> dict:
    """Each run (``run_names``) on its own copy of the same inputs, in a Ray of its own (fresh
    workers: a worker keeps the memory an earlier task freed, and would report it as this one's);
    their outputs compared byte for byte when more than one ran and ``compare``. Each run's result
    holds the sha256 of its outputs, so runs of one way each can be compared afterwards."""
    import ray

    runs = run_names(ways, list(gathers), repeats)
    scratches = {name: work / f"{graph}-{edges}-{name.replace(' ', '-').replace(',', '').replace('#', '')}"
                 for name, _, _ in runs}
    shutil.rmtree(work, ignore_errors=True)
    inputs = {f"shard-{i}": "not read" for i in range(shards)}
    jobs = {}
    for name, _, gather in runs:
        config = DedupConfig(partitions=partitions, keep="longest",
                             shuffle={"gather": gather, "gather_block": gather_block})
        # the listings keep the plain local disk: only the steps' own reads are counted
        job = make_job(config, inputs, str(scratches[name]), pafs.LocalFileSystem())
        jobs[name] = dataclasses.replace(job, filesystem=TaskOpens())
    first = runs[0][0]
    started = time.perf_counter()
    graph_info = write_inputs(jobs[first], graph, edges, giant=giant, giant_shape=giant_shape)
    for name, _, _ in runs[1:]:
        shutil.copytree(scratches[first], scratches[name], dirs_exist_ok=True)  # make_job wrote its listings
    print(f"  {graph}, {graph_info['edges']:,} edges: inputs written in {time.perf_counter() - started:.0f} s",
          flush=True)

    result = {**graph_info, "partitions": partitions, "shards": shards, "gather_block": gather_block, "ways": {}}
    for name, way, _ in runs:
        job = jobs[name]
        print(f"  {name}", flush=True)
        start_local_ray(workers, log_to_driver=True, runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{BENCH}"}})
        steps: list[dict] = []
        started = time.perf_counter()
        if way == "single_task":
            run_steps(job, [Step("clusters", clusters.cluster_corpus, (0,), None)], steps)
        else:
            run_steps(job, star.steps(job), steps)
            run_steps(job, partitioned.steps(job, ""), steps)
        result["ways"][name] = {
            "wall_s": round(time.perf_counter() - started, 2), "cpu_s": round(sum(s["cpu_s"] for s in steps), 2),
            "opens": sum(s["opens"] for s in steps), "mb_read": round(sum(s["mb_read"] for s in steps), 2),
            "task_peak_mb": max(s["task_peak_mb"] for s in steps),
            "task_growth_mb": max(s["task_growth_mb"] for s in steps),
            "task_rows": max((s["task_rows"] for s in steps if s["task_rows"] is not None), default=None),
            "rounds": sum(s["step"].startswith("components: large star") for s in steps), "steps": steps,
            "output_sha256": output_digest(job.scratch, shards),
        }
        ray.shutdown()
    if len(runs) > 1 and compare:
        for name, _, _ in runs[1:]:
            _, mismatch, errors = filecmp.cmpfiles(scratches[first], scratches[name], output_names(shards),
                                                   shallow=False)
            if mismatch or errors:
                raise SystemExit(f"{first} and {name} wrote different clusters/: {mismatch + errors}")
        result["identical_output"] = True
    result["summary"] = storage.read_json(pafs.LocalFileSystem(), clusters.summary_path(jobs[first]))
    shutil.rmtree(work)
    return result


def output_names(shards: int) -> list[str]:
    """The clusters step's outputs, relative to the scratch directory: every shard's rows and the summary."""
    return [f"{documents.CLUSTERS}/{shard:05d}.parquet" for shard in range(shards)] + \
        [f"{documents.CLUSTERS}/_SUCCESS.json"]


def output_digest(scratch: str, shards: int) -> str:
    """One sha256 over the outputs' bytes, file by file in order."""
    digest = hashlib.sha256()
    for name in output_names(shards):
        digest.update(hashlib.sha256(Path(scratch, name).read_bytes()).digest())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- report

def table(results: list[dict]) -> str:
    columns = ("graph:<9", "edges:>11", "parts:>5", "way:<28", "wall s:>7", "cpu s:>7", "opens:>10",
               "MB read:>9", "task peak MB:>13", "growth MB:>10", "task rows:>10", "rounds:>6", "tasks:>6")
    widths = [column.split(":")[1] for column in columns]
    lines = [" ".join(f"{column.split(':')[0]:{width}}" for column, width in zip(columns, widths))]
    for result in results:
        for way, row in result["ways"].items():
            cells = (result["graph"], f"{result['edges']:,}", result["partitions"], way, f"{row['wall_s']:.1f}",
                     f"{row['cpu_s']:.1f}", f"{row['opens']:,}", f"{row['mb_read']:,.1f}",
                     f"{row['task_peak_mb']:.0f}", f"{row['task_growth_mb']:.0f}",
                     f"{row['task_rows']:,}" if row["task_rows"] is not None else "-", row["rounds"] or "-",
                     sum(step["tasks"] for step in row["steps"]))
            lines.append(" ".join(f"{cell:{width}}" for cell, width in zip(cells, widths)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edges", default="1e6,1e7", help="comma-separated edge counts")
    parser.add_argument("--graphs", default="clusters,chain", help="clusters, chain (chain only up to 1e6 edges)")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-components")
    parser.add_argument("--ways", default="single_task,distributed", help="single_task, distributed")
    parser.add_argument("--gather", default="auto",
                        help="comma-separated shuffle.gather settings (auto, always, never): a distributed run each")
    parser.add_argument("--gather-block", type=int, default=32, help="shuffle.gather_block")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each way, interleaved")
    parser.add_argument("--giant", type=float, default=0, help="documents of one extra giant cluster (0: none)")
    parser.add_argument("--giant-shape", default="tree", choices=("tree", "star"))
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the byte comparison of the runs' outputs (each run's sha256 is still recorded)")
    parser.add_argument("--out", default="components")
    args = parser.parse_args()
    results = []
    for edges in (int(float(e)) for e in args.edges.split(",")):
        for graph in args.graphs.split(","):
            if graph == "chain" and edges > 1_000_000:
                continue  # tens of rounds over every edge: minutes per million edges on two cores
            results.append(both_ways(args.work, graph, edges, args.shards, args.partitions,
                                     args.ways.split(","), args.workers, not args.no_compare,
                                     int(args.giant), args.giant_shape, args.gather.split(","),
                                     args.gather_block, args.repeats))
    payload = {"machine": {"cpus": os.cpu_count(), "ray_workers": args.workers}, "results": results}
    print(f"results: {save_results(args.out, payload)}")
    print(table(results))


if __name__ == "__main__":
    main()
