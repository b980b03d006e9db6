"""Growth curves of the whole pipeline: time, memory and bytes written per stage and step as the
corpus grows from a quarter of corpus-dev to several times its size (issue 20, "Scale").

    python bench/bench_scale.py                          # sizes 0.25 0.5 1 2 (x corpus-dev's 59 MB)
    python bench/bench_scale.py --sizes 0.25 0.5 1 2 4 --repeats 3   # docs/scaling.md's numbers
    python bench/bench_scale.py --no-steps               # the stages (and the report) only
    python bench/bench_scale.py --growth fresh --sizes 1 4 16   # grown by new text, not by copies
    python bench/bench_scale.py --render bench/results/scale.json   # fits and tables again, no runs

On a quiet 2-core machine one pass over 0.25 to 4x takes about 3.5 minutes (4x alone 1.5), after
an untimed run at 0.25x or the smallest size below it (numba's kernels compiled there on a
machine's first run).
``--budget-s`` skips a size whose run, predicted linearly from the run before, would end past it;
``--merge FILE`` counts the runs of an earlier results file (same stages, steps and ``--growth``) as repeats.

Writes bench/results/scale.json (``--out``): every run, every stage, the fitted exponents.

**The corpora** (made by bench/scale_corpus.py). corpus-dev (``--corpus``) is shuffled once
(``--seed``) so that any prefix has its mix of categories and languages. Copy 0 is corpus-dev
itself; what a later copy is, ``--growth`` says:

``copies`` (the default) models a corpus that repeats itself. Size ``f`` is the first ``f`` x
corpus-dev's text bytes of the sequence copy 0, copy 1, copy 2, ...; copy k >= 1 is the same
documents, each with ``--edits`` random edits (an adjacent pair of words swapped, or a word dropped;
characters instead of words in a text of fewer than 50 whitespace-separated words, as Chinese and
Japanese are), drawn from a generator seeded by (seed, k, id), and the id suffixed ``~c<k>``. So
below 1x the corpora are nested samples, above it each extra copy is a known set of near-duplicates
(not exact copies) that dedup should find, and ids stay unique. The duplicate share rises with the
size (7/8 of the input at 8x), dedup's candidate pairs per cluster grow with the square of the
number of copies, and the stages after dedup see the same input at every size.

``fresh`` models a crawl that grows: new text, with a constant share of duplicates. Copy k >= 1 is
corpus-dev's documents with every token replaced by its image under copy k's substitution, the id
suffixed ``~f<k>``. A token is a run of letters, marks and digits, or a single such character in
Chinese, Japanese, Korean and Thai (``lang`` zh, zh-Hant, ja, ...: dedup shingles them by
characters, and a run of their letters can be a whole clause); whitespace and punctuation between
tokens stay as they are, so lines stay lines and sentences keep their ends (the rules look for
them). The substitution is one per copy and language (corpus-dev's ``lang``): the language's
tokens are ranked by their count in corpus-dev (ties in a seeded random order) and cut into bands
of ``--band`` consecutive ranks, and copy k permutes each band (by keys hashed from seed, k and the
token's place in its language's ranking). So each language keeps its token frequency profile (its
most frequent tokens are swapped only among themselves: stopwords stay stopwords) and each
document its length, layout and repetitions (a token maps to one image throughout a copy, so a
repeated line is repeated there too), while a token keeps itself only with probability 1/band:
shingles break, and no fresh copy is a near-duplicate of corpus-dev or of another copy. A share
``--dup-share`` of each fresh copy's documents, picked by a hash of (seed, k, id), are
near-duplicates instead: the document's text in an earlier copy j (the hash picks j uniformly in
0 .. k-1; a near-duplicate there stays one here) with ``--edits`` edits as above, id suffixed
``~f<k>d``. The planted duplicates are then dup-share x (f - 1) / f of a corpus of ``f`` copies,
about the same share at every size. Size ``f`` is copies 0 .. floor(f) - 1 whole and the first
(f - floor(f)) of the next copy's text (in corpus order, as above; a fresh copy's text bytes are
within 0.2% of corpus-dev's). Two processes make the copies, each writing one copy at a time, so
memory does not grow with the size: 140x (8.25 GB of text, 2.47 M documents) took 240 CPU seconds
(6 minutes on two cores shared with other jobs), under 0.85 GB per process. What ``fresh`` does
not model is fluency: its text is word salad with the right token frequencies. On corpus-dev at 3x
the stages nonetheless keep about the same shares of fresh documents as of corpus-dev's (langid
93% and 95%, its label agreeing with corpus-dev's on 98.7% and 98.5%, though less sure of it:
lang_low_score 3% and 1%; rules 88% and 88%, 61% and 64% of the bytes; quality 98% and 97%;
dedup 97% and 97%, and 92% of the planted near-duplicates removed, as of ``copies``' copies at 3x).
Nor does it model text that new documents share with old ones (boilerplate, quotations): a fresh
copy shares none with another, and dedup's exact and paragraph matches across copies are only
the planted ones.

Each corpus is written, untimed, as Parquet files of about ``--file-mb`` MB of text (columns id,
text, source, category, lang; corpus-dev's ``academic`` is ``papers``), zstd, row groups of
``--row-group-rows`` (1,000) rows (``fresh``: each copy in files of its own), read as one input with ``category_field: category``.

**The run.** ``--config`` (configs/dev.yaml)'s stages (``--stages`` to pick some), relative paths
resolved against the repository, its quality model and decontamination index reused for every size
(built once, untimed, before the first run when missing, as ``python -m pipeline run`` would),
shards of ``--shard-mb`` MB at every size (so a larger corpus means more shards, not larger ones),
then, unless ``--no-steps``, the tokenizer (``--vocab-size`` entries on a ``--sample-mb`` MB
sample: a fixed-size sample, so its training cost does not grow with the corpus by design) and the
mixture (one phase over the categories corpus-dev has, seq_len 2048, ``--sequences-per-shard``),
and the report. Each size runs ``pipeline.runner.run_pipeline`` (what ``python -m pipeline run``
runs) in a fresh spawned process on a fresh local Ray with ``--workers`` CPUs, started before the
run and timed apart.

**Measured**, per stage and step: wall seconds; CPU seconds of every process of the run (driver,
Ray workers and daemons); the tasks' own seconds (receipts); documents and text MB in and kept;
peak resident memory (kernel high-water mark, VmHWM, reset between stages by
``common.ProcessTreeMonitor``) of the driver and of the largest worker; bytes written (kept/,
removed/ and dedup's _scratch/ under ``work_dir/NN_stage``; the step's directory). The driver's
log lines are kept with their time, which splits dedup's and the mixture's sub-steps.

**Fitted**, for every stage and measure, over the sizes: the growth exponent k of ``y ~ size^k``
(least squares on log-log): against the corpus size, over all sizes and over sizes >= 1x (where
fixed costs such as loading models weigh less), and against the stage's own input (with
``copies``, after dedup has removed the copies, the later stages' input stops growing with the
corpus; with ``fresh`` it grows with it); for CPU seconds a line ``cpu = fixed + MB / rate``:
``rate`` is the marginal MB of the stage's input per CPU second, the figure a plan for a larger
corpus scales.
Linear work has k = 1 for time; memory bounded per shard has k = 0.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from common import CORPUS, ProcessTreeMonitor, Timer, by_role, compile_bytecode, isolated, save_results  # noqa: E402
# corpus_copy, take_bytes and text_bytes: bench_pipeline takes them from here.
from scale_corpus import build_corpus, corpus_copy, load_corpus, take_bytes, text_bytes  # noqa: E402,F401

DEFAULT_SIZES = [0.25, 0.5, 1.0, 2.0]
# corpus-dev has no web text: the mixture's phase weighs the report's Table 1 shares of the rest.
MIXTURE_WEIGHTS = {"encyclopedia": 4.9, "books": 4.5, "papers": 3.3, "code": 7.6, "others": 4.6}
PATH_KEYS = {"path", "model_path", "index_path"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------- the config

def absolute_paths(node, root: Path):
    """A config section with every relative ``path``/``model_path``/``index_path`` made absolute
    against ``root`` (Ray workers do not run in the driver's directory)."""
    if isinstance(node, dict):
        return {key: (str((root / value).resolve()) if key in PATH_KEYS and isinstance(value, str)
                      and "://" not in value and not os.path.isabs(value) else absolute_paths(value, root))
                for key, value in node.items()}
    if isinstance(node, list):
        return [absolute_paths(item, root) for item in node]
    return node


def stage_settings(config_path: Path, names: list[str] | None) -> dict:
    """The stages of ``config_path`` (all, or ``names`` in the config's order), paths absolute."""
    import yaml

    stages = yaml.safe_load(config_path.read_text(encoding="utf-8")).get("stages") or {}
    unknown = sorted(set(names or []) - set(stages))
    if unknown:
        raise SystemExit(f"--stages: {unknown} not in {config_path} (it has {list(stages)})")
    chosen = {name: settings or {} for name, settings in stages.items() if names is None or name in names}
    return absolute_paths(chosen, REPO)


def step_settings(args) -> dict:
    """The tokenizer and mixture sections: configs/full.yaml's shape, sized for a 2-core machine."""
    return {
        "tokenizer": {"input_stage": "dedup", "vocab_size": args.vocab_size,
                      "sample_bytes": int(args.sample_mb * 1e6), "holdout_fraction": 0.01},
        "mixture": {"input_stage": "dedup", "seq_len": 2048, "sequences_per_shard": args.sequences_per_shard,
                    "phases": [{"name": "pretrain", "weights": MIXTURE_WEIGHTS}]},
    }


def run_config(inputs: Path, work_dir: Path, stages: dict, steps: dict, args) -> dict:
    return {
        "work_dir": str(work_dir),
        "ray": {"num_cpus": args.workers, "max_retries": 0},
        "fuse": False,  # stage by stage: each stage's growth curve needs its own wall time
        "inputs": [{"name": "scale", "path": str(inputs), "format": "parquet",
                    "category_field": "category", "id_field": "id"}],
        "ingest": {"shard_bytes": int(args.shard_mb * 1e6)},
        "stages": stages,
        **steps,
    }


def prepare_assets(config_raw: dict) -> dict:
    """Build the stages' assets (quality model, decontamination index) when missing, untimed, in a
    process of its own: the timed runs then find them and only load them."""
    from pipeline.config import parse_config
    from pipeline.planning import ensure_assets

    config = parse_config(config_raw, source="bench_scale")
    names = list(config.stages)
    lines: list[str] = []
    if names:
        ensure_assets(config, upto=names[-1], log=lines.append)
    return {"log": lines}


# ----------------------------------------------------------------------------------- one run

def measured_run(config_raw: dict, log_path: str) -> dict:
    """The whole pipeline as ``python -m pipeline run`` runs it, in this fresh process, on a local
    Ray started first (timed apart); per stage and step: wall, CPU and task seconds, documents and
    MB, and the peak memory of every process of the run; the driver's log lines with their time."""
    import pipeline.steps as steps_module
    from pipeline import runner
    from pipeline.config import parse_config

    from bench_pipeline import start_local_ray

    config = parse_config(config_raw, source="bench_scale")
    lines: list[tuple[float, str]] = []
    phases: dict[str, dict] = {}
    original_stage, original_step = runner.run_stage, steps_module.run_step
    # Ray's and the tasks' output go to the log file, not the benchmark's console.
    sink = open(log_path, "w")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)

    def measure(name: str, call):
        monitor.mark()  # the phase before (driver work between stages) is not this one's
        offset = time.perf_counter() - started
        with Timer() as timer:
            result = call()
        roles = by_role(monitor.mark())
        phases[name] = {"wall_s": round(timer.wall, 3), "cpu_s": round(sum(r["cpu_s"] for r in roles.values()), 3),
                        "started_s": round(offset, 3), "roles": roles}
        return result

    def measured_stage(spec, *args, **kwargs):
        result = measure(spec.name, lambda: original_stage(spec, *args, **kwargs))
        receipts = result.receipts
        phases[spec.name].update(
            kind="stage", units=len(receipts),
            task_s=round(sum(r["seconds"] for r in receipts), 3),
            docs_in=sum(r["input_rows"] for r in receipts), docs_kept=sum(r["kept_rows"] for r in receipts),
            mb_in=round(sum(r["input_bytes"] for r in receipts) / 1e6, 3),
            mb_kept=round(sum(r["kept_bytes"] for r in receipts) / 1e6, 3),
            removed_by_reason=result.reasons)
        return result

    def measured_step(step, *args, **kwargs):
        result = measure(step.name, lambda: original_step(step, *args, **kwargs))
        phases[step.name]["kind"] = "step"
        return result

    runner.run_stage, steps_module.run_step = measured_stage, measured_step
    with ProcessTreeMonitor() as monitor:
        started = time.perf_counter()
        try:
            with Timer() as ray_start:
                start_local_ray(config.ray.num_cpus)
            monitor.mark()
            runner.run_pipeline(config, use_ray=True,
                                log=lambda line: lines.append((round(time.perf_counter() - started, 2), line)))
        finally:
            runner.run_stage, steps_module.run_step = original_stage, original_step
            import ray

            ray.shutdown()
        total = time.perf_counter() - started
    for phase in phases.values():
        phase["timeline"] = timeline(lines, phase["started_s"], phase["started_s"] + phase["wall_s"])
    return {"total_wall_s": round(total, 3), "ray_start_s": round(ray_start.wall, 3), "phases": phases,
            "hwm_reset": monitor.reset_ok, "log": lines}


