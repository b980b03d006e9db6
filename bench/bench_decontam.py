"""Decontamination and PII: recall on planted benchmark text, false flags, speed, index size.

    python bench/bench_decontam.py                      # every section
    python bench/bench_decontam.py recall speed         # some of them: recall, speed, index, cjk

- ``recall``: GSM8K test questions, HumanEval prompts and prompt+solution planted into 500
  corpus-dev documents, as a paragraph inside the page, verbatim and with whitespace, case,
  punctuation and all three edits (``plant``); recall per variant, and every document of the
  unplanted corpus-dev the stage flags, with the n-gram that matched.
- ``speed``: MB/s on one core of the decontaminate stage (``process``, and ``prepare``'s corpus
  pass) and of the pii stage over corpus-dev, next to datatrove's ``PIIFormatter`` in the same run.
- ``index``: build time, file size and memory of the index for GSM8K + HumanEval and for a
  synthetic benchmark of 10 million n-grams, and lookup speed against the large one.
- ``cjk``: how the CJK n-gram length was chosen: Chinese Wikipedia paragraphs (quality-dev gold,
  pages reserved out of corpus-dev) as a pseudo-benchmark against corpus-dev's Chinese documents
  (false flags per n) and planted with character edits (recall per n).

Results go to ``bench/results/decontam_<section>.json``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import corpus_shards, document_table, save_results, single_core  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DECONTAM = SHARED / "decontam"
VARIANTS = ("verbatim", "whitespace", "case", "punctuation", "all_edits")


def benchmarks_config(**overrides):
    from stages.decontaminate import DecontaminateConfig

    return DecontaminateConfig(benchmarks=[
        {"name": "gsm8k", "path": str(DECONTAM / "gsm8k_test.jsonl.gz"), "fields": ["question", "answer"], "id_field": "id"},
        {"name": "humaneval", "path": str(DECONTAM / "humaneval.jsonl.gz"), "fields": ["prompt+canonical_solution"],
         "id_field": "task_id"}], **overrides)


def planted_items() -> list[tuple[str, str, str]]:
    """(benchmark, item id, text): every GSM8K question, every HumanEval prompt and prompt+solution."""
    items = []
    with gzip.open(DECONTAM / "gsm8k_test.jsonl.gz", "rt") as handle:
        items += [("gsm8k", row["id"], row["question"]) for row in map(json.loads, handle)]
    with gzip.open(DECONTAM / "humaneval.jsonl.gz", "rt") as handle:
        for row in map(json.loads, handle):
            items += [("humaneval", row["task_id"], row["prompt"]),
                      ("humaneval", row["task_id"], row["prompt"] + row["canonical_solution"])]
    return items


def edit(text: str, variant: str, rng: random.Random) -> str:
    """One kind of edit a copy picks up on the way into a crawl."""
    if variant in ("whitespace", "all_edits"):  # re-wrapped, indentation lost, doubled spaces
        words = text.split()
        lines, line = [], []
        for word in words:
            line.append(word)
            if rng.random() < 0.08:
                lines.append(("  " if rng.random() < 0.5 else " ").join(line))
                line = []
        text = "\n".join(lines + [" ".join(line)])
    if variant in ("case", "all_edits"):
        text = rng.choice([str.upper, str.lower, str.title])(text)
    if variant in ("punctuation", "all_edits"):  # each mark dropped, or swapped for another, half the time
        marks = string.punctuation + "’“”"
        text = "".join((rng.choice(["", " ", ",", ".", ";"]) if c in marks and rng.random() < 0.5 else c) for c in text)
    return text


def plant(table: pa.Table, rows: list[int], items, seed: int = 18) -> tuple[pa.Table, list[dict]]:
    """Insert one item into each of ``rows`` of a document table, as a paragraph in the middle of
    the page (cycling through ``VARIANTS``); returns the new table and what went where."""
    rng = random.Random(seed)
    texts = table.column("text").to_pylist()
    ids = table.column("id").to_pylist()
    planted = []
    for k, row in enumerate(rows):
        bench, item, text = items[(k * 7919) % len(items)]
        variant = VARIANTS[k % len(VARIANTS)]
        copy = text if variant == "verbatim" else edit(text, variant, rng)
        paragraphs = texts[row].split("\n")
        cut = len(paragraphs) // 2
        texts[row] = "\n".join(paragraphs[:cut] + ["", copy, ""] + paragraphs[cut:])
        planted.append({"id": ids[row], "benchmark": bench, "item": item, "variant": variant})
    return table.set_column(table.column_names.index("text"), "text", pa.array(texts, pa.string())), planted


class LocalContext:
    """A PrepareContext for one process: an in-process map and a temporary scratch directory."""

    def __new__(cls, inputs: dict[str, str], scratch: str):
        import pyarrow.fs as pafs

        from pipeline.stage import PrepareContext

        os.makedirs(scratch, exist_ok=True)
        return PrepareContext(inputs=inputs, scratch=scratch, filesystem=pafs.LocalFileSystem(),
                              map=lambda fn, items: [fn(item) for item in items], log=lambda m: None)


def run_stage(config, tables: list[pa.Table], work: Path) -> tuple[list, float, float, float]:
    """prepare + begin_shard + process over the tables (written as Parquet shards, as the runner
    does); returns (outputs, prepare seconds, process seconds, text MB)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from stages.decontaminate import Decontaminate

    Decontaminate.ensure_assets(config, lambda m: None)
    inputs = {}
    work.mkdir(parents=True, exist_ok=True)
    for i, table in enumerate(tables):
        path = work / f"part-{i:05d}.parquet"
        pq.write_table(table, path)
        inputs[path.stem] = str(path)
    stage = Decontaminate(config)
    scratch = str(work / "_scratch")
    started = time.process_time()
    stage.prepare(LocalContext(inputs, scratch))
    prepare_seconds = time.process_time() - started
    outputs, process_seconds, megabytes = [], 0.0, 0.0
    for name, path in inputs.items():
        table = pq.read_table(path)
        megabytes += sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
        started = time.process_time()
        stage.begin_shard(name, scratch, pafs.LocalFileSystem())
        outputs.append(stage.process(table))
        process_seconds += time.process_time() - started
    return outputs, prepare_seconds, process_seconds, megabytes


