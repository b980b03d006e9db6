"""Paragraph-level dedup: hash the paragraphs of every document once (in the signatures step's pass
over the text, ``steps.read_shard``), select each keeper round's rows from those hashes (map), find
repeats (reduce), find the cluster keepers left too short by them (map), and turn them into
per-document line drops (map, in ``steps.decide_shard``).

Paragraph dedup runs over the documents document dedup kept, so a paragraph is never removed because
it also appeared in a document that was itself dropped as a duplicate. Which documents those are
changes from keeper round to keeper round (``stages.dedup.steps``), and their text does not: so the
text is read and hashed once, for every document that can ever take part (``PARAGRAPH_HASHES``), and a
round only filters those hashes by its ``clusters/``.

A cluster keeper that paragraph dedup leaves too short is reported (``find_short_keepers``) so that
the next round chooses another member of its cluster: the cluster's removed duplicates must point at a
document that stays. In a cluster that already has such a barred member, the members that could keep
next (successors, ``clusters.fates``) ride along in the round's rows without taking part: each is
checked against the paragraphs of the documents taking part, and one that would be too short as a
keeper is reported too (``SHORT_SUCCESSORS``), so that the next round can bar a run of them at once.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.dedup import exchange, text
from stages.dedup.documents import BARRED, CLUSTERS, DOCS
from stages.dedup.exchange import Exchange
from stages.dedup.shuffle import Job, partition, read_table, shard_range, write_scratch, write_sorted

REASON_SHORT = "too_short_after_paragraph_dedup"

PARAGRAPH_HASHES = "paragraph-hashes"  # <shard>.parquet: part, hash, doc, para, chars (every round's source)
PARAGRAPHS = "paragraphs"  # <shard>.parquet: part, hash, doc, para, chars, successor
REMOVALS = "paragraph-removals"  # <partition>.parquet: doc, para, chars
SUCCESSOR_REMOVALS = "successor-removals"  # <partition>.parquet: doc, para, chars (what successors would lose)
SHORT_SUCCESSORS = "short-successors"  # <shard>.parquet: doc (successors too short even as keepers)


def paragraph_exchange(job: Job) -> Exchange:
    """A round's paragraph rows, from each shard to the partition of the paragraph's hash."""
    return Exchange.between(job, "paragraphs", PARAGRAPHS, len(job.shards), job.config.partitions, to_shards=False)


def removal_exchange(job: Job, directory: str = REMOVALS) -> Exchange:
    """A round's removals (or, from ``SUCCESSOR_REMOVALS``, what successors would lose), from each
    partition to the shard of their document."""
    name = "paragraph removals" if directory == REMOVALS else "successor removals"
    return Exchange.between(job, name, directory, job.config.partitions, len(job.shards), to_shards=True)


def hash_paragraphs(job: Job, doc: np.ndarray, batch: pa.Table, texts: pa.Array, lowered: pa.Array) -> pa.Table:
    """Per batch (its ``texts`` and those ``text.nfc_lower``ed): one row per paragraph of every
    document paragraph dedup may see in some round, that is every document outside
    ``paragraph_skip_categories``, whatever document dedup decides."""
    config = job.config
    skipped = pc.is_in(pc.fill_null(batch["category"], ""),
                       value_set=pa.array(config.paragraph_skip_categories, pa.string()))
    eligible = np.flatnonzero(~skipped.to_numpy(zero_copy_only=False))
    found = text.paragraphs(texts, lowered, config.paragraph_min_chars, config.paragraph_exempt, eligible)
    return _paragraph_rows(job, found.hash, doc[found.row], found.index, found.chars)


def write_paragraph_hashes(job: Job, shard: int, parts: list[pa.Table]) -> None:
    table = pa.concat_tables(parts) if parts else _paragraph_rows(
        job, np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64))
    write_sorted(job, job.path(PARAGRAPH_HASHES, shard), table, job.config.partitions)


def _paragraph_rows(job: Job, hashes, doc, para, chars) -> pa.Table:
    return pa.table({
        "part": pa.array(partition(hashes, job), pa.int32()),
        "hash": pa.array(hashes, pa.uint64()),
        "doc": pa.array(doc, pa.int64()),
        "para": pa.array(para, pa.int32()),
        "chars": pa.array(chars, pa.int64()),
    })


def select_paragraphs(task: tuple[Job, int]) -> None:
    """Per shard: the round's rows, ``PARAGRAPH_HASHES`` less the documents its ``clusters/`` remove,
    plus its successors' rows (``successor``: checked, not taking part). No text is read."""
    job, shard = task
    clusters = read_table(job.filesystem, job.path(CLUSTERS, shard))
    removed = clusters.filter(pc.is_valid(clusters["reason"]))["doc"].to_numpy()
    successors = clusters.filter(clusters["successor"])["doc"].to_numpy()
    rows = read_table(job.filesystem, job.path(PARAGRAPH_HASHES, shard))
    doc = rows["doc"].to_numpy()
    successor = np.isin(doc, successors)
    rows = rows.append_column("successor", pa.array(successor)).filter(pa.array(~np.isin(doc, removed) | successor))
    exchange.write(job, paragraph_exchange(job), shard, rows)


