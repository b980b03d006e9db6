"""Paragraph-level dedup tasks: hash the paragraphs of surviving documents (map), find repeats
(reduce), find cluster keepers left too short by them (map), and turn them into per-document line
drops (map, in ``steps.decide_shard``).

Runs after document dedup, over the documents it kept, so a paragraph is never removed because it
also appeared in a document that was itself dropped as a duplicate. A cluster keeper that paragraph
dedup leaves too short is reported (``find_short_keepers``) so that the next keeper round chooses
another member of its cluster: the cluster's removed duplicates must point at a document that stays.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from stages.dedup import text
from stages.dedup.documents import BARRED, CLUSTERS, DOCS
from stages.dedup.shuffle import Job, batches, gather, partition, shard_range, write_sorted

REASON_SHORT = "too_short_after_paragraph_dedup"

PARAGRAPHS = "paragraphs"  # <shard>.parquet: part, hash, doc, para, chars
REMOVALS = "paragraph-removals"  # <partition>.parquet: doc, para, chars


def hash_paragraphs(task: tuple[Job, int]) -> None:
    """Per shard: one row per paragraph of every document that survived document dedup."""
    job, shard = task
    config = job.config
    clusters = storage.read_parquet(job.filesystem, job.path(CLUSTERS, shard))
    removed = clusters.filter(pc.is_valid(clusters["reason"]))["doc"].to_numpy()
    skipped_categories = pa.array(config.paragraph_skip_categories, pa.string())
    parts = []
    for doc, batch in batches(job, shard, ["text", "category"]):
        skipped = pc.is_in(pc.fill_null(batch["category"], ""), value_set=skipped_categories)
        eligible = ~np.isin(doc, removed) & ~skipped.to_numpy(zero_copy_only=False)
        found = text.paragraphs(batch["text"].combine_chunks().filter(pa.array(eligible)),
                                config.paragraph_min_chars, config.paragraph_exempt)
        parts.append(_paragraph_rows(job, found.hash, doc[eligible][found.row], found.index, found.chars))
    table = pa.concat_tables(parts) if parts else _paragraph_rows(
        job, np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64))
    write_sorted(job, job.path(PARAGRAPHS, shard), table, config.partitions)


def _paragraph_rows(job: Job, hashes, doc, para, chars) -> pa.Table:
    return pa.table({
        "part": pa.array(partition(hashes, job), pa.int32()),
        "hash": pa.array(hashes, pa.uint64()),
        "doc": pa.array(doc, pa.int64()),
        "para": pa.array(para, pa.int32()),
        "chars": pa.array(chars, pa.int64()),
    })


def find_repeated_paragraphs(task: tuple[Job, int]) -> None:
    """Per partition: every occurrence of a paragraph in a document after the first one's."""
    job, part = task
    rows = gather(job, job.paths(PARAGRAPHS, len(job.shards)), part, part + 1)
    hashes, doc, para = (rows[c].to_numpy() for c in ("hash", "doc", "para"))
    order = np.lexsort((para, doc, hashes))
    hashes, doc = hashes[order], doc[order]
    starts = np.ones(len(doc), bool)
    starts[1:] = hashes[1:] != hashes[:-1]
    first_doc = doc[np.maximum.accumulate(np.where(starts, np.arange(len(doc)), 0))]
    # Repeats inside the first document stay: within-document repetition is the rules stage's call.
    later = pa.array(doc != first_doc)
    removals = rows.take(pa.array(order)).filter(later).select(["doc", "para", "chars"])
    write_sorted(job, job.path(REMOVALS, part), removals, len(job.shards))


def line_drops(job: Job, shard: int) -> dict[int, tuple[str, list[int], bool]]:
    """Per document of a shard that loses paragraphs: (id, line indices, too short afterwards)."""
    low, high = shard_range(shard)
    removals = gather(job, job.paths(REMOVALS, job.config.partitions), low, high)
    if removals.num_rows == 0:
        return {}
    lost = removals.group_by("doc").aggregate([("para", "list"), ("chars", "sum"), ("para", "count")])
    attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard))
    # The docs file has one row per document in row order: a document's row there is doc - low.
    rows = pa.array(lost["doc"].to_numpy() - low)
    drops = {}
    for doc, doc_id, chars, paras, lost_chars, count in zip(
            lost["doc"].to_pylist(), attributes["id"].take(rows).to_pylist(),
            attributes["chars"].take(rows).to_pylist(), lost["para_list"].to_pylist(),
            lost["chars_sum"].to_pylist(), lost["para_count"].to_pylist()):
        # Each dropped line takes its line break with it.
        left = chars - lost_chars - count
        drops[doc] = (doc_id, sorted(paras), left < job.config.min_chars_after_paragraph_dedup)
    return drops


def find_short_keepers(task: tuple[Job, int]) -> None:
    """Per shard: the cluster keepers of this round that lose so much to paragraph dedup that they
    would be removed (``REASON_SHORT``); written to ``too-short-keepers/``, empty when none."""
    job, shard = task
    clusters = storage.read_parquet(job.filesystem, job.path(CLUSTERS, shard))
    keepers = clusters.filter(clusters["keeper"])["doc"].to_numpy()
    short = np.array(sorted(doc for doc, (_, _, too_short) in line_drops(job, shard).items() if too_short),
                     dtype=np.int64)
    barred = short[np.isin(short, keepers)]
    storage.write_parquet(job.filesystem, job.path(BARRED, shard), pa.table({"doc": pa.array(barred, pa.int64())}))
