"""The quality model: training cost and held-out metrics, scoring throughput against datatrove, and
what the chosen thresholds keep of real corpora.

    python bench/bench_quality.py train [--variants chars,jieba,dim32,quantized]
        -> bench/results/quality_train.json
    python bench/bench_quality.py throughput [--repeats 3]   -> bench/results/quality_throughput.json
    python bench/bench_quality.py keep-rates                 -> bench/results/quality_keep_rates.json

train: each variant trains on ../shared/data/quality-dev (20% held out, balanced per language and
source) in a fresh process; it reports wall and CPU seconds, the peak memory of the trainer (the
Python side, which reads and prepares the data) and of the fastText child it starts, the model size,
held-out precision/recall/F1/ROC AUC per language, and bare scoring speed (prepare + predict, one
core) on corpus-dev. ``chars`` is the shipped default; ``jieba`` segments Chinese into jieba words
instead of characters; ``dim32`` doubles the embedding size; ``quantized`` is ``chars`` product-quantised.

throughput: the default model over the corpus-dev shards (converted once, untimed, to the pipeline's
document schema plus the source's language as ``lang``), each contender in a fresh process pinned to
one core, reading and writing zstd Parquet, medians of the repeats:

- stage: stages.quality over whole shards, as the runner calls it (thresholds for en/zh, curated
  categories and code not filtered; every document is scored);
- datatrove: ParquetReader -> FastTextClassifierFilter(keep gold >= 0.5, exclusion writer) ->
  ParquetWriter, with the same model file (it predicts on the whole raw text, newlines removed);
- bare fastText ``predict`` on all texts in memory, no I/O: raw full texts (datatrove's input) and the
  stage's prepared lines (first 3,000 characters, normalised, CJK split).

keep-rates: the share of each corpus-dev source and of web-dev kept at thresholds 0.3 ... 0.7, the
evidence behind the default threshold.
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from common import (  # noqa: E402
    REPO, SHARED, Timer, accept_fasttext_numpy2, corpus_shards, document_table, interleaved, isolated,
    quiet_datatrove, run_datatrove_filters, save_results, summarise, text_megabytes, with_source_lang,
    write_tables,
)

VARIANTS = {
    "chars": {},
    "jieba": {"text": {"segmenter": "jieba"}},
    "dim32": {"train": {"dim": 32}},
    "quantized": {"train": {"quantize": True}},
}
SWEEP = [0.3, 0.4, 0.5, 0.6, 0.7]


def quality_config(model_path: Path, variant: dict):
    from stages.quality import QualityConfig

    sources = [{"path": str(SHARED / "quality-dev" / f"{label}.jsonl.gz"), "label": label} for label in ("gold", "junk")]
    return QualityConfig(model_path=str(model_path), text=variant.get("text", {}),
                         train={"sources": sources, **variant.get("train", {})})


def with_lang(table: pa.Table) -> pa.Table:
    """A document table plus ``lang`` as the langid stage would give it (primary subtag; code rows
    get ``code``), taken from the source's own label kept in ``meta``."""
    from stages.quality_model import normalise_lang

    return with_source_lang(table, normalise_lang)


# --- train (each variant in a spawned process) -------------------------------------------------------


def train_variant(model_path: Path, variant: dict) -> dict:
    from stages.quality_model import QualityScorer, train_quality_model

    config = quality_config(model_path, variant)
    with Timer() as timer:
        report = train_quality_model(config, log=lambda message: None)
    # ru_maxrss is KiB on Linux. RUSAGE_CHILDREN covers the fastText child the trainer starts.
    trainer_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    texts = pa.concat_arrays([document_table(s).column("text").combine_chunks() for s in corpus_shards()])
    scorer = QualityScorer(str(model_path), config.text)
    with Timer() as scoring:
        scorer.score(texts)
    held_out = report["held_out"]
    return {
        "wall_s": timer.wall, "trainer_cpu_s": timer.cpu, "fasttext_cpu_s": child.ru_utime + child.ru_stime,
        "fit_wall_s": report["timing"]["fit_seconds"], "trainer_peak_rss_mb": trainer_peak,
        "fasttext_peak_rss_mb": child.ru_maxrss / 1024, "model_mb": report["model_bytes"] / 1e6,
        "train_rows": sum(n for lang in report["data"]["train"].values() for label in lang.values() for n in label.values()),
        "held_out": {lang: {k: m[k] for k in ("n", "precision", "recall", "f1", "roc_auc")}
                     for lang, m in [("overall", held_out["overall"]), *held_out["by_lang"].items()]},
        "score_corpus_dev_docs_per_cpu_s": len(texts) / scoring.cpu,
        "score_corpus_dev_mb_per_cpu_s": pc.sum(pc.binary_length(texts)).as_py() / 1e6 / scoring.cpu,
    }


