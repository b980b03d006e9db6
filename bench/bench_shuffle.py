"""Reads of the mixture's pack step, one level (every pack task reads its row group from every scatter
file) against two (gather tasks per block of B training shards, then one file per pack task).

    python bench/bench_shuffle.py [--sizes 16x128 64x256 128x512] [--block 32] [--sample 16] [--repeats 1]

For each size S x T: S scatter files of one phase dealt to T training shards, written by the mixture's
own writer (``mixture.packing._row_group_per_block``) from synthetic runs (``--runs`` runs of about
``--tokens`` random ids per scatter file and training shard), twice: a row group per training shard,
as one level reads them, and per block of B, as the gather level does. Then, each kind of task in a
fresh spawned process with one Arrow thread, on the local disk, counting the files it opens and the
read system calls it makes (``/proc/self/io``: on an object store, each is a request):

- one level: ``pack_shard`` from the S scatter files, for ``--sample`` training shards spread over T;
- two level: every ``gather_block`` task (T / B of them), then ``pack_shard`` of the same sample of
  training shards from their gather files; the packed bytes must equal the one-level ones.

Dealing (scatter) is not measured: it is the same work either way, but for the footer it writes.

Per task (medians over the tasks measured, in ``--repeats`` interleaved rounds): files opened, read
system calls (after Parquet's coalescing; on an object store each would be a ranged GET), row groups
read, MB read, wall seconds; and peak memory, the largest ``VmHWM`` rise over one task (reset between
tasks). For the whole phase: opens, MB read and task-seconds, per-task medians x tasks. Prints a
Markdown table and writes bench/results/shuffle.json. Wall times on a shared machine are noisy; the
counts are exact.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from common import isolated, peak_rss_mb, reset_peak_rss, save_results  # noqa: E402


class CountingOpens:
    """The local disk, counting the files opened for reading. Reads are counted by the kernel
    (``io_counters``), so that Arrow reads the files natively, as in a real task: a Python file
    object in between made it read each file whole."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()
        self.opens = 0

    def open_input_file(self, path):
        self.opens += 1
        return self.local.open_input_file(path)

    def open_input_stream(self, path):
        self.opens += 1
        return self.local.open_input_stream(path)

    def __getattr__(self, name):
        return getattr(self.local, name)


def io_counters() -> tuple[int, int]:
    """This process's read system calls and bytes they returned so far (``syscr``, ``rchar``)."""
    with open("/proc/self/io") as source:
        fields = dict(line.split(": ") for line in source.read().splitlines())
    return int(fields["syscr"]), int(fields["rchar"])


def write_scatter(directory: Path, inputs: int, shards: int, runs: int, tokens: int, block: int) -> list[str]:
    """``inputs`` scatter files of phase ``p`` (``scatter/p/unit-NNNNN.parquet``), each with about
    ``runs`` runs per training shard, in row groups of ``block`` training shards, as scatter writes
    them; returns the input shard names."""
    from mixture.packing import _row_group_per_block, run_bytes, scatter_path

    rng = np.random.default_rng(0)
    units = [f"unit-{number:05d}" for number in range(inputs)]
    for number, unit in enumerate(units):
        count = runs * shards
        keys = rng.integers(0, 2**63, count, dtype=np.uint64)
        shard = (keys % np.uint64(shards)).astype(np.int32)
        lengths = rng.integers(1, 2 * tokens, count)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        table = pa.table({
            "id": [f"doc-{number}-{run}" for run in range(count)],
            "first_piece": pa.array(np.zeros(count, np.int32)), "last_piece": pa.array(np.zeros(count, np.int32)),
            "pieces": pa.array(np.ones(count, np.int32)), "category": ["web"] * count,
            "epoch": pa.array(np.zeros(count, np.int32)), "key": pa.array(keys),
            "n_tokens": pa.array(lengths, pa.int64()),
            "tokens": run_bytes(pa.LargeListArray.from_arrays(
                pa.array(offsets), pa.array(rng.integers(4, 60_000, offsets[-1], dtype=np.uint16)))),
            "shard": pa.array(shard)}).sort_by([("shard", "ascending"), ("key", "ascending"), ("id", "ascending")])
        path = Path(scatter_path(str(directory), "p", unit))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_row_group_per_block(table, block).to_pybytes())
    return units


def run_tasks(kind: str, tasks: list) -> dict:
    """In a fresh process: run ``tasks`` (``gather_block`` or ``pack_shard``) one after another, on a
    ``CountingOpens`` disk; per task its files opened, read system calls, MB read, wall seconds and
    peak memory rise."""
    from mixture.gather import gather_block
    from mixture.pack import pack_shard
    from pipeline import storage

    counting = CountingOpens()
    storage.resolve = lambda uri: (counting, os.path.abspath(uri))
    run = gather_block if kind == "gather" else pack_shard
    first, second = io_counters(), io_counters()
    own_calls, own_bytes = second[0] - first[0], second[1] - first[1]  # what reading the counters costs
    rows = []
    for task in tasks:
        counting.opens = 0
        reset_peak_rss()
        before = peak_rss_mb()
        calls, read = io_counters()
        started = time.perf_counter()
        run(task)
        wall = time.perf_counter() - started
        after_calls, after_read = io_counters()
        rows.append({"wall_s": wall, "peak_mb": peak_rss_mb() - before, "opens": counting.opens,
                     "reads": after_calls - calls - own_calls, "mb_read": (after_read - read - own_bytes) / 2**20})
    return {"tasks": rows}


