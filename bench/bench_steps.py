"""The steps after the stages: driver memory, wall time and core use of the tokenizer and the mixture,
and the peak memory of one packing task at ``sequences_per_shard: 50000``.

    python bench/bench_steps.py [--config configs/dev.yaml] [--work-dir $TMPDIR/bench-steps]
                                [--seed-from work/dev] [--sections steps,pack] [--repeats 1]
                                [--pack-rows 50000] [--out steps]

The run: ``--config``'s inputs and stages up to ``dedup`` (later stages dropped: both steps read
dedup), with configs/full.yaml's ``tokenizer:`` and ``mixture:`` sections (65,536 entries on a
100 MB sample, seq_len 2048, 50,000 sequences per shard; the anneal phase's 50 B-token budget,
which a development corpus cannot fill, is left to the planner: ``tokens: null``). ``--work-dir``
holds the run. Its input stage is adopted from ``--seed-from`` (a work_dir with a finished dedup, of
any code version: its manifest is stamped with this config's hash), else the stages run first
(untimed).

Sections (``--sections``, both by default):

- steps: ``python -m pipeline train-tokenizer CONFIG --force``, then ``python -m pipeline mixture
  CONFIG --force``, each in a fresh spawned process that is the run's driver, ``--repeats`` times.
  That process starts a local Ray first (``ray.num_cpus`` CPUs; timed apart, ``ray_start_s``), which
  the step joins, as in ``python -m pipeline run`` where the stages started it. Measured over the
  step alone: wall time, the driver's peak memory (VmHWM), the largest Ray worker's, and CPU seconds
  of the whole process tree divided by wall time (cores busy);
- pack: one training shard of ``--pack-rows`` rows of seq_len + 1 tokens: the mixture's token files
  of the steps run, repeated with new ids until they hold that many tokens, are dealt to one shard
  (``scatter_shard``, untimed) and packed by ``pack_shard`` in a fresh process with one Arrow
  thread, as a Ray task has: its peak memory, the interpreter's before it (baseline), wall time,
  and the sha256 of the shard written (equal before and after a change that must not alter it).

Results go to bench/results/``--out``.json.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from common import ProcessTreeMonitor, by_role, isolated, save_results  # noqa: E402
from pipeline.local_ray import start_local_ray  # noqa: E402

STAGES_READ = "dedup"  # the input_stage of both steps in configs/full.yaml


# --- the run --------------------------------------------------------------------------------------


def bench_config(config: Path, work_dir: Path) -> dict:
    """``config`` up to dedup, in ``work_dir``, with configs/full.yaml's steps."""
    import yaml

    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    full = yaml.safe_load((REPO / "configs" / "full.yaml").read_text(encoding="utf-8"))
    stages = {}
    for name, settings in raw.get("stages", {}).items():
        stages[name] = settings
        if name == STAGES_READ:
            break
    mixture = copy.deepcopy(full["mixture"])
    for phase in mixture["phases"]:
        phase["tokens"] = None
    return {**raw, "work_dir": str(work_dir / "work"), "stages": stages,
            "tokenizer": full["tokenizer"], "mixture": mixture}


def prepare(args) -> Path:
    """Write the run's config; make its input stage finished: adopted from ``--seed-from`` when that
    holds it, else run (untimed)."""
    import yaml

    from pipeline.config import load_config

    args.work_dir.mkdir(parents=True, exist_ok=True)
    path = args.work_dir / "config.yaml"
    raw = bench_config(args.config, args.work_dir)
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    config = load_config(str(path))
    if _finished(config):
        return path
    work = Path(raw["work_dir"])
    seeded = sorted(args.seed_from.glob(f"[0-9][0-9]_{STAGES_READ}")) if args.seed_from else []
    if seeded:
        shutil.rmtree(work / seeded[0].name, ignore_errors=True)
        shutil.copytree(seeded[0], work / seeded[0].name)
        _adopt(config)
        return path
    print(f"running the stages of {path} (untimed)", flush=True)
    stages_only = args.work_dir / "stages.yaml"
    stages_only.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in ("tokenizer", "mixture")},
                                          sort_keys=False), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pipeline", "run", str(stages_only)], cwd=REPO, check=True)
    return path


