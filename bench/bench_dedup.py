"""Dedup benchmarks, side by side with datatrove's 4-stage MinHash in the same run.

``quality``: on the seeded near-duplicate benchmark (``bench/dedup_benchmark_data.py``), precision,
recall and F1 of duplicate pairs and of clusters, for this stage (its defaults) and for datatrove
(its defaults: 5-grams, 14 buckets x 8 hashes). The truth: two documents are duplicates when the
Jaccard similarity of their shingle sets (this stage's shingles: word 5-grams, character 5-grams for
Chinese) reaches the configured threshold; clusters are the connected components of those pairs,
and pair metrics count every pair inside a true / predicted cluster. Pairs are checked within each
family of edited copies and for every pair either system predicts.

``speed``: on corpus-dev (12 shards, 17,619 documents, 58.9 MB), docs/s and MB/s per core of each
step and end to end, and each step's peak RSS, each step in a fresh single-threaded process,
median of ``--repeats``. Ours runs as the runner would with ``--no-ray`` (one core); datatrove
runs with LocalPipelineExecutor, one worker, one task per shard (per bucket in stage 2). Both get the
same tokens: datatrove's default English tokenizer needs spaCy (not installed), so it is handed
``ScriptTokenizer``: characters for Han/kana/Hangul/Thai text, whitespace-split words otherwise
(after its own simplify_text), the same shingles this stage uses. Datatrove's stage 4 writes the
kept and removed documents (JSONL) as ours writes Parquet, so both ends include output.

``speed --contenders ours_full --shards 4``: only the named contenders (any of
``datatrove_minhash``, ``ours_minhash_only``, ``ours_full``) on the first 4 shards, a few minutes
instead of most of an hour; run it from two checkouts to compare versions of ours.

``scaling``: ours on the first 3, 6 and 12 shards: how time and peak memory of each step grow.

    python bench/bench_dedup.py quality     # generates the benchmark data first if missing
    python bench/bench_dedup.py speed --repeats 3
    python bench/bench_dedup.py speed --contenders ours_full,ours_minhash_only --shards 4
    python bench/bench_dedup.py scaling
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from bench import dedup_benchmark_data  # noqa: E402
from bench.common import (  # noqa: E402
    RESULTS, Timer, corpus_shards, isolated, medians, save_results, text_megabytes, throughput,
    write_document_shards,
)
from bench.datatrove_tokenizers import ScriptTokenizer  # noqa: E402
from pipeline.stage import PrepareContext  # noqa: E402
from stages.dedup import Dedup, DedupConfig  # noqa: E402
from stages.dedup import minhash  # noqa: E402
from stages.dedup.steps import make_job, plan, run_step  # noqa: E402

BENCHMARK_DIR = RESULTS / "dedup-benchmark"
DATATROVE_CONFIG = {"n_grams": 5, "num_buckets": 14, "hashes_per_bucket": 8}


# ----------------------------------------------------------------------------- running ours

def _inputs(shards: list[Path]) -> dict[str, str]:
    return {path.stem: str(path) for path in shards}


def run_ours(shards: list[Path], work: Path, config: DedupConfig) -> dict[str, dict]:
    """Prepare and process every shard in this process; every row's decision by id."""
    stage = Dedup(config)
    stage.prepare(PrepareContext(inputs=_inputs(shards), scratch=str(work / "scratch"),
                                 filesystem=pafs.LocalFileSystem(), map=lambda fn, items: [fn(i) for i in items],
                                 log=lambda _: None))
    rows = {}
    for shard in shards:
        stage.begin_shard(shard.stem, str(work / "scratch"), pafs.LocalFileSystem())
        output = stage.process(pq.read_table(shard))
        for side in (output.kept, output.removed):
            for doc_id, cluster in zip(side["id"].to_pylist(), side["dup_cluster"].to_pylist()):
                rows[doc_id] = cluster
    return rows


def our_step(shards: list[str], scratch: str, config: dict, step_name: str) -> dict:
    """One prepare step, alone in this process (for its time and peak memory)."""
    job = make_job(DedupConfig(**config), _inputs([Path(s) for s in shards]), scratch, pafs.LocalFileSystem())
    step = next(s for s in plan(job) if s.name == step_name)
    with Timer() as timer:
        run_step(job, step, lambda fn, items: [fn(i) for i in items], lambda _: None)
    return {"wall_s": timer.wall, "cpu_s": timer.cpu}