def row_groups(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_row_groups


def pack_task(sources, shard: int, out: Path):
    from mixture.pack import PackTask

    return PackTask(phase="p", shard=shard, sources=sources, path=str(out / f"part-{shard:05d}.parquet"),
                    receipt=str(out / "_receipts" / f"part-{shard:05d}.json"), step_hash="bench", seq_len=2047,
                    eod_id=2, pad_id=3, token_type="uint16", rows_per_row_group=1024, megatron=True)


def digests(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.glob("part-*"))}


def summary(path: str, step: str, tasks: int, measured: list[dict], row_groups_per_task: float) -> dict:
    """One row of the table: per-task medians of the measured sample, and reads over all ``tasks``."""
    opens = statistics.median(row["opens"] for row in measured)  # the first task also reads the list of inputs
    return {"path": path, "step": step, "tasks": tasks, "sampled": len(measured),
            "opens_per_task": round(opens, 1), "reads_per_task": statistics.median(r["reads"] for r in measured),
            "row_groups_per_task": round(row_groups_per_task, 1),
            "mb_read_per_task": round(statistics.median(r["mb_read"] for r in measured), 3),
            "wall_s_per_task": round(statistics.median(r["wall_s"] for r in measured), 4),
            "peak_mb_per_task": round(max(r["peak_mb"] for r in measured), 1),
            "opens_total": round(opens * tasks),
            "mb_read_total": round(statistics.median(r["mb_read"] for r in measured) * tasks, 1),
            "task_s_total": round(statistics.median(r["wall_s"] for r in measured) * tasks, 1)}


def bench_size(inputs: int, shards: int, block: int, sample: int, runs: int, tokens: int, repeats: int,
               scratch: Path) -> list[dict]:
    from mixture.gather import GatherTask, gather_path
    from mixture.packing import scatter_files

    directory = scratch / f"{inputs}x{shards}"
    started = time.perf_counter()
    units = write_scatter(directory / "scatter", inputs, shards, runs, tokens, 1)
    write_scatter(directory / "blocks", inputs, shards, runs, tokens, block)
    sources, blocked = (scatter_files(str(directory / name), ["p"], units)["p"] for name in ("scatter", "blocks"))
    print(f"  {inputs} x {shards}: scatter files written in {time.perf_counter() - started:.1f} s", flush=True)
    groups = [row_groups(path) for path in sources]
    block_groups = [row_groups(path) for path in blocked]
    chosen = sorted({round(i * (shards - 1) / max(sample - 1, 1)) for i in range(min(sample, shards))})

    one, gathered, two = [], [], []
    for repeat in range(repeats):  # interleaved, so that the machine's load drifts over both paths alike
        gather_dir = str(directory / f"gather-{repeat}")
        blocks = [GatherTask(phase="p", block=number, first=first, stop=min(first + block, shards), sources=blocked,
                             directory=gather_dir, step_hash="bench")
                  for number, first in enumerate(range(0, shards, block))]
        one += isolated(run_tasks, "pack", [pack_task(sources, shard, directory / f"one-{repeat}")
                                            for shard in chosen])["tasks"]
        gathered += isolated(run_tasks, "gather", blocks)["tasks"]
        two += isolated(run_tasks, "pack", [pack_task([gather_path(gather_dir, shard)], shard,
                                                      directory / f"two-{repeat}") for shard in chosen])["tasks"]
        if digests(directory / f"one-{repeat}") != digests(directory / f"two-{repeat}"):
            raise SystemExit(f"{inputs} x {shards}: the two paths packed different bytes")

    per_shard = sum(groups) / shards
    gather_groups = sum(block_groups) / len(blocks)
    pack_groups = statistics.mean(row_groups(gather_path(gather_dir, shard)) for shard in chosen)
    rows = [summary("one level", "pack", shards, one, per_shard),
            summary("two level", "gather", len(blocks), gathered, gather_groups),
            summary("two level", "pack", shards, two, pack_groups)]
    for row in rows:
        row.update(inputs=inputs, shards=shards, block=block)
    rows.append({"inputs": inputs, "shards": shards, "block": block, "path": "two level", "step": "total",
                 "tasks": len(blocks) + shards,
                 **{key: round(rows[1][key] + rows[2][key], 1)
                    for key in ("opens_total", "mb_read_total", "task_s_total")}})
    shutil.rmtree(directory)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| S x T | path | step | tasks | opens / task | read calls / task | row groups / task | MB read / task "
             "| wall s / task | peak MB / task | opens, phase | MB read, phase | task-seconds, phase |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [f"{row['inputs']} x {row['shards']}", row["path"], row["step"], f"{row['tasks']:,}"]
        cells += [str(row.get(key, "")) for key in ("opens_per_task", "reads_per_task", "row_groups_per_task",
                                                   "mb_read_per_task", "wall_s_per_task", "peak_mb_per_task")]
        cells += [f"{row['opens_total']:,}", f"{row['mb_read_total']:,}", f"{row['task_s_total']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["16x128", "64x256", "128x512"],
                        help="input shards x training shards (S x T)")
    parser.add_argument("--block", type=int, default=32, help="training shards per gather task (gather_block)")
    parser.add_argument("--sample", type=int, default=16, help="pack tasks measured per path")
    parser.add_argument("--runs", type=int, default=2, help="runs per scatter file and training shard")
    parser.add_argument("--tokens", type=int, default=256, help="mean tokens per run")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three kinds of task, interleaved")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-shuffle-"))
    rows = []
    try:
        for size in args.sizes:
            inputs, shards = (int(part) for part in size.split("x"))
            rows += bench_size(inputs, shards, args.block, args.sample, args.runs, args.tokens, args.repeats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = markdown(rows)
    print(table)
    path = save_results("shuffle", {"command": "python bench/bench_shuffle.py " + " ".join(sys.argv[1:]),
                                    "settings": vars(args), "rows": rows, "markdown": table})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
