"""BPE tokenizer training: sentencepiece (ours) next to Hugging Face `tokenizers`, same sample, same run.

    python bench/bench_tokenizer.py [--sizes 50 100] [--vocab 65536] [--threads 2] [--repeats 1]

For each sample size (MB of text): draw the sample once with tokenizer.sample (timed, in its own
process), then train, in a fresh process each (so peak memory is that trainer's alone):

- ours: tokenizer.train.train_sentencepiece, the settings `train_tokenizer` uses;
- tokenizers: a byte-level BPE (GPT-2 pre-tokenizer, digits split), the `tokenizers` default for
  LLMs, same vocabulary size and special tokens, on the same sample file.

Both are then measured on the same held-out documents (never trained on): bytes and characters per
token overall, per language and per category; round-trip exactness; encoding speed; for ours also
whether the exported tokenizer.json gives the same ids.

Data: the 50 MB point samples ../shared/data/corpus-dev alone (58.9 MB). corpus-dev is too small
for 100 MB, so the 100 MB point adds every other text of ../shared/data (quality-dev gold and junk,
web-dev, langid-dev sentences grouped by language: ~41.7 MB), decontamination sets excluded; its
sample is all that text minus the held-out 1%, so a little under 100 MB (the report gives the size).
Thread counts: both trainers get --threads (RAYON_NUM_THREADS for tokenizers). Results go to
bench/results/tokenizer.json.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from common import CATEGORY_NAMES, SHARED, Timer, corpus_shards, isolated, medians, save_results  # noqa: E402

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
LANGID_LINES_PER_DOC = 100
TOP_LANGS = ("en", "zh", "de", "fr", "es", "ja")


# --- inputs ------------------------------------------------------------------------------------


def write_table(rows: list[dict], path: Path) -> str:
    from pipeline.stage import DOCUMENT_SCHEMA

    schema = DOCUMENT_SCHEMA.append(pa.field("lang", pa.string()))
    columns = {name: [row.get(name, "{}" if name == "meta" else "") for row in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path, compression="zstd", row_group_size=1000)
    return str(path)


def corpus_dev_inputs(directory: Path) -> tuple[list[str], int]:
    """corpus-dev in the document schema, keeping its `lang` column (what langid would add);
    returns the shard paths and the text bytes."""
    paths, size = [], 0
    for shard in corpus_shards():
        rows = pq.read_table(shard).to_pylist()
        for row in rows:
            row["category"] = CATEGORY_NAMES.get(row["category"], row["category"])
            size += len(row["text"].encode())
        paths.append(write_table(rows, directory / f"corpus-{shard.name}"))
    return paths, size


def extra_inputs(directory: Path) -> list[str]:
    """The rest of ../shared/data's text (not the decontamination sets), as document shards."""
    paths = []
    for name in ("quality-dev/gold.jsonl.gz", "quality-dev/junk.jsonl.gz", "web-dev.jsonl.gz"):
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines]
        for row in rows:
            row["id"] = f"{name}/{row['id']}"
            row["category"] = row.get("category") or _category_of(row["source"])
        paths.append(write_table(rows, directory / (name.replace("/", "-") + ".parquet")))
    by_lang: dict[str, list[str]] = {}
    with gzip.open(SHARED / "langid-dev.tsv.gz", "rt", encoding="utf-8") as lines:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for lang, text, _unit in reader:
            by_lang.setdefault(lang, []).append(text)
    rows = [
        {"id": f"langid-dev/{lang}/{start}", "text": "\n".join(texts[start:start + LANGID_LINES_PER_DOC]),
         "source": "langid-dev", "category": "web", "lang": lang}
        for lang, texts in sorted(by_lang.items())
        for start in range(0, len(texts), LANGID_LINES_PER_DOC)
    ]
    paths.append(write_table(rows, directory / "langid-dev.parquet"))
    return paths


def _category_of(source: str) -> str:
    if "wiki" in source:
        return "encyclopedia"
    if "gutenberg" in source:
        return "books"
    return "web" if "commoncrawl" in source or "reviews" in source else "others"


# --- contenders (each runs in a fresh process) -------------------------------------------------


