"""The langid stage against datatrove's LanguageFilter and bare fastText, and its accuracy.

    python bench/bench_langid.py throughput [--repeats 3]   # -> bench/results/langid_throughput.json
    python bench/bench_langid.py accuracy                   # -> bench/results/langid_accuracy.json

throughput: every contender reads the corpus-dev shards (converted once, untimed, to the pipeline's
document schema, zstd Parquet), decides, and writes kept and removed Parquet, in one process pinned to
one core, each run in a fresh process (peak memory is its own), medians of the repeats:

- stage: stages.langid over whole shards, as the runner calls it (bypass off, so it classifies the same
  documents datatrove does), and again with the default config (code bypassed);
- datatrove: ParquetReader -> LanguageFilter(ft176, same languages and threshold, an exclusion writer)
  -> ParquetWriter, zstd, with its model object pointed at the same lid.176.ftz (no download);
- bare fastText ``predict``, no I/O, on each shard's texts already in memory: the full texts with
  newlines replaced (what datatrove classifies) and the stage's cleaned views (what the stage
  classifies). Timed in the stage's own process right after each shard, so the stage/bare ratios
  compare runs under the same machine load.

accuracy: the stage against bare lid.176 ``predict`` on the raw text (newlines replaced, nothing
else changed), per langid-dev unit (sentence / word-pair / single-word) and per corpus-dev source:
top-1 and the share labelled right with a score >= ``min_score``, printed as a table; per-language
top-1 on langid-dev sentences, the threshold sweep (sentences and corpus-dev documents) behind the
default ``min_score``, and Hans/Hant accuracy on labelled Chinese.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from common import (  # noqa: E402
    SHARED, Timer, accept_fasttext_numpy2, corpus_shards, document_table, interleaved, isolated, quiet_datatrove,
    run_datatrove_filters, save_results, summarise, text_megabytes, throughput, write_document_shards,
)

LANGUAGES = ["en", "zh", "de", "fr", "es", "ja", "ko", "ru"]  # what configs/sample.yaml keeps
MIN_SCORE = 0.5
NAMED = ["en", "zh", "ja", "ko", "de", "fr", "es", "ru", "ar"]
NO_LID176_LABEL = {"lg", "mi", "sn", "st", "tn", "ts", "xh", "zu"}
TO_LID176 = {"nb": "no", "zh-Hans": "zh", "zh-Hant": "zh", "pt-BR": "pt"}
THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9]


# --- throughput contenders (module level: each runs in a spawned process) -------------------------


def stage_run(shards: list[Path], out: Path, config: dict, paired: bool) -> dict:
    """The stage over every shard, read to write. ``paired``: after each shard, also time bare
    fastText ``predict`` on that shard's full texts and on the stage's views of them, in this process,
    so the ratios compare runs that shared the same machine load."""
    from pipeline import storage
    from stages.langid import LangID, LangIDConfig, prediction_view

    with Timer() as load:
        stage = LangID(LangIDConfig(**config))
    fs, root = storage.resolve(str(out))
    kept, seconds = 0, Counter()
    for shard in shards:
        with Timer() as run:
            table = pq.read_table(shard)
            output = stage.process(table)
            storage.write_parquet(fs, storage.join(root, "kept", shard.name), output.kept)
            storage.write_parquet(fs, storage.join(root, "removed", shard.name), output.removed)
        seconds.update(wall_s=run.wall, cpu_s=run.cpu)
        kept += output.kept.num_rows
        if paired:
            texts = table.column("text").to_pylist()
            for name, lines in (("full_texts", [t.replace("\n", " ") for t in texts]),
                                ("stage_views", [prediction_view(t, 2000, 3) for t in texts])):
                with Timer() as bare:
                    stage.model.predict(lines, k=1)
                seconds[f"bare_predict_{name}_wall_s"] += bare.wall
                seconds[f"bare_predict_{name}_cpu_s"] += bare.cpu
    return {**seconds, "model_load_s": load.wall, "kept": kept}


def datatrove_run(shard_dir: Path, out: Path) -> dict:
    from datatrove.pipeline.filters import LanguageFilter
    from datatrove.pipeline.writers import ParquetWriter
    from fasttext import load_model

    from stages.langid import resolve_model_path

    accept_fasttext_numpy2()
    quiet_datatrove()
    language_filter = LanguageFilter(
        languages=LANGUAGES, language_threshold=MIN_SCORE,
        exclusion_writer=ParquetWriter(str(out / "removed"), compression="zstd"),
    )
    with Timer() as load:
        # FT176LID.model downloads lid.176.bin on first use unless _model is already set.
        language_filter.model._model = load_model(resolve_model_path(None))
    return {**run_datatrove_filters(shard_dir, [language_filter], out), "model_load_s": load.wall}


def throughput_main(repeats: int) -> dict:
    shards = corpus_shards()
    tables = [document_table(shard) for shard in shards]
    docs = sum(t.num_rows for t in tables)
    megabytes = sum(text_megabytes(t) for t in tables)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = write_document_shards(shards, tmp / "in")
        config = {"languages": LANGUAGES, "min_score": MIN_SCORE}
        contenders = {
            "stage_classify_all":
                lambda out: isolated(stage_run, inputs, out, {**config, "bypass_categories": []}, True),
            "stage_default_code_bypassed": lambda out: isolated(stage_run, inputs, out, config, False),
            "datatrove_language_filter": lambda out: isolated(datatrove_run, tmp / "in", out),
        }
        runs = interleaved(contenders, repeats, tmp)
        agreement = decision_agreement(tmp / "stage_classify_all-0", tmp / "datatrove_language_filter-0")
    results = {"docs": docs, "text_mb": round(megabytes, 2), "shards": len(shards),
               "languages": LANGUAGES, "min_score": MIN_SCORE, "contenders": summarise(runs, docs, megabytes)}
    stage = results["contenders"]["stage_classify_all"]
    datatrove = results["contenders"]["datatrove_language_filter"]
    for clock in ("wall_s", "cpu_s"):  # throughput ratios: > 1 means the stage is faster
        results[f"speed_ratios_{clock}"] = {"stage_vs_datatrove": round(datatrove[clock] / stage[clock], 2)}
        for bare in ("full_texts", "stage_views"):
            seconds = stage[f"bare_predict_{bare}_{clock}"]
            results[f"speed_ratios_{clock}"][f"stage_vs_bare_predict_{bare}"] = round(seconds / stage[clock], 2)
            results.setdefault(f"bare_predict_{bare}", {}).update(
                {f"{clock[:-2]}_{k}": v for k, v in throughput(docs, megabytes, seconds).items()})
    results["decision_agreement_with_datatrove"] = agreement
    return results


def decision_agreement(stage_out: Path, datatrove_out: Path) -> float:
    """Share of documents both keep or both drop."""
    def kept_ids(directory: Path) -> set[str]:
        tables = [pq.read_table(p, columns=["id"]) for p in directory.glob("*.parquet")]
        return {doc_id for table in tables for doc_id in table.column("id").to_pylist()}

    def all_ids(directory: Path) -> set[str]:
        return kept_ids(directory / "kept") | kept_ids(directory / "removed")

    stage_kept, datatrove_kept = kept_ids(stage_out / "kept"), kept_ids(datatrove_out / "kept")
    everything = all_ids(stage_out)
    return round(sum((i in stage_kept) == (i in datatrove_kept) for i in everything) / len(everything), 4)


# --- accuracy --------------------------------------------------------------------------------------


def langid_dev() -> dict[str, dict[str, list[str]]]:
    by_unit: dict[str, dict[str, list[str]]] = {}
    with gzip.open(SHARED / "langid-dev.tsv.gz", "rt", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for lang, text, unit in reader:
            if lang not in NO_LID176_LABEL:
                by_unit.setdefault(unit, {}).setdefault(TO_LID176.get(lang, lang), []).append(text)
    return by_unit


def sweep(gold: list[str], predicted: list[tuple[str, float]]) -> list[dict]:
    """For each threshold: share kept, share of correct labels lost, share of wrong labels among kept."""
    correct = [g == lang for g, (lang, _) in zip(gold, predicted)]
    rows = []
    for threshold in THRESHOLDS:
        kept = [score >= threshold for _, score in predicted]
        n_kept = sum(kept)
        rows.append({
            "threshold": threshold,
            "kept": round(n_kept / len(kept), 4),
            "correct_lost": round(sum(c and not k for c, k in zip(correct, kept)) / max(sum(correct), 1), 4),
            "wrong_among_kept": round(sum(k and not c for c, k in zip(correct, kept)) / max(n_kept, 1), 4),
        })
    return rows


def top1(gold: list[str], predicted: list[tuple[str, float]]) -> float:
    return round(sum(g == lang for g, (lang, _) in zip(gold, predicted)) / len(gold), 4)


def correct_kept(gold: list[str], predicted: list[tuple[str, float]]) -> float:
    """Share labelled right and confident enough to pass ``MIN_SCORE``: what a run actually keeps."""
    return round(sum(g == lang and s >= MIN_SCORE for g, (lang, s) in zip(gold, predicted)) / len(gold), 4)


def bare_predict(model, texts: list[str]) -> list[tuple[str, float]]:
    """lid.176 on the raw text, as datatrove and most pipelines call it: newlines replaced, nothing
    else touched. The baseline the stage's view and corrections must not fall below."""
    labels, scores = model.predict([t.replace("\n", " ") for t in texts], k=1, on_unicode_error="replace")
    return [(label[0].removeprefix("__label__"), min(float(score[0]), 1.0))
            for label, score in zip(labels, scores)]