def _finished(config) -> bool:
    from pipeline.errors import PipelineError
    from pipeline.steps import finished_stage

    try:
        finished_stage(config, STAGES_READ)
        return True
    except PipelineError:
        return False


def _adopt(config) -> None:
    """Stamp the seeded input stage's manifest with this config's hash: the benchmark measures the
    steps, so stage outputs of another code version (another stage hash) are as good an input, and
    a frozen seed keeps before/after comparisons on the very same documents."""
    import json

    from pipeline.planning import plan_stages

    spec = next(spec for spec in plan_stages(config) if spec.name == STAGES_READ)
    manifest_path = Path(spec.directory) / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config_hash"] = spec.hash
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))


def measure_step(command: str, config: str) -> dict:
    """One step as ``python -m pipeline COMMAND CONFIG --force`` does it, with this process as the
    driver and Ray already up (as in ``python -m pipeline run``, where the stages started it; its
    start is timed apart): wall, and per role (driver, ray_worker, ray_daemon) peak MiB and CPU s."""
    import contextlib
    import io

    import ray

    from pipeline.cli import main

    log = io.StringIO()
    with ProcessTreeMonitor(interval=0.05) as monitor:
        started = time.perf_counter()
        start_local_ray(_load(Path(config)).ray.num_cpus, configure_logging=False, log_to_driver=False)
        ray_start = time.perf_counter() - started
        monitor.mark()
        started = time.perf_counter()
        with contextlib.redirect_stdout(log):
            code = main([command, config, "--force"])
        wall = time.perf_counter() - started
        roles = by_role(monitor.mark())
    ray.shutdown()
    if code != 0:
        raise RuntimeError(f"{command} failed ({code}): {log.getvalue()[-2000:]}")
    cpu = sum(role["cpu_s"] for role in roles.values())
    return {"command": f"python -m pipeline {command} {config} --force", "wall_s": round(wall, 2),
            "ray_start_s": round(ray_start, 2), "driver_peak_mb": roles["driver"]["peak_mb"],
            "worker_peak_mb": roles.get("ray_worker", {}).get("peak_mb", 0.0),
            "workers": roles.get("ray_worker", {}).get("processes", 0),
            "cpu_s": round(cpu, 2), "cores_busy": round(cpu / wall, 2), "roles": roles}


def steps_section(config: Path, repeats: int) -> dict:
    results: dict[str, list] = {"tokenizer": [], "mixture": []}
    for repeat in range(repeats):
        for name, command in (("tokenizer", "train-tokenizer"), ("mixture", "mixture")):
            run = isolated(measure_step, command, str(config), pin=False)
            print(f"{name} #{repeat}: {run['wall_s']} s, driver {run['driver_peak_mb']:.0f} MiB, largest worker "
                  f"{run['worker_peak_mb']:.0f} MiB, {run['cores_busy']} cores busy", flush=True)
            results[name].append(run)
    work_dir = Path(_load(config).work_dir)
    report = _json(work_dir / "tokenizer" / "report.json")
    results["tokenizer_timings"] = report["timings"]
    results["tokenizer_sample"] = {key: report["sample"]["sample"][key] for key in ("docs", "bytes", "lines")}
    results["tokenizer_model_sha256"] = _sha256(work_dir / "tokenizer" / "tokenizer.model")
    manifest = _json(work_dir / "mixture" / "manifest.json")
    results["mixture_phases"] = [{key: phase[key] for key in ("name", "sequences", "tokens")}
                                 for phase in manifest["phases"]]
    results["mixture_shard_sha256"] = {
        path.relative_to(work_dir / "mixture").as_posix(): _sha256(path)
        for path in sorted((work_dir / "mixture" / "shards").rglob("*.parquet"))}
    return results


# --- one large packing task -----------------------------------------------------------------------