def sample_in_process(config_json: str, shards: list[str], sample_dir: str, heldout_path: str) -> dict:
    from tokenizer.config import TokenizerConfig
    from tokenizer.sample import draw_sample

    with Timer() as timer:
        result = draw_sample(TokenizerConfig.model_validate_json(config_json), shards, sample_dir,
                             log=lambda _: None)
    Path(heldout_path).write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in result.heldout))
    corpus_mb = result.stats["corpus"]["bytes"] / 1e6
    return {"stats": result.stats, "parts": result.parts, "wall_s": timer.wall, "cpu_s": timer.cpu,
            "corpus_mb_per_s": corpus_mb / timer.wall, "corpus_docs": result.stats["corpus"]["docs"]}


def sentencepiece_in_process(config_json: str, parts: list[str], heldout_path: str, out_dir: str) -> dict:
    from tokenizer.config import TokenizerConfig
    from tokenizer.evaluate import measure
    from tokenizer.export_hf import export_hf
    from tokenizer.load import Tokenizer
    from tokenizer.train import train_sentencepiece

    config = TokenizerConfig.model_validate_json(config_json)
    with Timer() as timer:
        model = train_sentencepiece(config, parts, threads=config.num_threads)
    Path(out_dir, "tokenizer.model").write_bytes(model)
    tokenizer = Tokenizer(model, config.eod_token)
    documents = _read_jsonl(heldout_path)
    texts = [d["text"] for d in documents]
    with Timer() as encode:
        encoded = tokenizer.encode(texts, num_threads=1)
    evaluation = measure(tokenizer, documents, export_hf(model))
    return {
        "train_wall_s": timer.wall, "train_cpu_s": timer.cpu, "vocab_size": tokenizer.vocab_size,
        "encode_mb_per_s_1_thread": sum(len(t.encode()) for t in texts) / 1e6 / encode.wall,
        "compression": compression(documents, encoded),
        "round_trip_failures": evaluation["round_trip"]["failures"],
        "unknown_tokens": evaluation["unknown_tokens"],
        "hf_export_mismatches": evaluation["hf_export"]["failures"],
        "vocabulary": evaluation["vocabulary"],
    }