def timeline(lines: list[tuple[float, str]], start: float, end: float) -> list[list]:
    """The log lines of one phase, each with the seconds until the next line (or the phase's end):
    dedup logs each of its map/reduce steps as it starts it, the mixture each of its passes, so the
    gaps are their durations."""
    inside = [(at, line) for at, line in lines if start <= at <= end + 0.05]
    ends = [at for at, _ in inside[1:]] + [end]
    return [[round(at - start, 2), round(max(stop - at, 0.0), 2), line.split("\n")[0][:120]]
            for (at, line), stop in zip(inside, ends)]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def written_bytes(work_dir: Path) -> dict[str, dict]:
    """Bytes on disk per stage (kept/, removed/, _scratch/, the rest) and per step directory."""
    found = {}
    for directory in sorted(work_dir.glob("[0-9][0-9]_*")):
        parts = {side: directory_bytes(directory / side) for side in ("kept", "removed", "_scratch")}
        parts["other"] = directory_bytes(directory) - sum(parts.values())
        found[directory.name[3:]] = parts
    for step in ("tokenizer", "mixture"):
        if (work_dir / step).exists():
            found[step] = {"step": directory_bytes(work_dir / step)}
    if (work_dir / "report.html").exists():
        found["report"] = {"step": (work_dir / "report.html").stat().st_size}
    return found