def stage_vs_bare(stage, gold: list[str], texts: list[str]) -> tuple[dict, list, list]:
    """One row of the comparison table, and both predictions (for the sweeps)."""
    from stages.langid import prediction_view

    config = stage.config
    staged = stage.predict([prediction_view(t, config.max_chars, config.windows) for t in texts])
    bare = bare_predict(stage.model, texts)
    row = {
        "n": len(texts),
        "top1_stage": top1(gold, staged), "top1_bare": top1(gold, bare),
        f"correct_at_{MIN_SCORE}_stage": correct_kept(gold, staged),
        f"correct_at_{MIN_SCORE}_bare": correct_kept(gold, bare),
    }
    return row, staged, bare


def sentence_accuracy(stage, data: dict) -> dict:
    results: dict = {"per_unit": {}, "per_language": {}}
    for unit in ("sentence", "word-pair", "single-word"):
        pairs = [(lang, t) for lang, texts in sorted(data[unit].items()) for t in texts]
        gold = [lang for lang, _ in pairs]
        row, staged, _ = stage_vs_bare(stage, gold, [t for _, t in pairs])
        results["per_unit"][unit] = row
        if unit != "sentence":
            continue
        for lang in sorted(data[unit]):
            got = [p for g, p in zip(gold, staged) if g == lang]
            gold_lang = [lang] * len(got)
            results["per_language"][lang] = {
                "n": len(got),
                "top1": top1(gold_lang, got),
                f"correct_at_{MIN_SCORE}": correct_kept(gold_lang, got),
            }
        results["sweep"] = sweep(gold, staged)
    rest = [v["top1"] for k, v in results["per_language"].items() if k not in NAMED]
    results["rest_mean_top1"] = round(statistics.mean(rest), 4)
    return results


