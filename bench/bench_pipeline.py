"""End to end: the whole pipeline next to the closest datatrove pipeline, same shards, same run.

    python bench/bench_pipeline.py              # the full benchmark (18 minutes on 2 cores)
    python bench/bench_pipeline.py --quick      # smoke run: 2 corpus shards, 1 repeat (2-3 minutes)
    python bench/bench_pipeline.py --render bench/results/pipeline.json   # tables again, no measuring

Writes bench/results/pipeline.json (every measurement) and bench/results/pipeline.md (the tables
docs/performance.md quotes). bench/README.md explains each number; the short version:

Corpus. ``--corpus`` (default ../shared/data/corpus-dev) is regrouped, untimed, into Parquet files per
category (the pipeline takes one category per input), columns id, text, source, category, lang:
``--layout category`` (default) cuts each category into files of about ``--shard-mb`` MB of text;
``--layout mixed`` puts half of each category's text in one large file and the rest in files of
``--small-file-mb``. ``--scale F`` adds perturbed copies of the corpus (bench_scale's: new ids, three
word edits each, so they are near-duplicates) up to F times its text. Both systems read the very same
files; datatrove runs one task per file, ours' ingest cuts and groups them into shards of
``--shard-mb`` (``ingest.shard_bytes``).

Contenders, interleaved within each repeat (medians over ``--repeats``):

- ours: ``pipeline.runner.run_pipeline`` on local Ray (``ray.num_cpus`` = workers), the five stages
  with configs/sample.yaml's settings (languages en zh de fr es ja ko ru at 0.5, code bypassed;
  rules defaults; quality threshold 0.3 for en/zh on web/others; dedup threshold 0.7, keep first)
  and a quality model trained once, untimed, on ../shared/data/quality-dev;
- datatrove 0.10.1: LocalPipelineExecutor with the same number of workers (fork), one task per
  file, Parquet in and out of every stage (as ours), exclusion writers for removed documents:
  langid = LanguageFilter(ft176, the same lid.176 file, same languages, 0.5); rules =
  GopherRepetition -> GopherQuality -> C4Quality -> FineWebQuality (defaults); quality =
  FastTextClassifierFilter(our model file, keep gold >= 0.3); dedup = MinhashDedupSignature ->
  Buckets -> Cluster -> Filter (5-grams, 14 buckets x 8 hashes, its defaults). Its filters are
  given the word tokenizer the rules stage uses (``--datatrove-tokenizer split``: str.split words)
  and its MinHash the dedup stage's shingle tokens; ``--datatrove-tokenizer spacy`` runs its default
  spaCy tokenizer instead (several times slower). datatrove has no ingest: its langid stage reads
  the input files directly. Every later datatrove stage reads what ours' stage before it kept, so
  both systems' stages see the same documents (datatrove's English-only rules would otherwise drop
  nearly all Chinese text and leave its quality and dedup stages little to do); the first repeat
  also chains datatrove on its own outputs (``datatrove_own_chain``).

Before the first repeat both systems run once, untimed, on every k-th document (about 3 MB of
text; ``warm_up``): on a machine's first run numba compiles ours' kernels there (about a minute,
once per machine; the time is reported) instead of in ours' first timed run.

Every process that runs stage code has one Arrow thread, as Ray gives a ``num_cpus=1`` worker
(OMP_NUM_THREADS=1), so "per core" means the same for all contenders.

Sections (``--sections``, all by default):

- main: both systems with 1 and 2 workers on the whole corpus: per stage and end to end wall,
  docs/s and MB/s per core (wall x workers) and per CPU second (every process of the run), peak
  memory per process (driver, Ray workers, Ray daemons / datatrove pool workers), survivors; ours
  at 1/4 and 1/2 of the corpus too (growth: 1x, 2x, 4x);
- limits: per stage, on the stage's own input (from ours' 1-worker run): reading and writing the
  same Parquet with no work, and the bare library call (fastText predict for langid and quality,
  MinHash of precomputed shingles for dedup, str.split of every document for rules), one process
  pinned to one core;
- overhead: Ray's cost: ours on Ray with 1 worker against ``--no-ray`` (in process) on one shard of
  at least ``--large-shard-mb`` MB (corpus documents, repeated with new ids when the corpus is
  smaller), and at the normal shard size the share of stage wall time not inside tasks;
- profile: ours' slowest stage (or ``--profile-stage``), in process, on the whole corpus, under
  cProfile and, when py-spy is available (``--py-spy``, default: on PATH), sampled by py-spy.

Peak memory is each process's kernel high-water mark (VmHWM), read for every process under the
run by ``common.ProcessTreeMonitor`` and reset between stages, so a stage's peak is its own.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from common import (  # noqa: E402
    CATEGORY_NAMES, CORPUS, RESULTS, SHARED, ProcessTreeMonitor, Timer, by_role, compile_bytecode, corpus_shards,
    isolated, parquet_texts, save_results, single_core, text_megabytes,
)

STAGES = ["ingest", "langid", "rules", "quality", "dedup"]
LANGUAGES = ["en", "zh", "de", "fr", "es", "ja", "ko", "ru"]
MIN_SCORE = 0.5
QUALITY_THRESHOLD = 0.3
DEDUP_THRESHOLD = 0.7
DATATROVE_MINHASH = {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8}
WORK = RESULTS / "pipeline"
ASSETS = WORK / "assets"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------- the corpus

def corpus_table(shards: list[Path], scale: float, seed: int = 1, edits: int = 3) -> pa.Table:
    """The corpus shards as one table; with ``scale`` above 1, followed by perturbed copies of it
    (``bench_scale.corpus_copy``: new ids, ``edits`` word edits each, so dedup sees near-duplicates)
    up to ``scale`` times its text."""
    from bench_scale import corpus_copy, take_bytes, text_bytes

    table = pa.concat_tables([pq.read_table(shard, columns=["id", "text", "source", "category", "lang"])
                              for shard in shards]).combine_chunks()
    if scale <= 1:
        return table
    base_mb, parts = float(text_bytes(table).sum()) / 1e6, [table]
    left = (scale - 1) * base_mb
    for copy in range(1, math.ceil(scale)):
        part = take_bytes(corpus_copy(table, copy, seed, edits), left)
        parts.append(part)
        left -= float(text_bytes(part).sum()) / 1e6
    return pa.concat_tables(parts).combine_chunks()


def _file_bounds(cumulative, parts: int) -> list[int]:
    """Row bounds cutting rows with these cumulative sizes into ``parts`` files of about equal text."""
    total = cumulative[-1]
    return [0, *[int((cumulative < total * (i + 1) / parts).sum()) + 1 for i in range(parts - 1)], len(cumulative)]


def prepare_inputs(table: pa.Table, dest: Path, shard_mb: float, layout: str = "category",
                   small_file_mb: float = 0.25) -> dict:
    """The corpus regrouped per category (the pipeline takes one category per input). ``layout``
    ``category``: files of about ``shard_mb`` MB of text; ``mixed``: half of each category's text
    in one large file, the rest in files of about ``small_file_mb`` MB (the layout a downloaded
    dataset often has, and the one that caps a one-task-per-file reader's parallelism)."""
    categories = pc.cast(table["category"], pa.string()).to_pylist()
    table = table.set_column(table.schema.get_field_index("category"), "category",
                             pa.array([CATEGORY_NAMES.get(c, c) for c in categories], pa.string()))
    sizes = pc.binary_length(table["text"].cast(pa.binary())).to_numpy()
    files: dict[str, list[str]] = {}
    largest, smallest = 0.0, float("inf")
    for category in sorted(set(table["category"].to_pylist())):
        rows = pc.indices_nonzero(pc.equal(table["category"], category)).to_numpy()
        cumulative = sizes[rows].cumsum() / 1e6
        total = float(cumulative[-1])
        if layout == "mixed":
            half = int((cumulative < total / 2).sum()) + 1
            small = max(1, round((total - float(cumulative[half - 1])) / small_file_mb)) if half < len(rows) else 0
            rest = _file_bounds(cumulative[half:] - float(cumulative[half - 1]), small) if small else [0]
            bounds = [0, *(half + b for b in rest)]
        else:
            bounds = _file_bounds(cumulative, max(1, round(total / shard_mb)))
        for part, (low, high) in enumerate(zip(bounds, bounds[1:])):
            if high <= low:
                continue
            path = dest / category / f"part-{part:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.take(rows[low:high]), path, compression="zstd", row_group_size=2000)
            files.setdefault(category, []).append(str(path))
            megabytes = float(sizes[rows[low:high]].sum()) / 1e6
            largest, smallest = max(largest, megabytes), min(smallest, megabytes)
    return {"docs": table.num_rows, "text_mb": round(float(sizes.sum()) / 1e6, 2), "layout": layout,
            "files": sum(len(v) for v in files.values()), "largest_shard_mb": round(largest, 2),
            "smallest_shard_mb": round(smallest, 3), "by_category": files}


def prepare_large_shard(inputs: dict, dest: Path, megabytes: float) -> dict:
    """One file of at least ``megabytes`` MB of text, category ``web`` (every rule applies): the
    corpus's documents, then as many of them again, with new ids, as it takes to get there."""
    table = pa.concat_tables([pq.read_table(p) for files in inputs["by_category"].values() for p in files])
    sizes = pc.binary_length(table["text"].cast(pa.binary())).to_numpy() / 1e6
    parts, size, copies = [], 0.0, 0
    while size < megabytes:
        need = int((sizes.cumsum() < megabytes - size).sum()) + 1
        part = table.slice(0, min(need, table.num_rows))
        if copies:
            part = part.set_column(0, "id", pc.binary_join_element_wise(part["id"], pa.scalar(f"~{copies}"), ""))
        parts.append(part)
        size += float(sizes[:part.num_rows].sum())
        copies += 1
    large = pa.concat_tables(parts)
    large = large.set_column(large.schema.get_field_index("category"), "category",
                             pa.array(["web"] * large.num_rows, pa.string()))
    path = dest / "web" / "part-00000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(large, path, compression="zstd", row_group_size=2000)
    return {"docs": large.num_rows, "text_mb": round(text_megabytes(large), 2), "files": 1,
            "by_category": {"web": [str(path)]}, "copies": copies}


# ----------------------------------------------------------------------------------- configs

def quality_settings() -> dict:
    return {
        "model_path": str(ASSETS / "quality.bin"),
        "thresholds": {"*/en": QUALITY_THRESHOLD, "*/zh": QUALITY_THRESHOLD, "encyclopedia": None,
                       "books": None, "papers": None, "code": None},
        # configs/dev.yaml's training data: quality-dev gold against the shared web text
        "train": {"sources": [{"path": str(SHARED / "quality-dev" / "gold.jsonl.gz"), "label": "gold"},
                              {"path": str(SHARED / "web-dev.jsonl.gz"), "label": "web"},
                              *({"path": str(SHARED / "web-raw" / name), "label": "web", "source_field": "stage"}
                                for name in ("raw_web_unfiltered.jsonl.gz", "web_text_processed.jsonl.gz"))]},
    }


def pipeline_config(inputs: dict, work_dir: Path, workers: int, shard_bytes: int = 64_000_000) -> dict:
    return {
        "work_dir": str(work_dir),
        "ray": {"num_cpus": workers, "max_retries": 0},
        # stage by stage: the per-stage figures compare each stage with its datatrove counterpart
        # (fused stages share one wall time); fusion's own effect: docs/performance.md, "Choices the code rests on"
        "fuse": False,
        "inputs": [{"name": category, "path": str(Path(files[0]).parent), "category": category,
                    "format": "parquet", "id_field": "id"} for category, files in inputs["by_category"].items()],
        "ingest": {"shard_bytes": shard_bytes},
        "stages": {
            "langid": {"languages": LANGUAGES, "min_score": MIN_SCORE, "bypass_categories": ["code"]},
            "rules": {},
            "quality": quality_settings(),
            "dedup": {"threshold": DEDUP_THRESHOLD, "keep": "first"},
        },
    }


def ensure_quality_model() -> None:
    """Train the quality model once (untimed) when it is missing or was trained with other settings."""
    from stages.quality import Quality, QualityConfig
    from stages.quality_model import read_report

    config = QualityConfig(**quality_settings())
    report = read_report(config.model_path) if Path(config.model_path).exists() else None
    if report and report.get("text") != config.text.model_dump(mode="json"):
        Path(config.model_path).unlink()
    Quality.ensure_assets(config, log)


# ----------------------------------------------------------------------------------- ours

def one_arrow_thread() -> None:
    """One Arrow compute thread in every process that runs stage code, as in Ray's workers: Ray
    sets OMP_NUM_THREADS=1 in a num_cpus=1 worker, and Arrow sizes its thread pool from it. Without
    this an in-process or datatrove run would decode and encode Parquet on both cores."""
    os.environ["OMP_NUM_THREADS"] = "1"
    pa.set_cpu_count(1)


def start_local_ray(cpus: int) -> None:
    """Ray as the runner starts it (``ray.address: null``), but always a new local instance: with
    no address ray.init joins a cluster a ``ray start`` left on the machine, if any, and then
    refuses ``num_cpus``. The runner's executor finds Ray initialised and uses it as is."""
    from pipeline.local_ray import start_local_ray as start

    start(cpus, configure_logging=False, log_to_driver=True)


def ours_run(config_raw: dict, use_ray: bool) -> dict:
    """The whole pipeline as ``python -m pipeline run`` runs it, in this (fresh) process; per stage:
    wall, task seconds, CPU seconds and peak memory of every process of the run."""
    import contextlib

    from pipeline import runner
    from pipeline.config import parse_config

    config = parse_config(config_raw)
    if not use_ray:
        one_arrow_thread()
    stages: dict[str, dict] = {}
    original = runner.run_stage
    lines: list[str] = []
    with ProcessTreeMonitor() as monitor:
        def measured_stage(spec, *args, **kwargs):
            stages.setdefault("_before", {"startup_s": time.perf_counter() - started})
            monitor.mark()
            with Timer() as timer:
                result = original(spec, *args, **kwargs)
            phase = by_role(monitor.mark())
            receipts = result.receipts
            stages[spec.name] = {
                "wall_s": timer.wall,
                "task_s": sum(r["seconds"] for r in receipts),
                "units": len(receipts),
                "docs_in": sum(r["input_rows"] for r in receipts),
                "mb_in": sum(r["input_bytes"] for r in receipts) / 1e6,
                "docs_out": sum(r["kept_rows"] for r in receipts),
                "mb_out": sum(r["kept_bytes"] for r in receipts) / 1e6,
                "cpu_s": sum(role["cpu_s"] for role in phase.values()),
                "processes": phase,
            }
            return result

        runner.run_stage = measured_stage
        started = time.perf_counter()
        try:
            with open(Path(config.work_dir).parent / f"{Path(config.work_dir).name}.log", "w") as sink, \
                    contextlib.redirect_stderr(sink):
                if use_ray:
                    start_local_ray(config.ray.num_cpus)
                runner.run_pipeline(config, use_ray=use_ray, log=lines.append)
        finally:
            runner.run_stage = original
            if use_ray:
                import ray

                ray.shutdown()
        total = time.perf_counter() - started
    before = stages.pop("_before")
    stage_wall = sum(s["wall_s"] for s in stages.values())
    # Ray's start-up counts, as datatrove's executor start-up counts inside its stage times.
    return {"total_wall_s": total, "startup_s": before["startup_s"], "stage_wall_s": stage_wall,
            "end_to_end_wall_s": stage_wall + before["startup_s"], "stages": stages,
            "hwm_reset": monitor.reset_ok, "log": lines}


def ours_dirs(work_dir: Path) -> dict[str, list[str]]:
    """Each stage's input files in a finished run of ours (ingest: none; see ``stage_inputs``)."""
    found = {}
    for index, name in enumerate(STAGES[:-1], start=1):
        found[STAGES[index]] = sorted(str(p) for p in (work_dir / f"{index:02d}_{name}" / "kept").glob("*.parquet"))
    return found


# ----------------------------------------------------------------------------------- datatrove

def datatrove_run(jobs: list[tuple[str, str, str]], out: str, workers: int, tokenizer: str, model: str) -> dict:
    """datatrove's closest pipeline in this (fresh) process: for each job (stage, input folder, name)
    one LocalPipelineExecutor per pipeline (four for MinHash), Parquet in and out, one task per input
    file; per job: wall, CPU seconds and peak memory of every process."""
    os.environ["HF_ASSETS_CACHE"] = str(ASSETS / "hf-assets")  # datatrove copies model files here
    one_arrow_thread()  # its forked pool workers keep the setting
    from common import accept_fasttext_numpy2, quiet_datatrove

    accept_fasttext_numpy2()
    quiet_datatrove()  # its import-time sink; the per-task sinks it adds later go to the log file
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.filters import (
        C4QualityFilter, FastTextClassifierFilter, FineWebQualityFilter, GopherQualityFilter,
        GopherRepetitionFilter, LanguageFilter,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove_tokenizers import ScriptTokenizer, SplitTokenizer

    from stages.langid import resolve_model_path

    out_dir = Path(out)
    words = {"language": SplitTokenizer("en")} if tokenizer == "split" else {}
    minhash = MinhashConfig(**DATATROVE_MINHASH)

    def reader(folder: str) -> ParquetReader:
        """The input files (one folder per category), or a stage's output: from ours' shards only id
        and text (their extra columns would be datatrove metadata; it writes, and may fail to merge,
        what it does not need)."""
        nested = any(Path(folder).glob("*/*.parquet")) and not any(Path(folder).glob("*.parquet"))
        return ParquetReader(folder, glob_pattern="*/*.parquet" if nested else "*.parquet",
                             read_metadata=nested or folder.startswith(out))

    def pipelines(stage: str, source: str, name: str) -> list[tuple[list, int | None]]:
        """The pipelines of one stage and their task counts (None: one per input file)."""
        def writer(*parts: str, schema=None) -> ParquetWriter:
            return ParquetWriter(str(out_dir.joinpath(name, *parts)), compression="zstd", schema=schema)

        if stage == "langid":
            step = LanguageFilter(languages=LANGUAGES, language_threshold=MIN_SCORE,
                                  exclusion_writer=writer("removed"))
            step.model.MODEL_URL = resolve_model_path(None)  # the same lid.176 file the stage reads
            return [([reader(source), step, writer("kept")], None)]
        if stage == "rules":
            return [([reader(source),
                      GopherRepetitionFilter(exclusion_writer=writer("removed", "gopher_repetition"), **words),
                      GopherQualityFilter(exclusion_writer=writer("removed", "gopher_quality"), **words),
                      C4QualityFilter(exclusion_writer=writer("removed", "c4"), **words),
                      FineWebQualityFilter(exclusion_writer=writer("removed", "fineweb"), **words),
                      writer("kept")], None)]
        if stage == "quality":
            # The filter adds its labels to the metadata most probable first, and the writer takes a
            # batch's schema from its first document: given no schema, it fails when a batch starts
            # with a document whose top label differs from the file's first (short documents do).
            labelled = pa.schema([("text", pa.string()), ("id", pa.string()), ("metadata", pa.struct([
                ("file_path", pa.string()), ("__label__gold", pa.float64()), ("__label__junk", pa.float64())]))])
            return [([reader(source),
                      FastTextClassifierFilter(model_url=model, keep_labels=("gold", QUALITY_THRESHOLD),
                                               exclusion_writer=writer("removed", schema=labelled)),
                      writer("kept", schema=labelled)], None)]
        sig, buckets, ids = (str(out_dir / name / part) for part in ("signatures", "buckets", "remove_ids"))
        return [
            ([reader(source), MinhashDedupSignature(sig, config=minhash, language=ScriptTokenizer())], None),
            ([MinhashDedupBuckets(sig, buckets, config=minhash)], minhash.num_buckets),
            ([MinhashDedupCluster(buckets, ids, config=minhash)], 1),
            ([reader(source), MinhashDedupFilter(ids, exclusion_writer=writer("removed")), writer("kept")], None),
        ]

    results = {}
    with open(out_dir / "datatrove.log", "a") as sink:
        # Its loguru sinks hold on to the streams they were given: send the descriptors themselves.
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    with ProcessTreeMonitor() as monitor:
        for stage, source, name in jobs:
            files = len(list(Path(source).glob("*.parquet"))) or len(list(Path(source).glob("*/*.parquet")))
            monitor.mark()
            steps = []
            with Timer() as total:
                for index, (pipeline, count) in enumerate(pipelines(stage, source, name)):
                    count = count or files
                    with Timer() as timer:
                        LocalPipelineExecutor(pipeline=pipeline, tasks=count, workers=min(workers, count),
                                              logging_dir=str(out_dir / "logs" / f"{name}-{index}"),
                                              skip_completed=False, start_method="fork").run()
                    steps.append(round(timer.wall, 3))
            phase = by_role(monitor.mark())
            results[name] = {"stage": stage, "source": source, "wall_s": total.wall,
                             "cpu_s": sum(role["cpu_s"] for role in phase.values()),
                             "processes": phase, "steps_wall_s": steps}
    return {"stages": results, "hwm_reset": monitor.reset_ok}


def parquet_files(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted(str(p) for p in (list(folder.glob("*.parquet")) or list(folder.glob("*/*.parquet"))))


# ----------------------------------------------------------------------------------- limits

def limits_run(stage_inputs: dict[str, list[str]], model: str, scratch: str) -> dict:
    """Per stage, on its input files, in this process pinned to one core: reading and writing the
    same Parquet with no work, and the bare library call the stage is built around."""
    import fasttext
    import numpy as np

    from stages.dedup import minhash
    from stages.dedup.config import DedupConfig
    from stages.fasttext_predict import Classifier
    from stages.langid import LangIDConfig, prediction_view, resolve_model_path
    from stages.quality_model import TextConfig, prepare_texts

    single_core()
    results = {}
    for stage, files in stage_inputs.items():
        with Timer() as io_timer:
            for index, path in enumerate(files):
                pq.write_table(pq.read_table(path), Path(scratch) / f"{index}.parquet", compression="zstd",
                               row_group_size=2000)
        docs, megabytes = parquet_texts(files)
        results[stage] = {"docs": docs, "mb": megabytes, "read_write_s": io_timer.wall}
        for path in Path(scratch).glob("*.parquet"):
            path.unlink()
    tables = {stage: pa.concat_tables([pq.read_table(p) for p in files]) if files else None
              for stage, files in stage_inputs.items()}

    if tables.get("langid") is not None:
        config = LangIDConfig()
        table = tables["langid"]
        texts = [t for t, c in zip(table["text"].to_pylist(), table["category"].to_pylist()) if c != "code"]
        model_lid = fasttext.load_model(resolve_model_path(None))
        with Timer() as views_timer:
            views = [prediction_view(t, config.max_chars, config.windows) for t in texts]
        with Timer() as predict:
            model_lid.predict(views, k=1, on_unicode_error="replace")
        compiled = Classifier(resolve_model_path(None))
        compiled.top(views[:10])  # numba's machine code loaded (or compiled) outside the timing
        with Timer() as predict_compiled:
            compiled.top(views)
        full = [t.replace("\n", " ") for t in texts]
        with Timer() as predict_full:
            model_lid.predict(full, k=1, on_unicode_error="replace")
        results["langid"].update(bare="fastText lid.176 predict (k=1) of the stage's views of the classified documents",
                                 bare_s=predict.wall, bare_docs=len(texts), view_s=views_timer.wall,
                                 bare_full_text_s=predict_full.wall, compiled_s=predict_compiled.wall)
    if tables.get("rules") is not None:
        texts = tables["rules"]["text"].to_pylist()
        with Timer() as split_timer:
            for text in texts:
                text.split()
                text.splitlines()
        results["rules"].update(bare="str.split() and str.splitlines() of every document", bare_s=split_timer.wall,
                                bare_docs=len(texts))
    if tables.get("quality") is not None:
        table = tables["quality"]
        text_config = TextConfig()
        model_q = fasttext.load_model(model)
        with Timer() as prepare:
            langs = table["lang"].to_pylist() if "lang" in table.column_names else None
            lines = prepare_texts(table["text"], text_config, langs)
        with Timer() as predict:
            model_q.predict(lines, k=1)
        compiled = Classifier(model)
        compiled.top(lines[:10])
        with Timer() as predict_compiled:
            compiled.top(lines)
        results["quality"].update(bare="fastText predict (k=1) of the quality model on the prepared lines",
                                  bare_s=predict.wall, bare_docs=len(lines), prepare_s=prepare.wall,
                                  compiled_s=predict_compiled.wall)
    if tables.get("dedup") is not None:
        table = tables["dedup"]
        config = DedupConfig()
        texts = table["text"].combine_chunks()
        langs = table["lang"].combine_chunks() if "lang" in table.column_names else None
        hasher = minhash.MinHasher(config.num_perm, config.seed)
        with Timer() as shingling:
            by_chars = minhash.char_shingled(texts, langs, config.char_ngram_langs)
            simplified = minhash.simplify(texts)
            groups = []
            for chars, n in ((False, config.word_ngram), (True, config.char_ngram)):
                rows = np.flatnonzero(by_chars == chars)
                token_hashes, counts = minhash.tokens(simplified.take(pa.array(rows, pa.int64())), chars)
                groups.append(minhash.shingles(token_hashes, counts, n))
        with Timer() as signing:
            for values, per_doc in groups:
                hasher.signatures(values, per_doc)
        results["dedup"].update(bare=f"MinHash ({config.num_perm} permutations) of the precomputed shingles",
                                bare_s=signing.wall, bare_docs=table.num_rows, shingle_s=shingling.wall,
                                shingles=int(sum(len(v) for v, _ in groups)))
    return results


# ----------------------------------------------------------------------------------- profile

def run_upstream(config_raw: dict, stage: str) -> dict:
    """Run ours in process up to the stage before ``stage``."""
    from pipeline import runner
    from pipeline.config import parse_config

    import contextlib

    config = parse_config(config_raw)
    names = ["ingest", *config.stages]
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # progress bars
        for name in names[:names.index(stage)]:
            runner.run_pipeline(config, use_ray=False, only=name, log=lambda _: None)
    return {}


def run_one_stage(config_raw: dict, stage: str, profiler: cProfile.Profile | None = None) -> float:
    """One stage of ours in this process (``--no-ray``), its upstream already finished; wall seconds."""
    import contextlib

    from pipeline import runner
    from pipeline.config import parse_config
    from pipeline.executor import InProcessExecutor

    config = parse_config(config_raw)
    names = ["ingest", *config.stages]
    specs = runner.plan_stages(config)
    spec = specs[names.index(stage)]
    upstream = specs[spec.index - 2] if spec.index > 1 else None
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), Timer() as timer:
        if profiler:
            profiler.enable()
        runner.run_stage(spec, upstream, config, InProcessExecutor(), force=True, log=lambda _: None)
        if profiler:
            profiler.disable()
    return timer.wall


def profile_run(config_raw: dict, stage: str, out: str) -> dict:
    """cProfile of one stage of ours, in process, after ``run_upstream``."""
    profiler = cProfile.Profile()
    wall = run_one_stage(config_raw, stage, profiler)
    profiler.dump_stats(out)
    report = {"stage": stage, "wall_s": wall}
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in pstats.Stats(profiler).stats.items():
        rows.append({"function": f"{Path(filename).name}:{line}({function})", "calls": calls,
                     "tottime": round(tottime, 3), "cumtime": round(cumtime, 3)})
    report["by_tottime"] = sorted(rows, key=lambda r: -r["tottime"])[:25]
    report["by_cumtime"] = sorted(rows, key=lambda r: -r["cumtime"])[:40]
    return report


def py_spy_profile(py_spy: str, config_raw: dict, stage: str, out: Path) -> dict:
    """The same stage under py-spy (sampling, 100 Hz: no per-call overhead, unlike cProfile):
    samples per function, as the innermost Python frame (self) and anywhere on the stack (total),
    counting only samples inside ``run_stage`` (not the child's start-up and imports)."""
    config_path = out.with_suffix(".config.json")
    config_path.write_text(json.dumps(config_raw))
    raw = out.with_suffix(".txt")
    command = [py_spy, "record", "--format", "raw", "--rate", "100", "--output", str(raw), "--",
               sys.executable, str(Path(__file__).resolve()), "--profile-child", str(config_path), stage]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode or not raw.exists():
        return {"error": (done.stderr or done.stdout)[-2000:]}
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        if "runner.py:run_stage" not in frames:
            continue
        frames = frames[frames.index("runner.py:run_stage"):]
        count = int(count)
        samples += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count

    def top(counter: dict[str, int]) -> list[dict]:
        return [{"function": name, "samples": n, "share": round(n / samples, 3)}
                for name, n in sorted(counter.items(), key=lambda kv: -kv[1])[:25]]

    return {"samples": samples, "by_self": top(own), "by_total": top(total), "raw": str(raw)}


def _frame(frame: str) -> str:
    """py-spy's 'function (path/file.py:line)' as 'file.py:function'."""
    name, _, where = frame.partition(" (")
    return f"{Path(where.rstrip(')').rsplit(':', 1)[0]).name}:{name}" if where else name


# ----------------------------------------------------------------------------------- the sections

def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": model, "ram_gb": round(memory / 1024 ** 2, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("ray", "pyarrow", "datatrove", "fasttext-numpy2", "numpy", "spacy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def run_ours(inputs: dict, tmp: Path, name: str, workers: int, use_ray: bool = True, shard_bytes: int = 64_000_000,
             keep: bool = False) -> dict:
    work = tmp / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config = pipeline_config(inputs, work / "run", workers, shard_bytes)
    result = isolated(ours_run, config, use_ray, pin=False)
    result["work_dir"] = str(work / "run")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    log(f"  {name}: {result['stage_wall_s']:.1f} s in stages (+{result['total_wall_s'] - result['stage_wall_s']:.1f} s "
        f"start/stop); " + ", ".join(f"{s} {v['wall_s']:.1f}" for s, v in result["stages"].items()))
    return result


def run_datatrove(inputs: dict, tmp: Path, name: str, workers: int, tokenizer: str, ours_work: str | None,
                  own_chain: bool = False, stages: list[str] | None = None, keep: bool = False) -> dict:
    """datatrove on the same documents as ours, stage by stage: langid reads the input files, and each
    later stage reads what ours' stage before it kept (``ours_work``), so both systems' stages see the
    very same documents. ``own_chain``: also the rules, quality and dedup stages chained on datatrove's
    own outputs (``<stage>_own``), the pipeline as datatrove alone would run it."""
    stages = stages or STAGES[1:]
    out = tmp / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    input_dir = str(Path(inputs["by_category"][next(iter(inputs["by_category"]))][0]).parent.parent)
    jobs = []
    for index, stage in enumerate(stages):
        if stage == "langid":
            source = input_dir
        else:
            upstream = STAGES.index(stage)  # 1-based directory number of the stage before it
            source = str(Path(ours_work) / f"{upstream:02d}_{STAGES[upstream - 1]}" / "kept")
        jobs.append((stage, source, stage))
    if own_chain:
        previous = "langid"
        for stage in ("rules", "quality", "dedup"):
            jobs.append((stage, str(out / previous / "kept"), f"{stage}_own"))
            previous = f"{stage}_own"
    result = isolated(datatrove_run, jobs, str(out), workers, tokenizer, str(ASSETS / "quality.bin"), pin=False)
    for job_name, row in result["stages"].items():
        docs_in, mb_in = parquet_texts(parquet_files(row["source"]))
        docs_out, mb_out = parquet_texts(parquet_files(out / job_name / "kept"))
        row.update(docs_in=docs_in, mb_in=mb_in, docs_out=docs_out, mb_out=mb_out)
    result["stage_wall_s"] = sum(s["wall_s"] for n, s in result["stages"].items() if not n.endswith("_own"))
    result["end_to_end_wall_s"] = result["stage_wall_s"]  # each stage's wall includes its executor's start
    if own_chain:
        result["own_chain_wall_s"] = result["stages"]["langid"]["wall_s"] + sum(
            s["wall_s"] for n, s in result["stages"].items() if n.endswith("_own"))
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    log(f"  {name}: {result['stage_wall_s']:.1f} s; " + ", ".join(f"{s} {v['wall_s']:.1f}" for s, v in result["stages"].items()))
    return result


def stage_inputs(inputs: dict, work_dir: Path) -> dict[str, list[str]]:
    found = {"ingest": [f for files in inputs["by_category"].values() for f in files]}
    found.update(ours_dirs(work_dir))
    return found


WARMUP_MB = 3.0  # text of the untimed run before the repeats


def warm_up(table: pa.Table, tmp: Path, shard_mb: float, tokenizer: str) -> dict:
    """Both systems once, untimed, on every k-th document of the corpus (about ``WARMUP_MB`` of text),
    before any repeat. On a machine's first run numba compiles ours' kernels into ``__pycache__`` (a
    minute or so; later runs load them in a fraction of a second), which would otherwise land in the
    first repeat of ours alone, and with ``--repeats 1`` in every figure; both systems' libraries
    and files come into the page cache. Returns the seconds each took, reported beside the results."""
    step = max(1, round(text_megabytes(table) / WARMUP_MB))
    inputs = prepare_inputs(table.take(list(range(0, table.num_rows, step))), tmp / "warmup-inputs", shard_mb)
    log(f"warm-up (untimed): {inputs['docs']:,} documents, {inputs['text_mb']} MB, ours in process, then datatrove")
    started = time.perf_counter()
    ours = run_ours(inputs, tmp, "warmup_ours", 1, use_ray=False, keep=True)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    run_datatrove(inputs, tmp, "warmup_datatrove", 1, tokenizer, ours["work_dir"])
    datatrove_s = time.perf_counter() - started
    for name in ("warmup_ours", "warmup_datatrove", "warmup-inputs"):
        shutil.rmtree(tmp / name, ignore_errors=True)
    return {"docs": inputs["docs"], "text_mb": inputs["text_mb"], "ours_s": round(ours_s, 1),
            "datatrove_s": round(datatrove_s, 1)}


def main_section(args, inputs_by_size: dict[str, dict], tmp: Path, sections: set[str]) -> dict:
    """Interleaved repeats: ours then datatrove (on the same documents) with 1 and 2 workers, ours at
    the smaller sizes, the physical limits on ours' stage inputs."""
    full = inputs_by_size[max(inputs_by_size, key=lambda k: inputs_by_size[k]["text_mb"])]
    # ours' shards as large as datatrove's tasks' files: neither system gets more parallelism from the size
    shard_bytes = int(args.shard_mb * 1e6)
    runs: dict[str, list[dict]] = {}
    loads = []
    for repeat in range(args.repeats):
        loads.append(load_average())
        log(f"repeat {repeat + 1}/{args.repeats} (load {loads[-1]})")
        last = repeat == args.repeats - 1
        for workers in range(1, args.max_workers + 1) if "main" in sections else [1]:
            ours = run_ours(full, tmp, f"ours_{workers}", workers, keep=True, shard_bytes=shard_bytes)
            runs.setdefault(f"ours_{workers}", []).append(ours)
            if "main" in sections:
                runs.setdefault(f"datatrove_{workers}", []).append(run_datatrove(
                    full, tmp, f"datatrove_{workers}", workers, args.datatrove_tokenizer, ours["work_dir"],
                    own_chain=workers == 1 and repeat == 0))
            if workers == 1 and "limits" in sections:
                scratch = tmp / "limits-scratch"
                scratch.mkdir(exist_ok=True)
                runs.setdefault("limits", []).append(isolated(
                    limits_run, stage_inputs(full, Path(ours["work_dir"])), str(ASSETS / "quality.bin"), str(scratch)))
                shutil.rmtree(scratch, ignore_errors=True)
            if workers == 1 and last and args.datatrove_spacy and "main" in sections:
                log("  datatrove rules with its default spaCy tokenizer (once)")
                runs["datatrove_1_spacy"] = [run_datatrove(full, tmp, "datatrove_spacy", 1, "spacy", ours["work_dir"],
                                                           stages=["rules"])]
            shutil.rmtree(Path(ours["work_dir"]).parent, ignore_errors=True)
        if "main" in sections:
            for size, inputs in inputs_by_size.items():
                if inputs is not full:
                    runs.setdefault(f"ours_1_{size}", []).append(run_ours(inputs, tmp, f"ours_1_{size}", 1,
                                                                              shard_bytes=shard_bytes))
    loads.append(load_average())
    return {"runs": runs, "load_during": loads}


def overhead_section(args, inputs: dict, tmp: Path) -> dict:
    """Ray (1 worker) against in-process on one large shard, interleaved."""
    runs: dict[str, list[dict]] = {"ray_1": [], "no_ray": []}
    shard_bytes = int(inputs["text_mb"] * 1e6 * 2)  # one shard
    for repeat in range(args.overhead_repeats):
        log(f"overhead repeat {repeat + 1}/{args.overhead_repeats} (load {load_average()})")
        runs["ray_1"].append(run_ours(inputs, tmp, "large_ray_1", 1, True, shard_bytes))
        runs["no_ray"].append(run_ours(inputs, tmp, "large_no_ray", 1, False, shard_bytes))
    return {"runs": runs, "input": {k: v for k, v in inputs.items() if k != "by_category"}}


# ----------------------------------------------------------------------------------- summaries

def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _per_core(amount: float, seconds: float, cores: int) -> float | None:
    return amount / (seconds * cores) if seconds else None


def summarise_system(runs: list[dict], workers: int, corpus: dict) -> dict:
    """Medians per stage and end to end; throughput per core (wall x workers) and per CPU second."""
    stages = {}
    for stage in runs[0]["stages"]:
        if stage.endswith("_own"):
            continue
        rows = [run["stages"][stage] for run in runs if stage in run["stages"]]
        wall = _median([r["wall_s"] for r in rows])
        cpu = _median([r["cpu_s"] for r in rows])
        docs_in, mb_in = rows[0]["docs_in"], rows[0]["mb_in"]
        peaks = {}
        for role in ("driver", "ray_worker", "child", "ray_daemon"):
            values = [r["processes"][role]["peak_mb"] for r in rows if role in r["processes"]]
            if values:
                peaks[role] = round(max(values), 1)
        stages[stage] = {
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "wall_s_all": [round(r["wall_s"], 3) for r in rows],
            "docs_in": docs_in, "mb_in": round(mb_in, 3), "docs_out": rows[0]["docs_out"],
            "mb_out": round(rows[0]["mb_out"], 3),
            "docs_per_s_per_core": round(_per_core(docs_in, wall, workers), 1),
            "mb_per_s_per_core": round(_per_core(mb_in, wall, workers), 3),
            "mb_per_cpu_s": round(mb_in / cpu, 3) if cpu else None,
            "peak_mb": peaks,
            "task_s": round(_median([r.get("task_s") for r in rows]) or 0, 3) if "task_s" in rows[0] else None,
        }
    wall = _median([run.get("end_to_end_wall_s", run["stage_wall_s"]) for run in runs])
    cpu = _median([sum(s["cpu_s"] for n, s in run["stages"].items() if not n.endswith("_own")) for run in runs])
    peaks = {}
    for stage in stages.values():
        for role, value in stage["peak_mb"].items():
            peaks[role] = max(peaks.get(role, 0), value)
    end = {
        "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "wall_s_all": [round(run.get("end_to_end_wall_s", run["stage_wall_s"]), 3) for run in runs],
        "docs_in": corpus["docs"], "mb_in": corpus["text_mb"],
        "docs_per_s_per_core": round(corpus["docs"] / (wall * workers), 1),
        "mb_per_s_per_core": round(corpus["text_mb"] / (wall * workers), 3),
        "mb_per_cpu_s": round(corpus["text_mb"] / cpu, 3) if cpu else None,
        "peak_mb": peaks,
        "cost_core_hours_per_tb": round(1e6 / (corpus["text_mb"] / (wall * workers)) / 3600, 1),
    }
    if "startup_s" in runs[0]:
        end["startup_s"] = round(_median([run["startup_s"] for run in runs]), 3)
        end["total_wall_s"] = round(_median([run["total_wall_s"] for run in runs]), 3)
    return {"workers": workers, "repeats": len(runs), "stages": stages, "end_to_end": end}


def ratios(ours: dict, theirs: dict) -> dict:
    """ours / datatrove throughput (> 1: ours is faster), by wall per core and by CPU second; per
    stage each on its own input, end to end on the same corpus."""
    rows = {}
    for stage in STAGES[1:] + ["end_to_end"]:
        a = ours["end_to_end"] if stage == "end_to_end" else ours["stages"].get(stage)
        b = theirs["end_to_end"] if stage == "end_to_end" else theirs["stages"].get(stage)
        if not a or not b:
            continue
        rows[stage] = {
            "mb_per_s_per_core": round(a["mb_per_s_per_core"] / b["mb_per_s_per_core"], 2),
            "docs_per_s_per_core": round(a["docs_per_s_per_core"] / b["docs_per_s_per_core"], 2),
            "mb_per_cpu_s": round(a["mb_per_cpu_s"] / b["mb_per_cpu_s"], 2) if a["mb_per_cpu_s"] and b["mb_per_cpu_s"] else None,
        }
    return rows


def per_repeat_ratios(ours_runs: list[dict], theirs_runs: list[dict]) -> list[float]:
    """End-to-end datatrove wall / ours wall within each repeat (same workers, same load window)."""
    return [round(t.get("end_to_end_wall_s", t["stage_wall_s"]) / o.get("end_to_end_wall_s", o["stage_wall_s"]), 2)
            for o, t in zip(ours_runs, theirs_runs)]


def scaling(one: dict, two: dict) -> dict:
    """Speed-up from 1 to 2 workers and efficiency (speed-up / 2), per stage and end to end."""
    rows = {}
    for stage in list(one["stages"]) + ["end_to_end"]:
        a = one["end_to_end"] if stage == "end_to_end" else one["stages"][stage]
        b = two["end_to_end"] if stage == "end_to_end" else two["stages"][stage]
        speedup = a["wall_s"] / b["wall_s"]
        rows[stage] = {"wall_1_s": a["wall_s"], "wall_2_s": b["wall_s"], "speedup": round(speedup, 2),
                       "efficiency": round(speedup / 2, 3)}
    return rows


def summarise_limits(runs: list[dict], ours: dict) -> dict:
    rows = {}
    for name in [key for key, value in runs[0].items() if isinstance(value, dict)]:
        measured = [run[name] for run in runs]
        mb, docs = measured[0]["mb"], measured[0]["docs"]
        io_s = _median([m["read_write_s"] for m in measured])
        row = {"docs": docs, "mb": round(mb, 3), "read_write_s": round(io_s, 3),
               "read_write_mb_per_s": round(mb / io_s, 2) if io_s else None}
        if "bare_s" in measured[0]:
            bare = _median([m["bare_s"] for m in measured])
            row.update(bare=measured[0]["bare"], bare_s=round(bare, 3),
                       bare_mb_per_s=round(mb / bare, 2) if bare else None)
            for extra in ("view_s", "bare_full_text_s", "prepare_s", "shingle_s", "compiled_s"):
                if extra in measured[0]:
                    row[extra] = round(_median([m[extra] for m in measured]), 3)
        stage = ours["stages"].get(name)
        if stage:
            row["stage_mb_per_s_per_core"] = stage["mb_per_s_per_core"]
            if row["read_write_mb_per_s"]:
                row["stage_share_of_read_write_limit"] = round(stage["mb_per_s_per_core"] / row["read_write_mb_per_s"], 3)
            if row.get("bare_mb_per_s"):
                row["stage_share_of_bare_limit"] = round(stage["mb_per_s_per_core"] / row["bare_mb_per_s"], 3)
        rows[name] = row
    return rows


def outside_tasks(runs: list[dict]) -> dict[str, float | None]:
    """Per stage, the median share of its wall time not spent inside its unit tasks (Ray scheduling,
    argument and result transfer, the driver's claim/manifest/receipt bookkeeping). None for dedup,
    whose prepare map/reduce runs outside the unit tasks and is not in their receipts."""
    shares = {}
    for stage in runs[0]["stages"]:
        if stage == "dedup":
            shares[stage] = None
            continue
        shares[stage] = round(_median([1 - run["stages"][stage]["task_s"] / run["stages"][stage]["wall_s"]
                                       for run in runs]), 3)
    return shares


def summarise_overhead(section: dict, main_runs: list[dict] | None) -> dict:
    ray = summarise_system(section["runs"]["ray_1"], 1, section["input"])
    local = summarise_system(section["runs"]["no_ray"], 1, section["input"])
    outside = outside_tasks(section["runs"]["ray_1"])
    rows = {}
    for stage in list(ray["stages"]) + ["end_to_end"]:
        a = ray["end_to_end"] if stage == "end_to_end" else ray["stages"][stage]
        b = local["end_to_end"] if stage == "end_to_end" else local["stages"][stage]
        rows[stage] = {"ray_s": a["wall_s"], "in_process_s": b["wall_s"],
                       "ray_s_all": a["wall_s_all"], "in_process_s_all": b["wall_s_all"],
                       "overhead_share": round((a["wall_s"] - b["wall_s"]) / a["wall_s"], 3),
                       "outside_tasks_share": outside.get(stage),
                       "ray_peak_worker_mb": a["peak_mb"].get("ray_worker"),
                       "in_process_peak_mb": b["peak_mb"].get("driver")}
    result = {"shard_mb": section["input"]["text_mb"], "copies": section["input"].get("copies"),
              "input": section["input"], "repeats": len(section["runs"]["ray_1"]),
              "ray_startup_s": ray["end_to_end"].get("startup_s"), "stages": rows}
    if main_runs:
        result["normal_shards_1_worker"] = outside_tasks(main_runs)
    return result


def summarise_growth(runs: dict[str, list[dict]], sizes: dict[str, dict], full_name: str) -> dict:
    rows = {}
    for size, inputs in sizes.items():
        name = "ours_1" if size == full_name else f"ours_1_{size}"
        if name not in runs:
            continue
        summary = summarise_system(runs[name], 1, inputs)
        rows[size] = {"docs": inputs["docs"], "text_mb": inputs["text_mb"], "shards": inputs["files"],
                      "largest_shard_mb": inputs.get("largest_shard_mb"),
                      "wall_s": summary["end_to_end"]["wall_s"],
                      "stages_wall_s": {s: v["wall_s"] for s, v in summary["stages"].items()},
                      "peak_mb": {s: v["peak_mb"] for s, v in summary["stages"].items()},
                      "mb_per_s_per_core": summary["end_to_end"]["mb_per_s_per_core"]}
    return rows


# ----------------------------------------------------------------------------------- markdown

def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


ROLE_NAMES = {"ours": {"ray_worker": "Ray worker", "driver": "driver"},
              "datatrove": {"driver": "main process", "child": "pool worker"}}


def _largest(peaks: dict, system: str) -> str:
    """The largest peak among the processes that run stage code (not Ray's own daemons)."""
    candidates = {role: mb for role, mb in peaks.items() if role in ROLE_NAMES[system]}
    if not candidates:
        return "–"
    role = max(candidates, key=candidates.get)
    return f"{candidates[role]:,.0f} ({ROLE_NAMES[system][role]})"


def render_markdown(report: dict) -> str:
    lines = []
    meta = report["meta"]
    lines += [f"Command: `{meta['command'].strip()}`  ",
              f"Date: {meta['date']}; machine: {meta['machine']['nproc']} cores ({meta['machine']['cpu']}), "
              f"{meta['machine']['ram_gb']} GiB RAM; load average before {meta['load_before']}, after {meta['load_after']}  ",
              f"Corpus: {meta['corpus']['docs']:,} documents, {meta['corpus']['text_mb']} MB of text, "
              f"{meta['corpus']['files']} input files ({meta['corpus'].get('layout', 'category')} layout, "
              f"{meta['corpus'].get('smallest_shard_mb', '?')}-{meta['corpus'].get('largest_shard_mb', '?')} MB; "
              f"scale {meta['corpus'].get('scale', 1)}x); repeats: {meta['repeats']} (medians); versions: "
              + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "  "]
    warmup = meta.get("warmup")
    if warmup:  # results from before the warm-up have none
        lines += [f"Before the repeats, untimed: both systems once on {warmup['docs']:,} of the documents "
                  f"({warmup['text_mb']} MB), ours in process {warmup['ours_s']} s (numba compiling its kernels, "
                  f"on a machine's first run), datatrove {warmup['datatrove_s']} s"]
    lines.append("")
    main = report.get("main")
    if main:
        for workers in ("1", "2"):
            ours, theirs = main.get(f"ours_{workers}"), main.get(f"datatrove_{workers}")
            if not ours or not theirs:
                continue
            ratio = main[f"ratio_{workers}"]
            lines += [f"### {workers} worker{'s' if workers == '2' else ''}", "",
                      "| stage | system | docs in | MB in | wall s | docs/s/core | MB/s/core | MB/CPU-s | peak RSS MB, largest process | docs out | ours/datatrove |",
                      "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
            for stage in STAGES + ["end_to_end"]:
                for label, system in (("ours", ours), ("datatrove", theirs)):
                    row = system["end_to_end"] if stage == "end_to_end" else system["stages"].get(stage)
                    if row is None:
                        if label == "datatrove" and stage == "ingest":
                            lines.append("| ingest | datatrove | – | – | – | – | – | – | (reads the input in its langid stage) | – | – |")
                        continue
                    peak = _largest(row["peak_mb"], label)
                    docs_out = row.get("docs_out", "")
                    r = ratio.get(stage, {}).get("mb_per_s_per_core") if label == "ours" else None
                    lines.append(f"| {stage.replace('_', ' ')} | {label} | {_fmt(row['docs_in'])} | {_fmt(row['mb_in'], 1)} | "
                                 f"{_fmt(row['wall_s'], 1)} | {_fmt(row['docs_per_s_per_core'], 0)} | "
                                 f"{_fmt(row['mb_per_s_per_core'])} | {_fmt(row['mb_per_cpu_s'])} | {peak} | "
                                 f"{_fmt(docs_out) if docs_out != '' else '–'} | {_fmt(r) if r else ''} |")
            per_repeat = main.get(f"per_repeat_ratio_{workers}")
            daemons = ours["end_to_end"]["peak_mb"].get("ray_daemon")
            lines += ["", f"End-to-end ratio per repeat (datatrove wall / ours wall): {per_repeat}; "
                      f"Ray's own daemons (raylet, GCS, agents) peak at {_fmt(daemons, 0)} MB each at most; "
                      f"ours start-up (Ray; in the end-to-end time): {_fmt(ours['end_to_end'].get('startup_s'), 1)} s; "
                      f"cost at this speed: ours {ours['end_to_end']['cost_core_hours_per_tb']:,} core-hours per TB of text, "
                      f"datatrove {theirs['end_to_end']['cost_core_hours_per_tb']:,}.", ""]
        chain = main.get("datatrove_own_chain")
        if chain:
            lines += ["### datatrove on its own outputs (1 worker, first repeat)", "",
                      "Above, every datatrove stage reads what ours' previous stage kept. Chained on its own "
                      "outputs instead, datatrove's English-only rules drop most non-English text, so its "
                      "quality and dedup stages get less to do:", "",
                      "| stage | docs in | MB in | wall s | docs out | MB out |", "|---|---:|---:|---:|---:|---:|"]
            for name, row in chain["stages"].items():
                lines.append(f"| {name.removesuffix('_own')} | {_fmt(row['docs_in'])} | {_fmt(row['mb_in'], 1)} | "
                             f"{_fmt(row['wall_s'], 1)} | {_fmt(row['docs_out'])} | {_fmt(row['mb_out'], 1)} |")
            lines += ["", f"End to end {chain['wall_s']:.1f} s against ours' {chain['ours_wall_s_same_repeat']:.1f} s "
                      f"in the same repeat: ratio {chain['ratio']}.", ""]
        if main.get("scaling_ours"):
            lines += ["### Scaling, 1 -> 2 workers (same corpus)", "",
                      "| stage | ours 1 worker s | ours 2 workers s | ours efficiency | datatrove 1 s | datatrove 2 s | datatrove efficiency |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
            for stage, row in main["scaling_ours"].items():
                other = main.get("scaling_datatrove", {}).get(stage, {})
                lines.append(f"| {stage.replace('_', ' ')} | {_fmt(row['wall_1_s'], 1)} | {_fmt(row['wall_2_s'], 1)} | "
                             f"{_fmt(row['efficiency'] * 100, 0)}% | {_fmt(other.get('wall_1_s'), 1)} | "
                             f"{_fmt(other.get('wall_2_s'), 1)} | "
                             f"{_fmt(other['efficiency'] * 100, 0) + '%' if other else '–'} |")
            lines.append("")
        if main.get("growth"):
            lines += ["### Growth with corpus size (ours, 1 worker)", "",
                      "| size | docs | MB | shards (largest MB) | wall s | MB/s/core | " + " | ".join(f"{s} s" for s in STAGES)
                      + " | peak worker MB per stage (" + ", ".join(STAGES) + ") | peak driver MB |",
                      "|---|---:|---:|---:|---:|---:|" + "---:|" * len(STAGES) + "---|---:|"]
            for size, row in main["growth"].items():
                peaks = ", ".join(_fmt(row["peak_mb"].get(s, {}).get("ray_worker"), 0) for s in STAGES)
                driver = max((v.get("driver", 0) for v in row["peak_mb"].values()), default=None)
                lines.append(f"| {size} | {row['docs']:,} | {row['text_mb']} | {row['shards']} ({_fmt(row.get('largest_shard_mb'), 1)}) | "
                             f"{_fmt(row['wall_s'], 1)} | "
                             f"{_fmt(row['mb_per_s_per_core'])} | "
                             + " | ".join(_fmt(row["stages_wall_s"].get(s), 1) for s in STAGES)
                             + f" | {peaks} | {_fmt(driver, 0)} |")
            lines.append("")
        if main.get("spacy_rules"):
            row = main["spacy_rules"]
            lines += [f"datatrove rules with its default spaCy word tokenizer (1 worker, once): {row['wall_s']:.1f} s for "
                      f"{row['mb_in']:.1f} MB ({row['mb_per_s_per_core']:.3f} MB/s/core), against "
                      f"{row['split_wall_s']:.1f} s with str.split words.", ""]
    limits = report.get("limits")
    if limits:
        lines += ["### Physical limits (one process, one core, each stage's own input)", "",
                  "| stage | MB | read+write Parquet MB/s | bare library call | bare MB/s | stage MB/s/core | stage / read+write | stage / bare |",
                  "|---|---:|---:|---|---:|---:|---:|---:|"]
        for stage, row in limits.items():
            lines.append(f"| {stage} | {_fmt(row['mb'], 1)} | {_fmt(row['read_write_mb_per_s'], 1)} | {row.get('bare', '–')} | "
                         f"{_fmt(row.get('bare_mb_per_s'), 1)} | {_fmt(row.get('stage_mb_per_s_per_core'))} | "
                         f"{_fmt((row.get('stage_share_of_read_write_limit') or 0) * 100, 1)}% | "
                         f"{_fmt(row['stage_share_of_bare_limit'] * 100, 1) + '%' if row.get('stage_share_of_bare_limit') else '–'} |")
        lines.append("")
        for stage, row in limits.items():
            if row.get("compiled_s"):
                lines.append(f"- {stage}: the stage's compiled predict (stages/fasttext_predict.py, same labels and "
                             f"probabilities) took {row['compiled_s']:.2f} s where the bare fastText call took "
                             f"{row['bare_s']:.2f} s ({row['bare_s'] / row['compiled_s']:.2f}x).")
        lines.append("")
    overhead = report.get("overhead")
    if overhead:
        lines += [f"### Ray overhead: one shard of {overhead['shard_mb']} MB, Ray 1 worker vs in process "
                  f"({overhead.get('repeats', 1)} repeats)", "",
                  "| stage | Ray s | in process s | (Ray - in process) / Ray | Ray: wall outside the task | "
                  "Ray worker peak MB | in-process peak MB |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for stage, row in overhead["stages"].items():
            outside = row.get("outside_tasks_share")
            lines.append(f"| {stage.replace('_', ' ')} | {_fmt(row['ray_s'], 2)} | {_fmt(row['in_process_s'], 2)} | "
                         f"{_fmt(row['overhead_share'] * 100, 1)}% | "
                         f"{_fmt(outside * 100, 1) + '%' if outside is not None else '–'} | "
                         f"{_fmt(row['ray_peak_worker_mb'], 0)} | {_fmt(row['in_process_peak_mb'], 0)} |")
        lines += ["", f"Ray start-up (once per run, not in the stage times): {_fmt(overhead['ray_startup_s'], 1)} s.", ""]
        if overhead.get("normal_shards_1_worker"):
            lines += ["At the normal shard size (main run, 1 worker), share of stage wall time outside the unit tasks: "
                      + ", ".join(f"{s} {_fmt(r * 100, 1)}%" for s, r in overhead["normal_shards_1_worker"].items()
                                  if r is not None) + " (dedup: its prepare phase runs outside the unit tasks).", ""]
    profile = report.get("profile")
    if profile:
        lines += [f"### Profile: {profile['stage']} ({profile['wall_s']:.1f} s in process, cProfile)", "",
                  "| function | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
        for row in profile["by_tottime"][:15]:
            lines.append(f"| `{row['function']}` | {row['calls']:,} | {row['tottime']:.2f} | {row['cumtime']:.2f} |")
        lines.append("")
        spy = profile.get("py_spy")
        if spy and "by_self" in spy:
            lines += [f"py-spy, {spy['samples']:,} samples at 100 Hz (share of samples):", "",
                      "| function (self) | self | function (on the stack) | total |", "|---|---:|---|---:|"]
            for own, total in zip(spy["by_self"][:15], spy["by_total"][:15]):
                lines.append(f"| `{own['function']}` | {own['share'] * 100:.1f}% | `{total['function']}` | "
                             f"{total['share'] * 100:.1f}% |")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- main

def rerender(path: Path) -> str:
    """Recompute the overhead summary from the raw runs of a results file, save it, render it."""
    report = json.loads(path.read_text())
    raw = report.get("raw_runs", {})
    if "overhead" in raw and "overhead" in report:
        first = raw["overhead"]["ray_1"][0]["stages"]["ingest"]
        inputs = report["overhead"].get("input") or {"docs": first["docs_in"], "text_mb": report["overhead"]["shard_mb"],
                                                    "files": 1, "copies": report["overhead"].get("copies")}
        report["overhead"] = summarise_overhead({"runs": raw["overhead"], "input": inputs}, raw.get("ours_1"))
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    markdown = render_markdown(report)
    path.with_suffix(".md").write_text(markdown + "\n")
    return markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(CORPUS), help="directory of Parquet shards (id, text, source, category, lang)")
    parser.add_argument("--shards", type=int, default=None, help="use the first N corpus shards (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-mb", type=float, default=5.0, help="MB of text per input file / shard")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="corpus size: above 1, perturbed copies of the corpus (3 word edits each) are added "
                        "up to this many times its text")
    parser.add_argument("--layout", choices=("category", "mixed"), default="category",
                        help="input files: category = files of --shard-mb per category; mixed = per category one "
                        "file of half its text and the rest in files of --small-file-mb")
    parser.add_argument("--small-file-mb", type=float, default=0.25)
    parser.add_argument("--no-growth", dest="growth", action="store_false",
                        help="skip ours' runs at 1/4 and 1/2 of the corpus (main section)")
    parser.add_argument("--max-workers", type=int, default=2, choices=(1, 2))
    parser.add_argument("--datatrove-tokenizer", choices=("split", "spacy"), default="split")
    parser.add_argument("--datatrove-spacy", action="store_true",
                        help="also time datatrove's rules once with its default spaCy tokenizer")
    parser.add_argument("--large-shard-mb", type=float, default=64.0)
    parser.add_argument("--overhead-repeats", type=int, default=2)
    parser.add_argument("--sections", default="main,limits,overhead,profile")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 shards, 1 repeat, an 8 MB large shard")
    parser.add_argument("--keep", action="store_true", help="keep the working directories under bench/results/pipeline/")
    parser.add_argument("--out", help="results name: bench/results/NAME.json and .md, profiles "
                        "bench/results/pipeline/NAME-profile-STAGE.* (default: pipeline, or pipeline_quick)")
    parser.add_argument("--profile-stage", choices=STAGES, help="stage to profile (default: the slowest in the main "
                        "section, or rules without it)")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="py-spy executable: the profile section also samples the stage with it (default: on PATH)")
    parser.add_argument("--profile-child", nargs=2, metavar=("CONFIG_JSON", "STAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--render", metavar="JSON",
                        help="measure nothing: rebuild the summaries of a results file from its raw runs and print its tables")
    args = parser.parse_args()
    if args.render:
        print(rerender(Path(args.render)))
        return
    if args.profile_child:
        config_path, stage = args.profile_child
        run_one_stage(json.loads(Path(config_path).read_text()), stage)
        return
    if args.quick:
        args.shards = args.shards or 2
        args.repeats = 1
        args.large_shard_mb = min(args.large_shard_mb, 8.0)
    sections = set(args.sections.split(","))
    name = args.out or ("pipeline_quick" if args.quick else "pipeline")
    started = time.perf_counter()
    meta = {"command": " ".join(["python bench/bench_pipeline.py", *sys.argv[1:]]), "date": date.today().isoformat(),
            "machine": machine(), "versions": versions(), "load_before": load_average(), "repeats": args.repeats,
            "datatrove_tokenizer": args.datatrove_tokenizer}
    log(f"machine {meta['machine']}, load {meta['load_before']}")

    tmp = WORK / "runs"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ASSETS.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    shards = corpus_shards(Path(args.corpus))[:args.shards]
    # growth sizes (1/4, 1/2 of the corpus shards) only for the corpus itself, not a scaled copy
    counts = sorted({max(1, len(shards) // 4), max(1, len(shards) // 2), len(shards)}) if args.growth else [len(shards)]
    sizes = {}
    for count in counts:
        label = f"{count / counts[0]:g}x"
        table = corpus_table(shards[:count], args.scale if count == len(shards) else 1)
        sizes[label] = prepare_inputs(table, tmp / f"inputs-{count}", args.shard_mb, args.layout, args.small_file_mb)
        sizes[label]["corpus_shards"] = [s.name for s in shards[:count]]
        sizes[label]["scale"] = args.scale if count == len(shards) else 1
    full_name = max(sizes, key=lambda k: sizes[k]["text_mb"])
    full = sizes[full_name]
    meta["corpus"] = {k: v for k, v in full.items() if k != "by_category"}
    log(f"corpus: {full['docs']:,} docs, {full['text_mb']} MB, {full['files']} shards; sizes {list(sizes)}")
    ensure_quality_model()
    meta["warmup"] = warm_up(table, tmp, args.shard_mb, args.datatrove_tokenizer)  # the last size's: the whole corpus
    del table

    report: dict = {"meta": meta}
    if sections & {"main", "limits"}:
        section = main_section(args, sizes if "main" in sections else {full_name: full}, tmp, sections)
        runs = section["runs"]
        meta["load_during"] = section["load_during"]
        main_summary: dict = {}
        for workers in (1, 2):
            if f"ours_{workers}" in runs:
                main_summary[f"ours_{workers}"] = summarise_system(runs[f"ours_{workers}"], workers, full)
            if f"ours_{workers}" in runs and f"datatrove_{workers}" in runs:  # `--sections limits` runs ours alone
                main_summary[f"datatrove_{workers}"] = summarise_system(runs[f"datatrove_{workers}"], workers, full)
                main_summary[f"ratio_{workers}"] = ratios(main_summary[f"ours_{workers}"], main_summary[f"datatrove_{workers}"])
                main_summary[f"per_repeat_ratio_{workers}"] = per_repeat_ratios(runs[f"ours_{workers}"], runs[f"datatrove_{workers}"])
        if "ours_2" in main_summary:
            main_summary["scaling_ours"] = scaling(main_summary["ours_1"], main_summary["ours_2"])
            main_summary["scaling_datatrove"] = scaling(main_summary["datatrove_1"], main_summary["datatrove_2"])
        if "ours_1" in runs:
            main_summary["growth"] = summarise_growth(runs, sizes, full_name)
        if "datatrove_1_spacy" in runs:
            spacy = runs["datatrove_1_spacy"][0]["stages"]["rules"]
            main_summary["spacy_rules"] = {
                "wall_s": round(spacy["wall_s"], 3), "mb_in": round(spacy["mb_in"], 3), "docs_out": spacy["docs_out"],
                "mb_per_s_per_core": round(spacy["mb_in"] / spacy["wall_s"], 3),
                "split_wall_s": main_summary["datatrove_1"]["stages"]["rules"]["wall_s"]}
        own = next((run for run in runs.get("datatrove_1", []) if "own_chain_wall_s" in run), None)
        if own:
            chain = {name: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                            if k in ("wall_s", "docs_in", "mb_in", "docs_out", "mb_out")}
                     for name, row in own["stages"].items() if name == "langid" or name.endswith("_own")}
            ours_wall = runs["ours_1"][0].get("end_to_end_wall_s", runs["ours_1"][0]["stage_wall_s"])
            main_summary["datatrove_own_chain"] = {
                "stages": chain, "wall_s": round(own["own_chain_wall_s"], 3),
                "ours_wall_s_same_repeat": round(ours_wall, 3),
                "ratio": round(own["own_chain_wall_s"] / ours_wall, 2)}
        if main_summary:
            report["main"] = main_summary
        if "limits" in runs and "ours_1" in main_summary:
            report["limits"] = summarise_limits(runs["limits"], main_summary["ours_1"])
        report["raw_runs"] = {name: [{k: v for k, v in run.items() if k != "log"} for run in values]
                              for name, values in runs.items()}
    if "overhead" in sections:
        large = prepare_large_shard(full, tmp / "inputs-large", args.large_shard_mb)
        log(f"large shard: {large['docs']:,} docs, {large['text_mb']} MB ({large['copies']} copies)")
        section = overhead_section(args, large, tmp)
        report["overhead"] = summarise_overhead(section, (report.get("raw_runs") or {}).get("ours_1"))
        report.setdefault("raw_runs", {})["overhead"] = {
            name: [{k: v for k, v in run.items() if k != "log"} for run in values] for name, values in section["runs"].items()}
    if "profile" in sections:
        ours = report.get("main", {}).get("ours_1")
        slowest = args.profile_stage or (max(ours["stages"], key=lambda s: ours["stages"][s]["wall_s"])
                                         if ours else "rules")
        log(f"profiling {slowest} in process")
        work = tmp / "profile"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        config = pipeline_config(full, work / "run", 1)
        isolated(run_upstream, config, slowest, pin=False)
        report["profile"] = isolated(profile_run, config, slowest, str(WORK / f"{name}-profile-{slowest}.prof"), pin=False)
        if args.py_spy:
            log(f"profiling {slowest} with py-spy")
            report["profile"]["py_spy"] = py_spy_profile(args.py_spy, config, slowest,
                                                         WORK / f"{name}-profile-{slowest}.pyspy")
    meta["load_after"] = load_average()
    meta["bench_wall_s"] = round(time.perf_counter() - started, 1)
    path = save_results(name, report)
    markdown = render_markdown(report)
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(markdown)
    log(f"written to {path} and {RESULTS / f'{name}.md'} in {meta['bench_wall_s']:.0f} s")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