def generator(corpus: dict) -> str:
    """The generator that made a corpus (results from before ``--growth``: copies)."""
    if corpus.get("generator", "copies") == "fresh":
        return f"fresh (dup share {corpus['dup_share']:g}, bands of {corpus['band']})"
    return "copies"


def planted(corpus: dict) -> str:
    """What a corpus holds besides corpus-dev's documents."""
    if corpus.get("generator", "copies") == "fresh":
        return f"{corpus['fresh_docs']:,} fresh documents, {corpus['near_duplicate_copies']:,} near-duplicates"
    return f"{corpus['near_duplicate_copies']:,} perturbed copies"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_size(base: pa.Table, factor: float, stages: dict, steps: dict, cache: dict, args) -> dict:
    """Build one size's corpus, run the pipeline over it, and measure (see the module docstring)."""
    root = args.scratch / f"x{factor:g}"
    shutil.rmtree(root, ignore_errors=True)
    corpus = build_corpus(base, factor, root / "inputs", cache, args)
    log(f"{factor:g}x: {corpus['docs']:,} documents, {corpus['text_mb']} MB in {corpus['files']} files "
        f"({planted(corpus)}; built by {generator(corpus)} in {corpus['build_s']:.0f} s)")
    config = run_config(root / "inputs", root / "work", stages, steps, args)
    load_before = load_average()
    run = isolated(measured_run, config, str(root / "run.log"), pin=False)
    run.update(corpus=corpus, load_before=load_before, load_after=load_average(),
               written=written_bytes(root / "work"))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return run