def find_repeated_paragraphs(task: tuple[Job, int]) -> None:
    """Per partition: every occurrence of a paragraph in a document after the first one's; and, for
    the successors' rows, those whose paragraph occurs in an earlier document taking part."""
    job, part = task
    rows = exchange.read(job, paragraph_exchange(job), part)
    successor = rows["successor"].to_numpy(zero_copy_only=False)
    checked, rows = rows.filter(pa.array(successor)), rows.filter(pa.array(~successor))
    hashes, doc, para = (rows[c].to_numpy() for c in ("hash", "doc", "para"))
    order = np.lexsort((para, doc, hashes))
    hashes, doc = hashes[order], doc[order]
    starts = np.ones(len(doc), bool)
    starts[1:] = hashes[1:] != hashes[:-1]
    first_doc = doc[np.maximum.accumulate(np.where(starts, np.arange(len(doc)), 0))]
    # Repeats inside the first document stay: within-document repetition is the rules stage's call.
    later = pa.array(doc != first_doc)
    removals = rows.take(pa.array(order)).filter(later).select(["doc", "para", "chars"])
    # A successor loses what it would lose taking part: each paragraph that a document before it has.
    first = _first_documents(hashes[starts], first_doc[starts], checked["hash"].to_numpy())
    lost = pa.array(first < checked["doc"].to_numpy())
    successor_removals = checked.filter(lost).select(["doc", "para", "chars"])
    exchange.write(job, removal_exchange(job, SUCCESSOR_REMOVALS), part, successor_removals)
    exchange.write(job, removal_exchange(job), part, removals)  # last: the task's receipt


def _first_documents(distinct: np.ndarray, first: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each ``wanted`` hash, the first document having it (``first`` per sorted ``distinct``
    hash), or the largest int64 when none has."""
    at = np.searchsorted(distinct, wanted)
    found = at < len(distinct)
    found[found] = distinct[at[found]] == wanted[found]
    documents = np.full(len(wanted), np.iinfo(np.int64).max, np.int64)
    documents[found] = first[at[found]]
    return documents


def line_drops(job: Job, shard: int, directory: str = REMOVALS) -> dict[int, tuple[str, list[int], bool]]:
    """Per document of a shard that loses paragraphs: (id, line indices, too short afterwards); from
    ``directory``'s removals (``SUCCESSOR_REMOVALS``: what successors would lose)."""
    low, _ = shard_range(shard)
    removals = exchange.read(job, removal_exchange(job, directory), shard)
    if removals.num_rows == 0:
        return {}
    lost = removals.group_by("doc").aggregate([("para", "list"), ("chars", "sum"), ("para", "count")])
    attributes = read_table(job.filesystem, job.path(DOCS, shard))
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
    would be removed (``REASON_SHORT``), written to ``too-short-keepers/``, empty when none; and the
    successors that would, written to ``SHORT_SUCCESSORS``."""
    job, shard = task
    clusters = read_table(job.filesystem, job.path(CLUSTERS, shard))
    keepers = clusters.filter(clusters["keeper"])["doc"].to_numpy()
    barred = _too_short(line_drops(job, shard))
    # Successor removals reach only the successors ``select_paragraphs`` found in this shard's
    # clusters: a shard without any (every shard in keeper round 0) has none to read.
    has_successors = clusters.filter(clusters["successor"]).num_rows > 0
    write_scratch(job, job.path(SHORT_SUCCESSORS, shard), _documents(_too_short(
        line_drops(job, shard, SUCCESSOR_REMOVALS) if has_successors else {})))
    write_scratch(job, job.path(BARRED, shard),  # last: the task's receipt
                  _documents(barred[np.isin(barred, keepers)]))


def _too_short(drops: dict[int, tuple[str, list[int], bool]]) -> np.ndarray:
    return np.array(sorted(doc for doc, (_, _, too_short) in drops.items() if too_short), dtype=np.int64)


def _documents(doc: np.ndarray) -> pa.Table:
    return pa.table({"doc": pa.array(doc, pa.int64())})