def tokenizers_in_process(vocab: int, parts: list[str], heldout_path: str, out_dir: str) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    with Timer() as timer:
        tokenizer.train(parts, trainer)
    tokenizer.save(str(Path(out_dir, "hf-bytelevel.json")))
    documents = _read_jsonl(heldout_path)
    texts = [d["text"] for d in documents]
    with Timer() as encode:
        encoded = [tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
    decoded = tokenizer.decode_batch(encoded, skip_special_tokens=False)
    return {
        "train_wall_s": timer.wall, "train_cpu_s": timer.cpu, "vocab_size": tokenizer.get_vocab_size(),
        "encode_mb_per_s_1_thread": sum(len(t.encode()) for t in texts) / 1e6 / encode.wall,
        "compression": compression(documents, encoded),
        "round_trip_failures": sum(1 for a, b in zip(decoded, texts) if a != b),
    }


def compression(documents: list[dict], encoded: list[list[int]]) -> dict:
    """Bytes and characters per token: overall, for the main languages, per category."""
    groups: dict[str, list[int]] = {}
    for document, ids in zip(documents, encoded):
        text = document["text"]
        for key in ("all", f"lang={document['lang']}", f"category={document['category']}"):
            counts = groups.setdefault(key, [0, 0, 0, 0])
            counts[0] += 1
            counts[1] += len(text.encode())
            counts[2] += len(text)
            counts[3] += len(ids)
    wanted = {"all", *(f"lang={lang}" for lang in TOP_LANGS)} | {k for k in groups if k.startswith("category=")}
    return {
        key: {"docs": docs, "bytes": size, "bytes_per_token": round(size / tokens, 4),
              "chars_per_token": round(chars / tokens, 4)}
        for key, (docs, size, chars, tokens) in sorted(groups.items())
        if key in wanted and tokens
    }


def _read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


# --- the run -----------------------------------------------------------------------------------


def run_size(megabytes: int, shards: list[str], args, tmp: Path) -> dict:
    from tokenizer.config import TokenizerConfig

    config = TokenizerConfig(vocab_size=args.vocab, sample_bytes=megabytes * 1_000_000,
                             num_threads=args.threads, holdout_fraction=0.01, eval_bytes=5_000_000)
    sample_dir, heldout_path = str(tmp / f"sample-{megabytes}"), str(tmp / f"heldout-{megabytes}.jsonl")
    sampled = isolated(sample_in_process, config.model_dump_json(), shards, sample_dir, heldout_path)
    stats, parts = sampled.pop("stats"), sampled.pop("parts")
    print(f"{megabytes} MB: sample {stats['sample']['bytes'] / 1e6:.1f} MB, {stats['sample']['docs']} docs, "
          f"held out {stats['heldout']['docs']} docs; sampling {sampled['wall_s']:.1f} s", flush=True)
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # inherited by the spawned tokenizers process
    runs: dict[str, list[dict]] = {"sentencepiece": [], "tokenizers": []}
    for repeat in range(args.repeats):
        runs["sentencepiece"].append(
            isolated(sentencepiece_in_process, config.model_dump_json(), parts, heldout_path, str(tmp)))
        runs["tokenizers"].append(isolated(tokenizers_in_process, args.vocab, parts, heldout_path, str(tmp)))
        for name, result in runs.items():
            print(f"  [{repeat + 1}/{args.repeats}] {name}: train {result[-1]['train_wall_s']:.1f} s wall, "
                  f"peak {result[-1]['peak_rss_mb']:.0f} MB, held-out "
                  f"{result[-1]['compression']['all']['bytes_per_token']:.3f} bytes/token", flush=True)
    contenders = {name: medians(results) for name, results in runs.items()}
    sample_mb = stats["sample"]["bytes"] / 1e6
    for result in contenders.values():
        result["train_mb_per_s"] = round(sample_mb / result["train_wall_s"], 3)
        result["train_mb_per_cpu_s"] = round(sample_mb / result["train_cpu_s"], 3)
    ours = contenders["sentencepiece"]["compression"]["all"]["bytes_per_token"]
    theirs = contenders["tokenizers"]["compression"]["all"]["bytes_per_token"]
    return {
        "sample_mb": round(sample_mb, 2), "sample_docs": stats["sample"]["docs"],
        "sample_lines": stats["sample"]["lines"], "long_lines_split": stats["sample"]["long_lines"],
        "heldout_docs": stats["heldout"]["docs"], "heldout_mb": round(stats["heldout"]["bytes"] / 1e6, 3),
        "sample_by_category_mb": {k: round(v["bytes"] / 1e6, 2) for k, v in stats["sample"]["by_category"].items()},
        "sampling": {"wall_s": round(sampled["wall_s"], 2), "corpus_mb_per_s": round(sampled["corpus_mb_per_s"], 1),
                     "corpus_docs_per_s": round(sampled["corpus_docs"] / sampled["wall_s"], 1),
                     "peak_rss_mb": round(sampled["peak_rss_mb"])},
        "contenders": contenders,
        "compression_ours_vs_tokenizers": round(ours / theirs - 1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100], help="sample sizes in MB")
    parser.add_argument("--vocab", type=int, default=65_536)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    results = {"vocab_size": args.vocab, "threads": args.threads, "cpu_count": os.cpu_count(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-tokenizer-") as tmp:
        tmp = Path(tmp)
        (tmp / "inputs").mkdir()
        corpus, corpus_bytes = corpus_dev_inputs(tmp / "inputs")
        # corpus-dev alone while it holds enough text (bar the 1% held out), else everything.
        fits = {size: size * 1_000_000 <= 0.99 * corpus_bytes for size in args.sizes}
        extra = [] if all(fits.values()) else extra_inputs(tmp / "inputs")
        started = time.perf_counter()
        for megabytes in args.sizes:
            shards = corpus if fits[megabytes] else corpus + extra
            results["sizes"][str(megabytes)] = run_size(megabytes, shards, args, tmp)
        results["total_wall_s"] = round(time.perf_counter() - started, 1)
    path = save_results("tokenizer", results)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
