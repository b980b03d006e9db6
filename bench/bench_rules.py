"""The rules stage against datatrove's Gopher + C4 + FineWeb filters, and what it drops on quality-dev.

    python bench/bench_rules.py throughput [--repeats 3] [--shards 2] [--baseline REF]
                                                                       # -> results/rules_throughput.json
    python bench/bench_rules.py quality                                # -> results/rules_quality.json

throughput: every contender reads the same corpus-dev shards (converted once, untimed, to the
pipeline's document schema plus the ``lang`` column langid would add, zstd Parquet), filters, and
writes kept and removed Parquet, in one process pinned to one core, each run in a fresh process (peak
memory is its own), repeats interleaved, medians reported:

- stage_datatrove_rules: stages.rules with datatrove's thresholds, order and line handling, the prose
  families on every category (code family off): the same rules datatrove runs, on the same documents;
- stage_default: stages.rules with its defaults (code rules for code, tuned thresholds);
- datatrove: ParquetReader -> GopherRepetitionFilter -> GopherQualityFilter -> C4QualityFilter ->
  FineWebQualityFilter -> ParquetWriter, defaults, an exclusion writer per filter (the stage writes
  its removed rows too); its English word tokenizer is spaCy, as shipped;
- datatrove_split_tokenizer: the same with a str.split / regex-sentence tokenizer instead of spaCy:
  datatrove's filter code alone, the fairest lower bound on its cost;
- with ``--baseline REF`` also stage_default@REF and stage_datatrove_rules@REF: the two stage
  contenders with ``stages/rules`` and ``pipeline`` as of git REF (e.g. HEAD, to time uncommitted
  changes against the last commit), interleaved with the others.

Decision agreement (same keep/drop) between stage_datatrove_rules and datatrove is reported for
English documents, where both apply the same rules; datatrove applies English rules to everything.

quality: the share of quality-dev gold (Wikipedia, Gutenberg) and junk (spam, CC snippets, reviews)
each configuration drops, per language and source, with the top reasons; every document is treated
as category ``web`` (all prose rules apply). Also the Chinese rows judged without CJK handling.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from common import (  # noqa: E402
    REPO,
    SHARED,
    Timer,
    corpus_shards,
    document_table,
    interleaved,
    isolated,
    quiet_datatrove,
    run_datatrove_filters,
    save_results,
    summarise,
    text_megabytes,
    with_source_lang,
    write_tables,
)

ALL_CATEGORIES = ["web", "encyclopedia", "books", "papers", "code", "others"]
# stages.rules set to datatrove 0.10.1's published defaults wherever the stage's defaults differ.
DATATROVE_THRESHOLDS = {
    "order": ["gopher_repetition", "gopher_quality", "c4", "fineweb", "code"],
    "gopher_repetition": {"categories": ALL_CATEGORIES},
    "gopher_quality": {
        "categories": ALL_CATEGORIES,
        "min_doc_words": 50,
        "min_stop_words": 2,
        "bullets": ["•", "-"],
    },
    "c4": {
        "categories": ALL_CATEGORIES,
        "min_num_sentences": 5,
        "terminal_punctuation": ".?!\"'",
        "resolve_wiki_conversion": False,
        "unwrap": False,
    },
    "fineweb": {"categories": ALL_CATEGORIES, "stop_chars": ".?!。！？．｡؟۔।॥։።၊။។៕‼‽⁇⁈⁉"},
    "code": {"enabled": False},
}


# --- throughput contenders (module level: each runs in a spawned process) -------------------------


def stage_run(shards: list[Path], out: Path, config: dict, code: Path | None = None) -> dict:
    """``code``: a directory holding another version of ``stages`` and ``pipeline`` to import instead
    (this runs in a fresh process, which has imported neither yet)."""
    if code is not None:
        sys.path.insert(0, str(code))
    from pipeline import storage
    from stages.rules import Rules, RulesConfig

    stage = Rules(RulesConfig(**config))
    fs, root = storage.resolve(str(out))
    kept, process_cpu = 0, 0.0
    with Timer() as run:
        for shard in shards:
            table = pq.read_table(shard)
            with Timer() as process:
                output = stage.process(table)
            process_cpu += process.cpu
            storage.write_parquet(fs, storage.join(root, "kept", shard.name), output.kept)
            storage.write_parquet(fs, storage.join(root, "removed", shard.name), output.removed)
            kept += output.kept.num_rows
    return {"wall_s": run.wall, "cpu_s": run.cpu, "process_cpu_s": process_cpu, "kept": kept}


def datatrove_run(shard_dir: Path, out: Path, split_tokenizer: bool) -> dict:
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove_tokenizers import SplitTokenizer

    quiet_datatrove()
    language = {"language": SplitTokenizer("en")} if split_tokenizer else {}

    def removed(name: str) -> ParquetWriter:
        return ParquetWriter(str(out / "removed" / name), compression="zstd")

    return run_datatrove_filters(shard_dir, [
        GopherRepetitionFilter(exclusion_writer=removed("gopher_repetition"), **language),
        GopherQualityFilter(exclusion_writer=removed("gopher_quality"), **language),
        C4QualityFilter(exclusion_writer=removed("c4"), **language),
        FineWebQualityFilter(exclusion_writer=removed("fineweb"), **language),
    ], out)


def checkout(ref: str, directory: Path) -> Path:
    """``stages`` and ``pipeline`` as of git ``ref``, extracted under ``directory``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", ref, "stages", "pipeline"],
        check=True, capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def throughput_main(repeats: int, shard_count: int, baseline: str | None = None) -> dict:
    shards = corpus_shards()[:shard_count]
    # What the rules stage sees in the pipeline: document schema plus ``lang`` (the source's label,
    # where langid would put its own).
    tables = [with_source_lang(document_table(shard)) for shard in shards]
    docs = sum(t.num_rows for t in tables)
    megabytes = sum(text_megabytes(t) for t in tables)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = write_tables(((shard.name, table) for shard, table in zip(shards, tables)), tmp / "in")
        contenders = {
            "stage_datatrove_rules": lambda out: isolated(stage_run, inputs, out, DATATROVE_THRESHOLDS),
            "stage_default": lambda out: isolated(stage_run, inputs, out, {}),
            "datatrove": lambda out: isolated(datatrove_run, tmp / "in", out, False),
            "datatrove_split_tokenizer": lambda out: isolated(datatrove_run, tmp / "in", out, True),
        }
        if baseline:
            code = checkout(baseline, tmp / "baseline")
            contenders[f"stage_datatrove_rules@{baseline}"] = lambda out: isolated(
                stage_run, inputs, out, DATATROVE_THRESHOLDS, code
            )
            contenders[f"stage_default@{baseline}"] = lambda out: isolated(stage_run, inputs, out, {}, code)
        runs = interleaved(contenders, repeats, tmp)
        english = {
            i
            for t in tables
            for i, lang in zip(t.column("id").to_pylist(), t.column("lang").to_pylist())
            if lang == "en"
        }
        agreement = {
            other: decision_agreement(tmp / "stage_datatrove_rules-0", tmp / f"{other}-0", english)
            for other in ("datatrove", "datatrove_split_tokenizer")
        }
    results = {
        "docs": docs,
        "text_mb": round(megabytes, 2),
        "shards": [s.name for s in shards],
        "contenders": summarise(runs, docs, megabytes),
    }
    contender = results["contenders"]
    for clock in ("wall_s", "cpu_s"):  # throughput ratios: > 1 means the stage is faster
        results[f"speed_ratios_{clock}"] = {
            f"{stage}_vs_{other}": round(contender[other][clock] / contender[stage][clock], 2)
            for stage in contender
            if stage.startswith("stage_")
            for other in contender
            if other.startswith("datatrove")
        }
    if baseline:  # > 1 means the working tree is faster than REF
        results["speed_ratios_vs_baseline_cpu_s"] = {
            stage: round(contender[f"{stage}@{baseline}"]["cpu_s"] / contender[stage]["cpu_s"], 2)
            for stage in ("stage_datatrove_rules", "stage_default")
        }
    results["english_decision_agreement_with_stage_datatrove_rules"] = agreement
    return results