# ----------------------------------------------------------------------------------- the fits

def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """k of ``y ~ x^k``: least squares on log-log (None with fewer than two positive points)."""
    points = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(points) < 2:
        return None
    mean_x = sum(p[0] for p in points) / len(points)
    mean_y = sum(p[1] for p in points) / len(points)
    spread = sum((p[0] - mean_x) ** 2 for p in points)
    return round(sum((p[0] - mean_x) * (p[1] - mean_y) for p in points) / spread, 3) if spread else None


def fit_line(xs: list[float], ys: list[float]) -> dict | None:
    """``y = fixed + x / rate`` by least squares: the fixed cost, and the marginal rate (x per y)."""
    if len(xs) < 2:
        return None
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if not spread:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread
    return {"fixed": round(mean_y - slope * mean_x, 3), "rate": round(1 / slope, 3) if slope > 0 else None}


def phase_rows(runs: list[dict]) -> dict[str, list[dict]]:
    """Per stage/step, one row per size (the median of each measure over that size's repeats): the
    measures the fits and the tables use."""
    by_size: dict[str, dict[float, list[dict]]] = {}
    for run in runs:
        # a step's input is what the last stage kept
        stage_mb_kept = [p["mb_kept"] for p in run["phases"].values() if p.get("kind") == "stage"]
        steps_input = stage_mb_kept[-1] if stage_mb_kept else None
        for name, phase in run["phases"].items():
            roles = phase["roles"]
            written = run["written"].get(name, {})
            by_size.setdefault(name, {}).setdefault(run["corpus"]["factor"], []).append({
                "factor": run["corpus"]["factor"], "corpus_mb": run["corpus"]["text_mb"],
                "mb_in": phase.get("mb_in", steps_input), "wall_s": phase["wall_s"], "cpu_s": phase["cpu_s"],
                "task_s": phase.get("task_s"),
                "driver_mb": roles.get("driver", {}).get("peak_mb"),
                "worker_mb": max((roles.get(r, {}).get("peak_mb", 0.0) for r in ("ray_worker", "child")), default=0.0),
                "written_mb": round(sum(v for k, v in written.items() if k != "_scratch") / 1e6, 2),
                "scratch_mb": round(written.get("_scratch", 0) / 1e6, 2),
            })
    return {name: [median_row(sizes[factor]) for factor in sorted(sizes)] for name, sizes in by_size.items()}