def document_accuracy(stage, docs: list[dict]) -> dict:
    """corpus-dev documents through the stage, and whole (newlines replaced) through bare ``predict``
    as datatrove classifies them; per source, and over all sources but debian_handbook (its label is
    the book's, and untranslated pages fall back to English text inside a translated page frame)."""
    per_source = {}
    for source in sorted({r["source"] for r in docs}):
        rows = [r for r in docs if r["source"] == source]
        per_source[source], _, _ = stage_vs_bare(stage, [TO_LID176.get(r["lang"], r["lang"]) for r in rows],
                                                 [r["text"] for r in rows])
    scored = [r for r in docs if r["source"] != "debian_handbook"]
    gold = [TO_LID176.get(r["lang"], r["lang"]) for r in scored]
    overall, staged, bare = stage_vs_bare(stage, gold, [r["text"] for r in scored])
    return {
        "overall_without_debian_handbook": overall,
        "per_source": per_source,
        "sweep_stage_view": sweep(gold, staged),
        "sweep_full_text": sweep(gold, bare),
    }


def comparison_table(results: dict) -> str:
    """The stage-vs-bare rows as a fixed-width table; ``<`` marks a row where the stage is lower."""
    rows = [(f"langid-dev {unit}", row) for unit, row in results["sentences"]["per_unit"].items()]
    rows += [(f"corpus-dev {source}", row) for source, row in results["documents"]["per_source"].items()]
    rows.append(("corpus-dev all but debian_handbook", results["documents"]["overall_without_debian_handbook"]))
    at = f"correct_at_{MIN_SCORE}"
    lines = [f"{'':44} {'n':>6}  {'top-1 stage':>11} {'bare':>7}  {at + ' stage':>20} {'bare':>7}"]
    for name, row in rows:
        mark = " <" if row["top1_stage"] < row["top1_bare"] else ""
        lines.append(f"{name:44} {row['n']:>6}  {row['top1_stage']:>11.4f} {row['top1_bare']:>7.4f}  "
                     f"{row[at + '_stage']:>20.4f} {row[at + '_bare']:>7.4f}{mark}")
    return "\n".join(lines)


def script_accuracy(corpus: list[dict]) -> dict:
    from stages.langid import chinese_script, prediction_view

    def script(text: str) -> str:
        return chinese_script(prediction_view(text, 2000, 3))

    labelled = [r for r in corpus if r["lang"] in ("zh-Hans", "zh-Hant")]
    with gzip.open(SHARED / "quality-dev" / "gold.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    books = [r["text"] for r in rows if (r["source"], r["lang"]) == ("gutenberg", "zh")]
    zhwiki = [r["text"] for r in corpus if r["source"] == "zhwiki_wikiextractor"]
    return {
        "corpus_dev_labelled": {
            "n": len(labelled),
            "accuracy": round(sum(script(r["text"]) == r["lang"][3:] for r in labelled) / len(labelled), 4),
        },
        "gutenberg_traditional_books": {
            "n": len(books), "accuracy": round(sum(script(t) == "Hant" for t in books) / len(books), 4),
        },
        "zhwiki_unlabelled_split": dict(Counter(script(t) for t in zhwiki)),
    }


def accuracy_main() -> dict:
    from stages.langid import LangID, LangIDConfig

    stage = LangID(LangIDConfig(min_score=0.0))
    corpus = [row for shard in corpus_shards() for row in pq.read_table(shard).to_pylist()]
    docs = [r for r in corpus if r["category"] != "code"]
    return {
        "sentences": sentence_accuracy(stage, langid_dev()),
        "documents": document_accuracy(stage, docs),
        "script": script_accuracy(corpus),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["throughput", "accuracy"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = throughput_main(args.repeats) if args.what == "throughput" else accuracy_main()
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.what == "accuracy":
        print(comparison_table(results))
    print(f"written to {save_results(f'langid_{args.what}', results)}")


if __name__ == "__main__":
    main()
