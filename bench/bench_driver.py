"""Driver cost with many input units: planning, receipts and manifests for 1,000 to 100,000 tiny files.

    python bench/bench_driver.py [--sizes 1000 10000 100000] [--run-up-to 10000]

For each size N, N tiny JSONL files (one short document each) are written under a temporary
directory, and a fresh driver process (so its peak memory is its own) measures:

- plan: listing the input files and planning the ingest stage's units (``plan_stages`` +
  ``list_units`` + ``up_to_date``), the work every ``run`` does before it starts a task;
- run (N <= ``--run-up-to``): the ingest stage on local Ray (one task per unit today), which writes
  a receipt per unit and the manifest;
- rerun: the same command again, which finds every unit done and must read receipts and manifest only.

Each phase reports wall seconds and the driver's peak resident memory (``VmHWM``, reset between
phases). Prints a table and writes bench/results/driver.json.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from common import save_results  # noqa: E402

TEXT = ("The committee met on Tuesday to review the budget for the coming year and agreed to publish "
        "the minutes within a week. Document number {n} of the driver benchmark.")


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _write_inputs(directory: Path, n: int) -> None:
    directory.mkdir(parents=True)
    for i in range(n):
        sub = directory / f"{i // 1000:04d}"  # a thousand files per directory, as crawl dumps do
        sub.mkdir(exist_ok=True)
        (sub / f"doc-{i:06d}.jsonl").write_text(json.dumps({"id": f"d{i}", "text": TEXT.format(n=i)}) + "\n")


def _config(inputs: Path, work: Path):
    from pipeline.config import parse_config

    return parse_config({"work_dir": str(work), "ray": {"address": None, "num_cpus": 2},
                         "inputs": [{"name": "tiny", "path": str(inputs), "category": "web"}],
                         "stages": {}, "tokenizer": None, "mixture": None}, source="bench_driver")


def _measure(inputs: str, work: str, run: bool, queue) -> None:
    from pipeline.planning import list_units, plan_stages, up_to_date
    from pipeline.runner import run_pipeline

    config = _config(Path(inputs), Path(work))
    result = {"baseline_mb": round(_peak_mb(), 1)}
    _reset_peak()
    started = time.perf_counter()
    spec = plan_stages(config)[0]
    units = list_units(spec, None, config)
    up_to_date(spec, units)
    result["plan"] = {"seconds": round(time.perf_counter() - started, 2), "peak_mb": round(_peak_mb(), 1),
                      "units": len(units)}
    if run:
        for phase in ("run", "rerun"):
            _reset_peak()
            started = time.perf_counter()
            run_pipeline(config, use_ray=True, log=lambda _: None)
            result[phase] = {"seconds": round(time.perf_counter() - started, 2), "peak_mb": round(_peak_mb(), 1)}
    queue.put(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--run-up-to", type=int, default=10000,
                        help="run the ingest stage only for sizes up to this (one Ray task per unit)")
    args = parser.parse_args(argv)
    results = {}
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        for n in args.sizes:
            inputs, work = Path(tmp) / f"in-{n}", Path(tmp) / f"work-{n}"
            started = time.perf_counter()
            _write_inputs(inputs, n)
            print(f"{n:,} files written in {time.perf_counter() - started:.1f} s", flush=True)
            queue = context.Queue()
            process = context.Process(target=_measure, args=(str(inputs), str(work), n <= args.run_up_to, queue))
            process.start()
            results[str(n)] = queue.get()
            process.join()
            print(f"{n:,}: {json.dumps(results[str(n)])}", flush=True)
    print(f"\n{'files':>8} {'units':>8} {'plan s':>8} {'plan MB':>8} {'run s':>8} {'run MB':>8} {'rerun s':>8} {'rerun MB':>9}")
    for n, r in results.items():
        run, rerun = r.get("run", {}), r.get("rerun", {})
        print(f"{int(n):>8,} {r['plan']['units']:>8,} {r['plan']['seconds']:>8} {r['plan']['peak_mb']:>8} "
              f"{run.get('seconds', '-'):>8} {run.get('peak_mb', '-'):>8} {rerun.get('seconds', '-'):>8} "
              f"{rerun.get('peak_mb', '-'):>9}")
    save_results("driver", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