def section_recall(args) -> dict:
    tables = [document_table(shard) for shard in corpus_shards()]
    items = planted_items()
    with tempfile.TemporaryDirectory() as tmp:
        config = benchmarks_config(index_path=f"{tmp}/index.npz")
        clean, _, _, _ = run_stage(config, tables, Path(tmp) / "clean")
        flagged = [{"id": row["id"], "contamination": json.loads(row["contamination"])}
                   for out in clean for row in out.removed.to_pylist()]
        docs = sum(t.num_rows for t in tables)
        rng = random.Random(18)
        per_shard = [500 // len(tables) + (i < 500 % len(tables)) for i in range(len(tables))]
        hosts = [sorted(rng.sample(range(t.num_rows), k)) for t, k in zip(tables, per_shard)]
        planted_tables, planted = [], []
        for table, rows in zip(tables, hosts):
            new, info = plant(table, rows, items[len(planted):] + items[:len(planted)], seed=len(planted))
            planted_tables.append(new)
            planted += info
        outs, _, _, _ = run_stage(config, planted_tables, Path(tmp) / "planted")
    found = {row["id"]: json.loads(row["contamination"]) for out in outs for row in out.removed.to_pylist()}
    per_variant = {}
    missed = []
    for p in planted:
        hit = any(e["benchmark"] == p["benchmark"] and e["item"] == p["item"] for e in found.get(p["id"], []))
        per_variant.setdefault(p["variant"], []).append(hit)
        if not hit:
            missed.append(p)
    result = {
        "planted_docs": len(planted),
        "recall": {v: round(sum(h) / len(h), 4) for v, h in per_variant.items()},
        "recall_edited": round(sum(sum(h) for v, h in per_variant.items() if v != "verbatim")
                               / sum(len(h) for v, h in per_variant.items() if v != "verbatim"), 4),
        "missed": missed,
        "unplanted_docs": docs, "flagged_unplanted": len(flagged),
        "flagged_unplanted_rate": round(len(flagged) / docs, 6),
        "flagged": [{"id": f["id"], "benchmark": f["contamination"][0]["benchmark"],
                     "item": f["contamination"][0]["item"], "ngram": f["contamination"][0]["ngram"]} for f in flagged],
    }
    return result


def section_speed(args) -> dict:
    from datatrove.pipeline.formatters import PIIFormatter

    from stages.pii import PII, PIIConfig

    single_core()
    tables = [document_table(shard) for shard in corpus_shards()]
    megabytes = sum(len(t.encode()) for table in tables for t in table.column("text").to_pylist()) / 1e6
    result = {"text_mb": round(megabytes, 2), "docs": sum(t.num_rows for t in tables), "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        config = benchmarks_config(index_path=f"{tmp}/index.npz")
        runs = [run_stage(config, tables, Path(tmp) / f"run{r}")[1:3] for r in range(args.repeats)]
    prepare_s = float(np.median([r[0] for r in runs]))
    process_s = float(np.median([r[1] for r in runs]))
    result["decontaminate"] = {"process_cpu_s": round(process_s, 2), "process_mb_s": round(megabytes / process_s, 2),
                               "prepare_cpu_s": round(prepare_s, 2), "prepare_mb_s": round(megabytes / prepare_s, 2),
                               "stage_mb_s": round(megabytes / (process_s + prepare_s), 2)}
    stage, formatter = PII(PIIConfig()), PIIFormatter()
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, same process, same core
        started = time.process_time()
        for table in tables:
            stage.process(table)
        ours.append(time.process_time() - started)
        started = time.process_time()
        for table in tables:
            for text in table.column("text").to_pylist():
                formatter.format(text)
        theirs.append(time.process_time() - started)
    result["pii"] = {"cpu_s": round(float(np.median(ours)), 2), "mb_s": round(megabytes / float(np.median(ours)), 2),
                     "kinds": "email, IPv4/IPv6, phone, cn_id, credit_card; spans column"}
    result["datatrove_pii_formatter"] = {"cpu_s": round(float(np.median(theirs)), 2),
                                         "mb_s": round(megabytes / float(np.median(theirs)), 2),
                                         "kinds": "email, IPv4 (public only)"}
    return result


def synthetic_benchmark(path: Path, ngrams: int, words_per_item: int = 200, seed: int = 18) -> None:
    """A JSONL benchmark of random words (50,000-word vocabulary) with about ``ngrams`` 13-grams."""
    rng = np.random.default_rng(seed)
    vocab = np.array(["".join(chr(97 + c) for c in rng.integers(0, 26, rng.integers(3, 10))) for _ in range(50_000)])
    items = -(-ngrams // (words_per_item - 12))
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(items):
            handle.write(json.dumps({"id": f"synthetic/{i}", "question": " ".join(vocab[rng.integers(0, len(vocab), words_per_item)])}) + "\n")


def section_index(args) -> dict:
    import resource

    from stages.decontaminate import Decontaminate, DecontaminateConfig
    from stages.decontaminate.index import load_index

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = benchmarks_config(index_path=f"{tmp}/small.npz")
        started = time.perf_counter()
        Decontaminate.ensure_assets(config, lambda m: None)
        result["gsm8k_humaneval"] = {"build_s": round(time.perf_counter() - started, 3),
                                     "ngrams": load_index(config.index_path).meta["distinct_ngrams"],
                                     "file_mb": round(os.path.getsize(config.index_path) / 1e6, 2)}
        source = Path(tmp) / "synthetic.jsonl"
        synthetic_benchmark(source, args.synthetic_ngrams)
        big = DecontaminateConfig(index_path=f"{tmp}/big.npz", benchmarks=[
            {"name": "synthetic", "path": str(source), "fields": ["question"], "id_field": "id"}])
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        Decontaminate.ensure_assets(big, lambda m: None)
        build = time.perf_counter() - started
        started = time.perf_counter()
        index = load_index(big.index_path)
        load = time.perf_counter() - started
        result["synthetic"] = {"ngrams": index.meta["distinct_ngrams"], "source_mb": round(source.stat().st_size / 1e6, 1),
                               "build_s": round(build, 2), "load_s": round(load, 2),
                               "file_mb": round(os.path.getsize(big.index_path) / 1e6, 1),
                               "in_memory_mb": round((index.hashes.nbytes + index.bench.nbytes + index.item.nbytes
                                                      + index.bitmap.nbytes) / 1e6, 1),
                               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                               "peak_rss_before_mb": round(rss_before / 1024, 1)}
        tables = [document_table(shard) for shard in corpus_shards()[:4]]
        _, _, process_s, megabytes = run_stage(big.model_copy(update={"frequency_cap": None}), tables, Path(tmp) / "lookup")
        result["synthetic"]["process_mb_s_4_shards"] = round(megabytes / process_s, 2)
    return result


def section_cjk(args) -> dict:
    """False flags and recall of CJK character n-grams for several n (see module docstring)."""
    from stages.decontaminate import DecontaminateConfig

    with gzip.open(SHARED / "quality-dev" / "gold.jsonl.gz", "rt") as handle:
        gold = [row for row in map(json.loads, handle) if row["lang"] == "zh" and row["source"].startswith("zhwiki")]
    pseudo = gold[:2000]
    tables = [document_table(shard) for shard in corpus_shards()]
    zh = [t.filter(pa.array([json.loads(m)["lang"].startswith("zh") for m in t.column("meta").to_pylist()]))
          for t in tables]
    rng = random.Random(18)
    args.cjk_cap = args.cjk_cap or None
    result = {"frequency_cap": args.cjk_cap, "pseudo_benchmark_paragraphs": len(pseudo), "zh_docs": sum(t.num_rows for t in zh), "by_n": {}}
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "pseudo.jsonl"
        source.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in pseudo))
        hosts = zh[0].slice(0, 200)
        edited = []
        for k in range(200):  # one character in 12 replaced, punctuation swapped: a retyped copy
            chars = list(pseudo[k]["text"][:300])
            for i in range(len(chars)):
                if rng.random() < 1 / 12:
                    chars[i] = rng.choice("的了是在和有一不这为")
            edited.append("".join(chars).replace("，", ",").replace("。", "."))
        texts = [h + "\n" + e for h, e in zip(hosts.column("text").to_pylist(), edited)]
        planted = hosts.set_column(hosts.column_names.index("text"), "text", pa.array(texts))
        for n in args.cjk_sizes:
            config = DecontaminateConfig(index_path=f"{tmp}/cjk{n}.npz", cjk_ngram=n, frequency_cap=args.cjk_cap, benchmarks=[
                {"name": "zhwiki_pseudo", "path": str(source), "fields": ["text"], "id_field": "id"}])
            clean, _, _, _ = run_stage(config, zh, Path(tmp) / f"clean{n}")
            flagged = [row["id"] for out in clean for row in out.removed.to_pylist()]
            outs, _, _, _ = run_stage(config, [planted], Path(tmp) / f"planted{n}")
            result["by_n"][n] = {"false_flags": len(flagged), "false_flag_rate": round(len(flagged) / result["zh_docs"], 5),
                                 "recall_edited": round(outs[0].removed.num_rows / planted.num_rows, 4),
                                 "examples": flagged[:5]}
    return result


SECTIONS = {"recall": section_recall, "speed": section_speed, "index": section_index, "cjk": section_cjk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic-ngrams", type=int, default=10_000_000)
    parser.add_argument("--cjk-sizes", type=int, nargs="+", default=[10, 13, 15, 20, 25, 30])
    parser.add_argument("--cjk-cap", type=int, default=20, help="frequency_cap of the cjk section (0: none)")
    args = parser.parse_args()
    for name in args.sections:
        started = time.perf_counter()
        result = SECTIONS[name](args)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        path = save_results(f"decontam_{name}", result)
        print(json.dumps({k: v for k, v in result.items() if k not in ("missed", "flagged")}, indent=1)[:3000])
        if result.get("flagged"):
            print("flagged in unplanted corpus-dev:")
            for f in result["flagged"]:
                print(f"  {f['id']}: {f['benchmark']} {f['item']}: {f['ngram']!r}")
        print(f"-> {path}")


if __name__ == "__main__":
    main()
