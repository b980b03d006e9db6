"""Document-level dedup tasks: signatures (map), candidates (reduce), verification, clusters.

Exact duplicates ride along the MinHash machinery as one more "band" (``EXACT_BAND``) whose key is
the hash of the normalised text: documents sharing it become edges that need no verification.

Verification is a sort-merge join in two hops, so a signature travels only with a candidate pair
and never through the band shuffle: candidates are routed to the shard of their first document,
which attaches that document's signature, then to the shard of the second, which compares the two.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from stages.dedup import components, minhash, text
from stages.dedup.shuffle import (
    Job, batches, gather, partition, shard_range, signature_matrix, write_sorted,
)

EXACT_BAND = -1
REASON_EXACT = "exact_duplicate"
REASON_NEAR = "near_duplicate"

SIGNATURES = "signatures"  # <shard>.parquet: doc, sig (when verifying)
DOCS = "docs"  # <shard>.parquet: doc, id, chars, quality_score
BANDS = "bands"  # <shard>.parquet: part, band, key, doc
CANDIDATES = "candidates"  # <partition>.parquet: u, v, exact
HEADS = "candidates-with-signature"  # <shard of u>.parquet: v, u, exact, sig (of u)
EDGES = "edges"  # <shard of v>.parquet: u, v, exact
CLUSTERS = "clusters"  # <shard>.parquet: doc, id, cluster, kept_id, reason, keeper; _SUCCESS.json
BARRED = "too-short-keepers"  # <shard>.parquet: doc (keepers of a round too short after paragraph dedup)

DOCS_SCHEMA = pa.schema([
    ("doc", pa.int64()), ("id", pa.string()), ("chars", pa.int64()), ("quality_score", pa.float32()),
])
BANDS_SCHEMA = pa.schema([("part", pa.int32()), ("band", pa.int16()), ("key", pa.uint64()), ("doc", pa.int64())])
CLUSTER_SCHEMA = pa.schema([
    ("doc", pa.int64()), ("id", pa.string()), ("cluster", pa.string()), ("kept_id", pa.string()),
    ("reason", pa.string()), ("keeper", pa.bool_()),
])


# ----------------------------------------------------------------------------- map: signatures

def sign_shard(task: tuple[Job, int]) -> None:
    """Per shard: document attributes, signatures, and one row per (document, band) key."""
    job, shard = task
    config = job.config
    docs, keyed, signed = [], [], []
    for doc, batch in batches(job, shard, ["id", "text", "lang", "quality_score"]):
        docs.append(_doc_attributes(batch, doc))
        if config.exact_documents:
            keys = text.digests(text.normalise(batch["text"].combine_chunks()))
            keyed.append(_band_rows(job, np.full(len(doc), EXACT_BAND), keys, doc))
        if config.near_duplicates:
            signatures, has_shingles = _signatures(job, batch)
            keys = minhash.band_keys(signatures[has_shingles], job.bands, job.rows).reshape(-1)
            band = np.tile(np.arange(job.bands), int(has_shingles.sum()))
            keyed.append(_band_rows(job, band, keys, np.repeat(doc[has_shingles], job.bands)))
            if config.verify:
                signed.append(_signature_rows(job, doc, signatures))
    storage.write_parquet(job.filesystem, job.path(DOCS, shard), _concat(docs, DOCS_SCHEMA))
    if config.near_duplicates and config.verify:
        signature_schema = pa.schema([("doc", pa.int64()), ("sig", pa.list_(pa.uint32(), config.num_perm))])
        storage.write_parquet(job.filesystem, job.path(SIGNATURES, shard), _concat(signed, signature_schema))
    write_sorted(job, job.path(BANDS, shard), _concat(keyed, BANDS_SCHEMA), config.partitions)


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The tables of a shard's batches as one; an empty shard still gets a file with the schema."""
    return pa.concat_tables(tables) if tables else schema.empty_table()


def _doc_attributes(batch: pa.Table, doc: np.ndarray) -> pa.Table:
    quality = batch["quality_score"] if "quality_score" in batch.column_names else \
        pa.nulls(batch.num_rows, pa.float32())
    return pa.table({
        "doc": pa.array(doc, pa.int64()),
        "id": batch["id"].cast(pa.string()),
        "chars": pc.fill_null(pc.utf8_length(batch["text"].cast(pa.string())), 0).cast(pa.int64()),
        "quality_score": quality.cast(pa.float32()),
    }, schema=DOCS_SCHEMA)


def _band_rows(job: Job, band, keys: np.ndarray, doc) -> pa.Table:
    return pa.table({"part": partition(keys, job), "band": band, "key": keys, "doc": doc}, schema=BANDS_SCHEMA)