def decision_agreement(stage_out: Path, datatrove_out: Path, ids: set[str]) -> dict:
    """Among ``ids``: the share both keep or both drop, and who drops what the other keeps."""

    def kept_ids(directory: Path) -> set[str]:
        tables = [pq.read_table(p, columns=["id"]) for p in directory.rglob("*.parquet")]
        return {doc_id for table in tables for doc_id in table.column("id").to_pylist()} & ids

    stage_kept, datatrove_kept = kept_ids(stage_out / "kept"), kept_ids(datatrove_out / "kept")
    return {
        "documents": len(ids),
        "agreement": round(sum((i in stage_kept) == (i in datatrove_kept) for i in ids) / len(ids), 4),
        "only_stage_drops": len(datatrove_kept - stage_kept),
        "only_datatrove_drops": len(stage_kept - datatrove_kept),
    }


# --- quality-dev drop rates ------------------------------------------------------------------------


def quality_rows() -> dict[str, list[dict]]:
    rows = {}
    for name in ("gold", "junk"):
        with gzip.open(SHARED / "quality-dev" / f"{name}.jsonl.gz", "rt", encoding="utf-8") as handle:
            rows[name] = [json.loads(line) for line in handle]
    return rows


def drop_table(config: dict, rows: list[dict]) -> dict:
    from stages.rules import Rules, RulesConfig

    table = pa.table(
        {
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "source": [r["source"] for r in rows],
            "category": ["web"] * len(rows),
            "meta": ["{}"] * len(rows),
            "lang": [r["lang"] for r in rows],
        }
    )
    with Timer() as run:
        output = Rules(RulesConfig(**config)).process(table)
    removed = output.removed.to_pylist()
    result = {"cpu_s": round(run.cpu, 2)}
    for key in ("lang", "source"):
        totals = Counter(f"{r['source']}|{r['lang']}" if key == "source" else r["lang"] for r in rows)
        drops = Counter(f"{r['source']}|{r['lang']}" if key == "source" else r["lang"] for r in removed)
        result[f"by_{key}"] = {
            k: {"docs": n, "dropped": drops[k], "share": round(drops[k] / n, 4)}
            for k, n in sorted(totals.items())
            if n >= 20
        }
    reasons = Counter((r["lang"], r["reason"]) for r in removed if r["lang"] in ("en", "zh"))
    result["top_reasons"] = {f"{lang} {reason}": n for (lang, reason), n in reasons.most_common(20)}
    return result


def quality_main() -> dict:
    rows = quality_rows()
    configs = {"default": {}, "datatrove_thresholds": DATATROVE_THRESHOLDS}
    results = {
        name: {kind: drop_table(config, rows[kind]) for kind in rows} for name, config in configs.items()
    }
    chinese = {kind: [r for r in rows[kind] if r["lang"] == "zh"] for kind in rows}
    results["zh_without_cjk_handling"] = {
        kind: drop_table({"cjk": {"langs": []}}, chinese[kind])["by_lang"] for kind in chinese
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["throughput", "quality"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=2, help="corpus-dev shards to time (datatrove is slow)")
    parser.add_argument("--baseline", metavar="REF", help="throughput: also time the stage as of this git ref")
    args = parser.parse_args()
    if args.what == "throughput":
        results = throughput_main(args.repeats, args.shards, args.baseline)
    else:
        results = quality_main()
    print(json.dumps(results, indent=2, ensure_ascii=False))
    print(f"written to {save_results(f'rules_{args.what}', results)}")


if __name__ == "__main__":
    main()