def median_row(repeats: list[dict]) -> dict:
    """Each numeric measure's median over a size's repeats; ``repeats`` says how many there were."""
    row = dict(repeats[0], repeats=len(repeats))
    for key, value in repeats[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [r[key] for r in repeats if r[key] is not None]
            row[key] = round(statistics.median(values), 3) if values else None
    return row


def growth(runs: list[dict]) -> dict[str, dict]:
    """Per stage/step: exponents of wall, CPU, driver and worker memory and bytes written against
    the corpus size (all sizes; sizes >= 1x) and against the stage's own input (all sizes: after
    dedup removed the ``copies`` generator's copies, the later stages' input stops growing with the
    corpus; ``fresh``'s keeps growing), the CPU line
    against the stage's own input, and the per-core rate (input MB per CPU second) at the largest size."""
    fits = {}
    for name, rows in phase_rows(runs).items():
        xs = [row["corpus_mb"] for row in rows]
        inputs = [row["mb_in"] or 0.0 for row in rows]
        large = [i for i, row in enumerate(rows) if row["factor"] >= 1]
        fit = {}
        for measure in ("wall_s", "cpu_s", "driver_mb", "worker_mb", "written_mb"):
            ys = [row[measure] for row in rows]
            fit[f"k_{measure}"] = fit_exponent(xs, ys)
            fit[f"k_{measure}_from_1x"] = fit_exponent([xs[i] for i in large], [ys[i] for i in large])
            fit[f"k_{measure}_vs_input"] = fit_exponent(inputs, ys)
        fit["cpu_line"] = fit_line(inputs, [row["cpu_s"] for row in rows])
        last = rows[-1]
        fit["mb_per_cpu_s_largest"] = round(last["mb_in"] / last["cpu_s"], 3) if last["mb_in"] and last["cpu_s"] else None
        fit["mb_per_task_s_largest"] = (round(last["mb_in"] / last["task_s"], 3)
                                        if last["mb_in"] and last.get("task_s") else None)
        fits[name] = fit
    return fits


# ----------------------------------------------------------------------------------- the tables

def print_tables(runs: list[dict], fits: dict[str, dict]) -> None:
    rows = phase_rows(runs)
    sizes = [f"{factor:g}x" for factor in sorted({run["corpus"]["factor"] for run in runs})]
    labels = [f"{run['corpus']['factor']:g}x" for run in runs]  # every run, repeats included
    print(f"\ncorpora, made by {' and '.join(dict.fromkeys(generator(r['corpus']) for r in runs))}: " + ", ".join(
        dict.fromkeys(f"{s} = {r['corpus']['text_mb']} MB / {r['corpus']['docs']:,} docs" for s, r in zip(labels, runs))))
    print("Ray start s: " + ", ".join(f"{s} {r['ray_start_s']}" for s, r in zip(labels, runs)))
    print("total wall s: " + ", ".join(f"{s} {r['total_wall_s']}" for s, r in zip(labels, runs)))
    print("load average before/after: " + ", ".join(f"{s} {r['load_before'][0]}/{r['load_after'][0]}"
                                                    for s, r in zip(labels, runs)))
    dedup_lines = (f"dedup at {size}: {run['phases']['dedup']['docs_in']:,} in, removed "
                   f"{run['phases']['dedup']['removed_by_reason']}; the corpus has {planted(run['corpus'])}"
                   for size, run in zip(labels, runs) if "dedup" in run["phases"])
    for line in dict.fromkeys(dedup_lines):  # the same decisions in every repeat: once per size
        print(line)

    def table(title: str, measure: str, exponent: str) -> None:
        print(f"\n{title}")
        print(f"{'':<14}" + "".join(f"{s:>10}" for s in sizes) + f"{'k all':>8}{'k >=1x':>8}{'k input':>8}")
        for name, per_size in rows.items():
            values = "".join(f"{shown(row[measure]):>10}" for row in per_size)
            fit = fits.get(name, {})
            ks = "".join(f"{shown(fit.get(f'k_{exponent}{suffix}')):>8}" for suffix in ("", "_from_1x", "_vs_input"))
            print(f"{name:<14}{values}{ks}")

    print("\ninput MB (a stage's input; a step's: what the last stage kept)")
    for name, per_size in rows.items():
        print(f"{name:<14}" + "".join(f"{shown(row['mb_in']):>10}" for row in per_size))
    table("wall seconds", "wall_s", "wall_s")
    table("CPU seconds (every process of the run)", "cpu_s", "cpu_s")
    table("driver peak MB", "driver_mb", "driver_mb")
    table("largest worker peak MB", "worker_mb", "worker_mb")
    table("MB written (kept + removed + bookkeeping; dedup scratch apart)", "written_mb", "written_mb")
    print(f"\n{'per core':<14}{'MB/CPU-s':>10}{'MB/task-s':>10}{'marginal':>10}{'fixed s':>9}")
    for name, fit in fits.items():
        line = fit["cpu_line"] or {}
        print(f"{name:<14}{shown(fit['mb_per_cpu_s_largest']):>10}{shown(fit['mb_per_task_s_largest']):>10}"
              f"{shown(line.get('rate')):>10}{shown(line.get('fixed')):>9}")


def shown(value) -> str:
    """A table cell: the value, or '-' where there is none (0.0 is a value)."""
    return "-" if value is None else str(value)


# ----------------------------------------------------------------------------------- main

def within_budget(runs: list[dict], factor: float, elapsed: float, budget: float | None) -> bool:
    """Whether a run of ``factor``, predicted linearly from the last run, ends within ``budget``."""
    if not budget or not runs:
        return True
    previous = runs[-1]
    return elapsed + previous["total_wall_s"] * factor / previous["corpus"]["factor"] <= budget


def earlier_runs(path: Path, payload: dict) -> list[dict]:
    """The runs of an earlier results file, as more repeats; only when made with the same stages,
    steps and generator (the other corpus options are the user's to keep equal: they are in
    ``settings``)."""
    import json

    saved = json.loads(path.read_text())
    if saved["stages"] != payload["stages"] or saved["steps"] != payload["steps"]:
        raise SystemExit(f"--merge {path}: made with other stages or steps; not merged")
    if saved.get("generator", "copies") != payload["generator"]:
        raise SystemExit(f"--merge {path}: its corpora were made by the {saved.get('generator', 'copies')} generator; not merged")
    return saved["runs"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=DEFAULT_SIZES,
                        help="corpus sizes as multiples of --corpus's text (default 0.25 0.5 1 2)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "dev.yaml",
                        help="the stages' settings come from this config")
    parser.add_argument("--stages", nargs="+", help="only these of the config's stages (default: all)")
    parser.add_argument("--no-steps", action="store_true", help="leave out the tokenizer and mixture steps (the report, which every run writes, stays)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--sample-mb", type=float, default=10.0, help="the tokenizer's sample (MB of text)")
    parser.add_argument("--sequences-per-shard", type=int, default=2000, help="mixture training shard rows")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--shard-mb", type=float, default=8.0, help="ingest.shard_bytes in MB, at every size")
    parser.add_argument("--file-mb", type=float, default=16.0, help="MB of text per input Parquet file")
    parser.add_argument("--row-group-rows", type=int, default=1000,
                        help="rows per input row group: ingest cuts files only between row groups, so a "
                        "small --shard-mb (many shards, e.g. to run the driver and the all-to-all steps at "
                        "a larger corpus's shard count) needs small row groups")
    parser.add_argument("--growth", choices=["copies", "fresh"], default="copies",
                        help="what each copy past 1x is: a near-duplicate of corpus-dev (copies) or fresh text "
                        "of which --dup-share are near-duplicates (fresh); see the module docstring")
    parser.add_argument("--dup-share", type=float, default=0.1,
                        help="fresh: the share of each copy's documents that are near-duplicates of an earlier copy's")
    parser.add_argument("--band", type=int, default=8,
                        help="fresh: tokens are substituted within bands of this many consecutive frequency ranks")
    parser.add_argument("--edits", type=int, default=3, help="edits per perturbed document")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per size (round-robin); tables show medians")
    parser.add_argument("--merge", type=Path, help="also count the runs of this earlier results file (same "
                        "stages, steps and --growth) as repeats")
    parser.add_argument("--budget-s", type=float,
                        help="skip a size whose run, predicted linearly from the size before, would end after this")
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale", help="corpora and work_dirs")
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus, work_dir and log")
    parser.add_argument("--out", default="scale", help="results as bench/results/OUT.json")
    parser.add_argument("--render", type=Path, help="print the tables and fits of a results file; run nothing")
    args = parser.parse_args(argv)
    if not 0 <= args.dup_share <= 1 or args.band < 1:
        parser.error("--dup-share is a share (0 to 1), --band at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import json

    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        print_tables(saved["runs"], growth(saved["runs"]))
        return 0
    stages = stage_settings(args.config, args.stages)
    steps = {} if args.no_steps else step_settings(args)
    args.scratch.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    log("building the stages' assets (untimed)")
    assets = isolated(prepare_assets, run_config(args.scratch / "none", args.scratch / "none", stages, {}, args),
                      pin=False)
    for line in assets["log"]:
        log(f"  {line}")
    base = load_corpus(args.corpus, args.seed)
    cache: dict = {}  # what the sizes' corpora share (build_corpus)
    runs: list[dict] = []
    payload = {"command": "python bench/bench_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "generator": args.growth, "stages": stages, "steps": steps, "cpus": os.cpu_count(), "runs": runs}
    if args.merge:
        runs.extend(earlier_runs(args.merge, payload))
    # On a machine's first run numba compiles the kernels (about a minute, once): in an untimed run of
    # a small size, not in the first measured one, whose time the fits would take for growth.
    warm_factor = min(0.25, *args.sizes)
    warm = run_size(base, warm_factor, stages, steps, cache, args)
    log(f"warm-up (untimed): {warm_factor:g}x in {warm['total_wall_s']:.0f} s")
    began = time.perf_counter()
    # round-robin over the sizes, so that a change in the machine's load hits every size alike
    for _ in range(args.repeats):
        for factor in sorted(args.sizes):
            if not within_budget(runs, factor, time.perf_counter() - began, args.budget_s):
                log(f"{factor:g}x skipped: its predicted run would end past --budget-s")
                continue
            runs.append(run_size(base, factor, stages, steps, cache, args))
            log(f"{factor:g}x: {runs[-1]['total_wall_s']:.0f} s " + ", ".join(
                f"{name} {phase['wall_s']:.1f}" for name, phase in runs[-1]["phases"].items()))
            payload["growth"] = growth(runs)
            save_results(args.out, payload)  # after every run: a late failure keeps the earlier ones
    print_tables(runs, payload.get("growth", {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