def _signature_rows(job: Job, doc: np.ndarray, signatures: np.ndarray) -> pa.Table:
    flat = pa.array(signatures.reshape(-1).astype(np.uint32), pa.uint32())
    return pa.table({"doc": pa.array(doc, pa.int64()),
                     "sig": pa.FixedSizeListArray.from_arrays(flat, job.config.num_perm)})


def _signatures(job: Job, batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of a batch, and which documents had any shingle (others can only be
    exact duplicates: all documents without words would otherwise match each other)."""
    config = job.config
    texts = batch["text"].combine_chunks()
    langs = batch["lang"].combine_chunks() if "lang" in batch.column_names else None
    by_chars = minhash.char_shingled(texts, langs, config.char_ngram_langs)
    simplified = minhash.simplify(texts)
    hasher = minhash.MinHasher(config.num_perm, config.seed)
    signatures = np.empty((batch.num_rows, config.num_perm), np.uint32)
    has_shingles = np.zeros(batch.num_rows, bool)
    for chars, n in ((False, config.word_ngram), (True, config.char_ngram)):
        rows = np.flatnonzero(by_chars == chars)
        token_hashes, counts = minhash.tokens(simplified.take(pa.array(rows, pa.int64())), chars)
        values, per_doc = minhash.shingles(token_hashes, counts, n)
        signatures[rows] = hasher.signatures(values, per_doc)
        has_shingles[rows] = per_doc > 0
    return signatures, has_shingles


# ----------------------------------------------------------------------------- reduce: candidates

def link_partition(task: tuple[Job, int]) -> None:
    """Per partition: documents sharing a key in a band become pairs (first of them, other)."""
    job, part = task
    rows = gather(job, job.paths(BANDS, len(job.shards)), part, part + 1)
    band, key, doc = (rows[c].to_numpy() for c in ("band", "key", "doc"))
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    starts = np.ones(len(doc), bool)
    starts[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    head = doc[np.maximum.accumulate(np.where(starts, np.arange(len(doc)), 0))]
    pairs = pa.table({
        "u": pa.array(head[~starts], pa.int64()),
        "v": pa.array(doc[~starts], pa.int64()),
        "exact": pa.array(band[~starts] == EXACT_BAND, pa.bool_()),
    })
    write_sorted(job, job.path(CANDIDATES, part), unique_pairs(pairs), len(job.shards))


def unique_pairs(pairs: pa.Table) -> pa.Table:
    """One row per (u, v), sorted: a pair found in several bands (or partitions) is one candidate,
    and it is exact if any of its rows is."""
    pairs = pairs.group_by(["u", "v"]).aggregate([("exact", "max")]).rename_columns(["u", "v", "exact"])
    return pairs.sort_by([("u", "ascending"), ("v", "ascending")])


# ----------------------------------------------------------------------------- verification

def attach_head_signatures(task: tuple[Job, int]) -> None:
    """Per shard: candidates whose first document is here, with its signature, routed onward."""
    job, shard = task
    low, _ = shard_range(shard)
    pairs = unique_pairs(gather(job, job.paths(CANDIDATES, job.config.partitions), *shard_range(shard)))
    signatures = storage.read_parquet(job.filesystem, job.path(SIGNATURES, shard))["sig"]
    # Exact pairs need no signature, but keep theirs anyway: one schema, and they are few.
    attached = signatures.take(pa.array(pairs["u"].to_numpy() - low))
    table = pa.table({"v": pairs["v"], "u": pairs["u"], "exact": pairs["exact"], "sig": attached})
    write_sorted(job, job.path(HEADS, shard), table, len(job.shards))


def verify_shard(task: tuple[Job, int]) -> None:
    """Per shard: candidates whose second document is here, kept if their signatures agree on at
    least ``threshold`` of the permutations (the MinHash estimate of their Jaccard similarity)."""
    job, shard = task
    low, _ = shard_range(shard)
    pairs = gather(job, job.paths(HEADS, len(job.shards)), *shard_range(shard))
    own = signature_matrix(storage.read_parquet(job.filesystem, job.path(SIGNATURES, shard))["sig"],
                           job.config.num_perm)
    theirs = signature_matrix(pairs["sig"], job.config.num_perm)
    agreement = (own[pairs["v"].to_numpy() - low] == theirs).mean(axis=1)
    keep = pairs["exact"].to_numpy(zero_copy_only=False) | (agreement >= job.config.threshold)
    edges = pairs.select(["u", "v", "exact"]).filter(pa.array(keep))
    storage.write_parquet(job.filesystem, job.path(EDGES, shard), edges)


# ----------------------------------------------------------------------------- clusters

def edge_files(job: Job) -> list[str]:
    if job.config.near_duplicates and job.config.verify:
        return job.paths(EDGES, len(job.shards))
    return job.paths(CANDIDATES, job.config.partitions)


def cluster_corpus(task: tuple[Job, int]) -> None:
    """Connected components of all edges; per shard, the fate of each clustered document.

    In keeper round r > 0, the keepers that earlier rounds found too short after paragraph dedup
    (``barred``) are not chosen again: each such cluster keeps its next best member. A barred
    document gets no reason here (paragraph dedup removes it as too short, its own reason) and no
    ``kept_id``; a cluster whose members are all barred keeps nothing and points nowhere.
    """
    job, _ = task
    edges = unique_pairs(pa.concat_tables([storage.read_parquet(job.filesystem, path).select(["u", "v", "exact"])
                                           for path in edge_files(job)]))
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    exact = edges["exact"].to_numpy(zero_copy_only=False)
    found = components.cluster(u, v)
    later_copy = np.isin(found.doc, v[exact])
    barred = np.isin(found.doc, barred_documents(job))
    ids, score = _clustered_attributes(job, found.doc)
    keeper = components.keepers(found, later_copy, score, barred)
    is_keeper = (keeper == np.arange(len(found.doc))) & ~barred
    removed = ~is_keeper & ~barred
    reason = np.where(removed, np.where(later_copy, REASON_EXACT, REASON_NEAR), None)
    table = pa.table({
        "doc": pa.array(found.doc, pa.int64()),
        "id": ids,
        "cluster": ids.take(pa.array(components.firsts(found), pa.int64())),
        "kept_id": pc.if_else(pa.array(removed), ids.take(pa.array(keeper, pa.int64())),
                              pa.nulls(len(found.doc), pa.string())),
        "reason": pa.array(reason.tolist(), pa.string()),
        "keeper": pa.array(is_keeper),
    }, schema=CLUSTER_SCHEMA)
    for shard in range(len(job.shards)):
        low, high = shard_range(shard)
        inside = pa.array((found.doc >= low) & (found.doc < high))
        storage.write_parquet(job.filesystem, job.path(CLUSTERS, shard), table.filter(inside))
    summary = _summary(found, exact, reason)
    summary["keeper_round"] = job.round
    summary["keepers_replaced"] = int(barred.sum())
    storage.write_json(job.filesystem, job.path(CLUSTERS, "_SUCCESS", "json"), summary)


def barred_documents(job: Job) -> np.ndarray:
    """Documents that keeper rounds before ``job.round`` found too short as keepers (sorted)."""
    found = [storage.read_parquet(job.filesystem, replace(job, round=r).path(BARRED, shard))["doc"].to_numpy()
             for r in range(job.round) for shard in range(len(job.shards))]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _clustered_attributes(job: Job, doc: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Ids and keep-scores of the clustered documents (``doc`` is sorted), read shard by shard."""
    parts = []
    for shard in range(len(job.shards)):
        attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard))
        parts.append(attributes.filter(pa.array(np.isin(attributes["doc"].to_numpy(), doc))))
    attributes = pa.concat_tables(parts).sort_by([("doc", "ascending")])
    if attributes.num_rows != len(doc):
        raise RuntimeError("dedup scratch is inconsistent: clustered documents missing from docs/")
    if job.config.keep == "longest":
        score = attributes["chars"].to_numpy().astype(np.float64)
    elif job.config.keep == "quality":
        score = pc.fill_null(attributes["quality_score"], float("-inf")).to_numpy().astype(np.float64)
    else:
        score = np.zeros(len(doc))
    return attributes["id"].combine_chunks(), score


def _summary(found: components.Clusters, exact: np.ndarray, reason: np.ndarray) -> dict:
    sizes = np.bincount(found.label) if len(found.doc) else np.zeros(0, np.int64)
    buckets = {"2": sizes == 2, "3-9": (sizes >= 3) & (sizes < 10), "10-99": (sizes >= 10) & (sizes < 100),
               "100+": sizes >= 100}
    return {
        "edges": {"exact": int(exact.sum()), "near": int((~exact).sum())},
        "clusters": int(len(sizes)),
        "clustered_docs": int(len(found.doc)),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "cluster_sizes": {label: int(mask.sum()) for label, mask in buckets.items()},
        "removed": {REASON_EXACT: int((reason == REASON_EXACT).sum()),
                    REASON_NEAR: int((reason == REASON_NEAR).sum())},
    }