def our_apply(shards: list[str], scratch: str, config: dict, out: str) -> dict:
    """The per-shard map as the runner does it: read, begin_shard + process, write kept and removed."""
    stage = Dedup(DedupConfig(**config))
    with Timer() as timer:
        for shard in shards:
            stage.begin_shard(Path(shard).stem, scratch, pafs.LocalFileSystem())
            output = stage.process(pq.read_table(shard))
            for side, table in (("kept", output.kept), ("removed", output.removed)):
                Path(out, side).mkdir(parents=True, exist_ok=True)
                pq.write_table(table, Path(out, side, Path(shard).name), compression="zstd")
    return {"wall_s": timer.wall, "cpu_s": timer.cpu}


# ----------------------------------------------------------------------------- running datatrove

def _datatrove_config():
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return MinhashConfig(**DATATROVE_CONFIG)


def datatrove_step(shards: list[str], work: str, stage: int) -> dict:
    """One of datatrove's four MinHash stages, alone in this process."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import JsonlWriter

    config = _datatrove_config()
    folder = str(Path(shards[0]).parent)  # the shards are every Parquet file there

    def reader():
        return ParquetReader(folder, glob_pattern="*.parquet", text_key="text", id_key="id")

    pipelines = {
        1: ([reader(), MinhashDedupSignature(f"{work}/signatures", config=config, language=ScriptTokenizer())],
            len(shards)),
        2: ([MinhashDedupBuckets(f"{work}/signatures", f"{work}/buckets", config=config)], config.num_buckets),
        3: ([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove_ids", config=config, save_cluster_id=True)], 1),
        4: ([reader(), MinhashDedupFilter(f"{work}/remove_ids", load_cluster_ids=True,
                                          exclusion_writer=JsonlWriter(f"{work}/removed")),
             JsonlWriter(f"{work}/kept")], len(shards)),
    }
    steps, tasks = pipelines[stage]
    Path(work).mkdir(parents=True, exist_ok=True)
    # Its per-task log sinks take sys.stderr as it is when they are added: send them to a file.
    with open(Path(work, "datatrove.log"), "a") as log, contextlib.redirect_stderr(log), Timer() as timer:
        LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=1, logging_dir=f"{work}/logs/{stage}",
                              skip_completed=False).run()
    return {"wall_s": timer.wall, "cpu_s": timer.cpu}


def datatrove_clusters(work: Path) -> dict[str, str | None]:
    """Every document's datatrove cluster id (None when not in a cluster), from stage 4's output."""
    clusters = {}
    for path in sorted(work.glob("kept/*.jsonl.gz")) + sorted(work.glob("removed/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                cluster = row["metadata"].get("minhash_cluster_id", -1)
                clusters[row["id"]] = None if cluster == -1 else str(cluster)
    return clusters


# ----------------------------------------------------------------------------- quality

def shingle_sets(table: pa.Table, config: DedupConfig) -> dict[str, set]:
    """Each document's set of 32-bit shingle hashes, with the stage's own shingling."""
    texts = table["text"].combine_chunks()
    by_chars = minhash.char_shingled(texts, table["lang"].combine_chunks(), config.char_ngram_langs)
    simplified = minhash.simplify(texts)
    ids = table["id"].to_pylist()
    sets = {}
    for chars, n in ((False, config.word_ngram), (True, config.char_ngram)):
        rows = np.flatnonzero(by_chars == chars)
        token_hashes, counts = minhash.tokens(simplified.take(pa.array(rows, pa.int64())), chars)
        values, per_doc = minhash.shingles(token_hashes, counts, n)
        for row, chunk in zip(rows, np.split(values, np.cumsum(per_doc)[:-1])):
            sets[ids[row]] = set(chunk.tolist())
    return sets


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _components(pairs: set[tuple[str, str]]) -> list[frozenset]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups = defaultdict(set)
    for x in parent:
        groups[find(x)].add(x)
    return [frozenset(g) for g in groups.values() if len(g) > 1]


def _pairs_within(clusters: list[frozenset]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for c in clusters for p in itertools.combinations(c, 2)}


def _predicted_clusters(assignment: dict[str, str | None]) -> list[frozenset]:
    groups = defaultdict(set)
    for doc_id, cluster in assignment.items():
        if cluster is not None:
            groups[cluster].add(doc_id)
    return [frozenset(g) for g in groups.values() if len(g) > 1]


def _prf(found: int, predicted: int, true: int) -> dict:
    precision = found / predicted if predicted else 1.0
    recall = found / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true": true, "predicted": predicted, "correct": found}


def score(predicted: list[frozenset], truth_clusters: list[frozenset]) -> dict:
    true_pairs, predicted_pairs = _pairs_within(truth_clusters), _pairs_within(predicted)
    true_set = set(truth_clusters)
    return {
        "pairs": _prf(len(true_pairs & predicted_pairs), len(predicted_pairs), len(true_pairs)),
        "clusters": _prf(sum(c in true_set for c in predicted), len(predicted), len(truth_clusters)),
    }


def quality(args) -> dict:
    if not (BENCHMARK_DIR / "truth.parquet").exists():
        dedup_benchmark_data.main(["--seed", str(args.seed)])
    shards = sorted((BENCHMARK_DIR / "shards").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(s) for s in shards])
    truth = pq.read_table(BENCHMARK_DIR / "truth.parquet").to_pylist()
    config = DedupConfig()
    sets = shingle_sets(table, config)
    systems = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in (("ours", {}), ("ours_no_verify", {"verify": False})):
            systems[name] = run_ours(shards, Path(tmp, name), DedupConfig(**overrides))
        work = Path(tmp, "datatrove")
        for stage in (1, 2, 3, 4):
            isolated(datatrove_step, [str(s) for s in shards], str(work), stage)
        systems["datatrove"] = datatrove_clusters(work)
    predicted = {name: _predicted_clusters(assignment) for name, assignment in systems.items()}
    families = defaultdict(list)
    for row in truth:
        if row["family"]:
            families[row["family"]].append(row["id"])
    candidates = {tuple(sorted(p)) for members in families.values() for p in itertools.combinations(members, 2)}
    for clusters in predicted.values():
        candidates |= _pairs_within(clusters)
    similar = {p for p in candidates if jaccard(sets[p[0]], sets[p[1]]) >= config.threshold}
    truth_clusters = _components(similar)
    lang_of = {row["id"]: row["lang"] for row in truth}
    report = {"threshold": config.threshold, "documents": len(truth), "true_similar_pairs": len(similar),
              "systems": {}}
    for name, clusters in predicted.items():
        report["systems"][name] = {"all": score(clusters, truth_clusters)}
        for lang in ("en", "zh"):
            keep = [c for c in clusters if lang_of[next(iter(c))] == lang]
            true_lang = [c for c in truth_clusters if lang_of[next(iter(c))] == lang]
            report["systems"][name][lang] = score(keep, true_lang)
        report["systems"][name]["variant_recall_by_edit"] = _by_edit(truth, systems[name], sets)
    return report


def _by_edit(truth: list[dict], assignment: dict, sets: dict) -> dict:
    """Per edit kind and rate: mean Jaccard to the original, share found in the original's cluster."""
    groups = defaultdict(list)
    for row in truth:
        if row["family"] and row["kind"] != "original":
            together = assignment.get(row["id"]) is not None and \
                assignment.get(row["id"]) == assignment.get(row["family"])
            groups[f"{row['lang']}/{row['kind']}/{row['rate']}"].append(
                (jaccard(sets[row["id"]], sets[row["family"]]), together))
    return {key: {"mean_jaccard": round(float(np.mean([j for j, _ in v])), 3),
                  "found": round(float(np.mean([t for _, t in v])), 3), "n": len(v)}
            for key, v in sorted(groups.items())}