def train_main(variants: list[str], models: Path) -> dict:
    results = {"data": "quality-dev (gold 13,000 rows, junk 5,180 rows)", "variants": {}}
    for name in variants:
        row = isolated(train_variant, models / f"{name}.bin", VARIANTS[name])
        results["variants"][name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
        print(f"{name}: {json.dumps(results['variants'][name])}", flush=True)
    return results


# --- throughput contenders (module level: each runs in a spawned process) ------------------------------


def stage_run(shards: list[Path], out: Path, model_path: Path) -> dict:
    from pipeline import storage
    from stages.quality import Quality

    with Timer() as load:
        stage = Quality(quality_config(model_path, {}))
        stage.scorer  # noqa: B018 -- load the model now, outside the timed loop
    fs, root = storage.resolve(str(out))
    kept = 0
    with Timer() as run:
        for shard in shards:
            output = stage.process(pq.read_table(shard))
            storage.write_parquet(fs, storage.join(root, "kept", shard.name), output.kept)
            storage.write_parquet(fs, storage.join(root, "removed", shard.name), output.removed)
            kept += output.kept.num_rows
    return {"wall_s": run.wall, "cpu_s": run.cpu, "model_load_s": load.wall, "kept": kept}


def datatrove_run(shard_dir: Path, out: Path, model_path: Path) -> dict:
    from datatrove.pipeline.filters import FastTextClassifierFilter
    from datatrove.pipeline.writers import ParquetWriter
    from fasttext.FastText import _FastText

    accept_fasttext_numpy2()
    quiet_datatrove()
    classifier = FastTextClassifierFilter(
        model_url=str(model_path), keep_labels=("gold", 0.5), save_labels_in_metadata=True,
        exclusion_writer=ParquetWriter(str(out / "removed"), compression="zstd"),
    )
    with Timer() as load:
        classifier._model = _FastText(model_path=str(model_path))  # no copy into datatrove's asset cache
    return {**run_datatrove_filters(shard_dir, [classifier], out), "model_load_s": load.wall}


def bare_predict(shards: list[Path], model_path: Path, prepared: bool) -> dict:
    from fasttext.FastText import _FastText

    from stages.quality_model import TextConfig, prepare_texts

    texts = [t for shard in shards for t in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]
    model = _FastText(model_path=str(model_path))
    with Timer() as run:
        lines = prepare_texts(texts, TextConfig()) if prepared else [t.replace("\n", " ") for t in texts]
        model.predict(lines, k=1)
    return {"wall_s": run.wall, "cpu_s": run.cpu}


def throughput_main(repeats: int, models: Path) -> dict:
    model_path = models / "chars.bin"
    if not model_path.exists():
        isolated(train_variant, model_path, {})
    shards = corpus_shards()
    tables = [with_lang(document_table(shard)) for shard in shards]
    docs = sum(t.num_rows for t in tables)
    megabytes = sum(text_megabytes(t) for t in tables)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = write_tables(((shard.name, table) for shard, table in zip(shards, tables)), tmp / "in")
        contenders = {
            "stage": lambda out: isolated(stage_run, inputs, out, model_path),
            "datatrove_fasttext_filter": lambda out: isolated(datatrove_run, tmp / "in", out, model_path),
            "fasttext_predict_raw_full_texts": lambda out: isolated(bare_predict, inputs, model_path, False),
            "fasttext_predict_stage_prepared": lambda out: isolated(bare_predict, inputs, model_path, True),
        }
        runs = interleaved(contenders, repeats, tmp)
    results = {"docs": docs, "text_mb": round(megabytes, 2), "shards": len(shards), "model": str(model_path),
               "model_mb": round(model_path.stat().st_size / 1e6, 2), "contenders": summarise(runs, docs, megabytes)}
    c = results["contenders"]
    results["stage_speedup_over_datatrove"] = {
        clock: round(c["datatrove_fasttext_filter"][clock] / c["stage"][clock], 2) for clock in ("wall_s", "cpu_s")}
    return results


# --- keep rates --------------------------------------------------------------------------------------------


def keep_rates_main(models: Path) -> dict:
    import numpy as np

    from stages.quality import QualityConfig
    from stages.quality_model import QualityScorer, TextConfig

    model_path = models / "chars.bin"
    if not model_path.exists():
        isolated(train_variant, model_path, {})
    scorer = QualityScorer(str(model_path), TextConfig())
    groups: dict[str, list[float]] = {}
    for shard in corpus_shards():
        table = with_lang(document_table(shard))
        scores = scorer.score(table.column("text"))
        for source, lang, score in zip(table.column("source").to_pylist(), table.column("lang").to_pylist(), scores):
            groups.setdefault(f"corpus-dev {source} {lang}", []).append(float(score))
    with gzip.open(SHARED / "web-dev.jsonl.gz", "rt", encoding="utf-8") as handle:
        web = [json.loads(line) for line in handle]
    for row, score in zip(web, scorer.score([row["text"] for row in web])):
        groups.setdefault(f"web-dev {row['source']} {row['lang']}", []).append(float(score))
    default = QualityConfig()
    results = {"thresholds": SWEEP, "default_thresholds": default.thresholds, "groups": {}}
    for name, scores in sorted(groups.items()):
        if len(scores) < 20:
            continue
        values = np.array(scores)
        results["groups"][name] = {"n": len(values), "median_score": round(float(np.median(values)), 3),
                                   **{f"kept_at_{t}": round(float((values >= t).mean()), 3) for t in SWEEP}}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "throughput", "keep-rates"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--models", default=str(REPO / "bench" / "results" / "quality-models"),
                        help="where trained models go (reused by throughput and keep-rates)")
    args = parser.parse_args()
    models = Path(args.models)
    models.mkdir(parents=True, exist_ok=True)
    if args.what == "train":
        results = train_main(args.variants.split(","), models)
    elif args.what == "throughput":
        results = throughput_main(args.repeats, models)
    else:
        results = keep_rates_main(models)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {save_results('quality_' + args.what.replace('-', '_'), results)}")


if __name__ == "__main__":
    main()