def pack_inputs(config: Path, directory: Path, rows: int) -> dict:
    """Scatter files holding one training shard of about ``rows`` rows: the run's token files,
    repeated with new ids (``<id>~<copy>``) until they hold ``rows`` x (seq_len + 1) tokens."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mixture.packing import ScatterTask, scatter_path, scatter_shard

    settings = _load(config).mixture
    tokens_dir = Path(_load(config).work_dir) / "mixture" / "tokens"
    files = sorted(tokens_dir.glob("*.parquet"))
    wanted = rows * (settings["seq_len"] + 1)
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "tokens").mkdir(parents=True)
    phase = {"name": "pack", "shards": 1, "block": 1, "groups": []}
    total, copies, units = 0, 0, []
    while total < wanted:
        for file in files:
            if total >= wanted:
                break
            table = pq.read_table(file)
            table = table.set_column(0, "id", pc.binary_join_element_wise(table["id"], pa.scalar(f"~{copies}"), ""))
            unit = f"{file.stem}-{copies:03d}"
            pq.write_table(table, directory / "tokens" / f"{unit}.parquet", compression="zstd")
            total += pc.sum(table["n_tokens"]).as_py() + pc.sum(pc.equal(
                table["piece"], pc.subtract(table["pieces"], 1)).cast(pa.int64())).as_py()
            for category in pc.unique(table["category"]).to_pylist():
                if category not in [group["category"] for group in phase["groups"]]:
                    phase["groups"].append({"category": category, "lang": None, "segments": [[0, 0, 1 << 30]]})
            units.append(unit)
        copies += 1
    sources = []
    for unit in units:
        scatter_shard(ScatterTask(unit, str(directory / "tokens" / f"{unit}.parquet"), str(directory / "scatter"),
                                  "bench", settings["seed"], [phase]))
        sources.append(scatter_path(str(directory / "scatter"), "pack", unit))
    shutil.rmtree(directory / "tokens")
    return {"sources": sources, "packed_tokens": total, "input_files": len(units), "copies": copies}


def pack_once(config: str, directory: str, sources: list[str]) -> dict:
    """``pack_shard`` of the one shard of ``sources``, timed (run in a fresh process)."""
    from mixture.pack import PackTask, pack_shard

    settings = _load(Path(config)).mixture
    task = PackTask(phase="pack", shard=0, sources=sources, path=f"{directory}/shards/part-00000.parquet",
                    receipt=f"{directory}/shards/_receipts/part-00000.json", step_hash="bench",
                    seq_len=settings["seq_len"], eod_id=2, pad_id=3, token_type="uint16",
                    rows_per_row_group=settings["rows_per_row_group"], megatron=settings["megatron"])
    started = time.perf_counter()
    receipt = pack_shard(task)
    return {"wall_s": round(time.perf_counter() - started, 2), "sequences": receipt["sequences"],
            "tokens": receipt["tokens"], "documents": receipt["documents"],
            "shard_mb": round(os.path.getsize(task.path) / 2**20, 1), "shard_sha256": _sha256(Path(task.path))}


def pack_section(config: Path, directory: Path, rows: int, repeats: int) -> dict:
    inputs = pack_inputs(config, directory, rows)
    print(f"pack: {inputs['packed_tokens']:,} tokens in {inputs['input_files']} scatter files", flush=True)
    runs = []
    for repeat in range(repeats):
        run = isolated(pack_once, str(config), str(directory), inputs["sources"])
        run["task_mb"] = round(run["peak_rss_mb"] - run["baseline_rss_mb"], 1)
        print(f"pack #{repeat}: {run['sequences']:,} rows in {run['wall_s']} s, peak {run['peak_rss_mb']:.0f} MiB "
              f"({run['task_mb']:.0f} MiB over the interpreter's {run['baseline_rss_mb']:.0f})", flush=True)
        runs.append(run)
    return {"rows_wanted": rows, **{k: v for k, v in inputs.items() if k != "sources"}, "runs": runs}


# --- helpers --------------------------------------------------------------------------------------


def _load(config: Path):
    from pipeline.config import load_config

    return load_config(str(config))


def _json(path: Path):
    import json

    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dev.yaml")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-steps")
    parser.add_argument("--seed-from", type=Path, default=REPO / "work" / "dev")
    parser.add_argument("--sections", default="steps,pack")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pack-rows", type=int, default=50_000)
    parser.add_argument("--out", default="steps")
    args = parser.parse_args()
    os.chdir(REPO)  # the configs' relative input paths are relative to the repository root
    config = prepare(args)
    sections = args.sections.split(",")
    results = {"config": str(config), "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if "steps" in sections:
        results["steps"] = steps_section(config, args.repeats)
    if "pack" in sections:
        results["pack"] = pack_section(config, args.work_dir / "pack", args.pack_rows, args.repeats)
    print(f"results in {save_results(args.out, results)}")


if __name__ == "__main__":
    main()