# ----------------------------------------------------------------------------- speed and scaling

OUR_FULL = {}
OUR_MINHASH_ONLY = {"exact_documents": False, "paragraphs": False}


def _ours_once(shards: list[str], config: dict, tmp: Path) -> dict:
    scratch = str(tmp / "scratch")
    job = make_job(DedupConfig(**config), _inputs([Path(s) for s in shards]), scratch, pafs.LocalFileSystem())
    steps = {step.name: isolated(our_step, shards, scratch, config, step.name) for step in plan(job)}
    steps["apply"] = isolated(our_apply, shards, scratch, config, str(tmp / "out"))
    shutil.rmtree(tmp)
    return steps


def _datatrove_once(shards: list[str], tmp: Path) -> dict:
    names = {1: "1 signatures", 2: "2 buckets", 3: "3 cluster", 4: "4 filter"}
    steps = {names[s]: isolated(datatrove_step, shards, str(tmp), s) for s in (1, 2, 3, 4)}
    shutil.rmtree(tmp)
    return steps


def _summarise(runs: list[dict], docs: int, megabytes: float) -> dict:
    steps = {}
    for name in runs[0]:
        merged = medians([run[name] for run in runs])
        merged.update({f"{k}_wall": v for k, v in throughput(docs, megabytes, merged["wall_s"]).items()})
        merged.update({f"{k}_cpu": v for k, v in throughput(docs, megabytes, merged["cpu_s"]).items()})
        steps[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in merged.items()}
    totals = [sum(run[name]["wall_s"] for name in run) for run in runs]
    cpu = [sum(run[name]["cpu_s"] for name in run) for run in runs]
    end_to_end = {"wall_s": round(float(np.median(totals)), 3), "cpu_s": round(float(np.median(cpu)), 3),
                  "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values())}
    end_to_end.update({f"{k}_wall": v for k, v in throughput(docs, megabytes, end_to_end["wall_s"]).items()})
    end_to_end.update({f"{k}_cpu": v for k, v in throughput(docs, megabytes, end_to_end["cpu_s"]).items()})
    return {"steps": steps, "end_to_end": end_to_end}


CONTENDERS = {
    "datatrove_minhash": lambda shards, tmp: _datatrove_once(shards, tmp),
    "ours_minhash_only": lambda shards, tmp: _ours_once(shards, OUR_MINHASH_ONLY, tmp),
    "ours_full": lambda shards, tmp: _ours_once(shards, OUR_FULL, tmp),
}


def speed(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        shards = [str(p) for p in write_document_shards(corpus_shards()[:args.shards], Path(tmp, "corpus"))]
        table = pa.concat_tables([pq.read_table(s, columns=["text"]) for s in shards])
        docs, megabytes = table.num_rows, text_megabytes(table)
        runs = defaultdict(list)
        for repeat in range(args.repeats):
            # Interleaved, so load from other users of the machine hits all contenders alike.
            for name in args.contenders:
                runs[name].append(CONTENDERS[name](shards, Path(tmp, f"{name}-{repeat}")))
    report = {"docs": docs, "text_mb": round(megabytes, 2), "shards": len(shards),
              "contenders": {name: _summarise(r, docs, megabytes) for name, r in runs.items()}}
    if "datatrove_minhash" not in report["contenders"]:
        return report
    base = report["contenders"]["datatrove_minhash"]["end_to_end"]
    for name, contender in report["contenders"].items():
        contender["end_to_end"]["speedup_vs_datatrove_cpu"] = round(base["cpu_s"] / contender["end_to_end"]["cpu_s"], 2)
        contender["end_to_end"]["speedup_vs_datatrove_wall"] = round(base["wall_s"] / contender["end_to_end"]["wall_s"], 2)
    return report


def scaling(args) -> dict:
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        all_shards = [str(p) for p in write_document_shards(corpus_shards(), Path(tmp, "corpus"))]
        for count in (3, 6, 12):
            shards = all_shards[:count]
            table = pa.concat_tables([pq.read_table(s, columns=["text"]) for s in shards])
            runs = [_ours_once(shards, OUR_FULL, Path(tmp, f"s{count}-{r}")) for r in range(args.repeats)]
            summary = _summarise(runs, table.num_rows, text_megabytes(table))
            report[f"{count}_shards"] = {
                "docs": table.num_rows, "text_mb": round(text_megabytes(table), 2),
                "end_to_end": summary["end_to_end"],
                "steps": {name: {k: s[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")}
                          for name, s in summary["steps"].items()},
            }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "speed", "scaling"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the near-duplicate benchmark data")
    parser.add_argument("--shards", type=int, default=None, help="speed: only the first N corpus shards")
    parser.add_argument("--out", help="results as bench/results/OUT.json (default: dedup_<what>)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        type=lambda names: [n for n in names.split(",") if n],
                        help=f"speed: comma-separated, of {', '.join(CONTENDERS)}")
    args = parser.parse_args()
    if unknown := set(args.contenders) - set(CONTENDERS):
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    report = {"quality": quality, "speed": speed, "scaling": scaling}[args.what](args)
    path = save_results(args.out or f"dedup_{args.what}", report)
    print(json.dumps(report, indent=2))
    print(f"saved to {path}")


if __name__ == "__main__":
    main()
