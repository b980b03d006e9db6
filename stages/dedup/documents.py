"""Document-level dedup tasks: signatures (map), candidates (reduce), verification; and the names of
the scratch directories the dedup modules share. What the edges become: ``stages.dedup.clusters``.

Exact duplicates ride along the MinHash machinery as one more "band" (``EXACT_BAND``) whose key is
the hash of the normalised text: documents sharing it become edges that need no verification.

Verification is a sort-merge join in two hops, so a signature travels only with a candidate pair
and never through the band shuffle: candidates are routed to the shard of their first document,
which attaches that document's signature, then to the shard of the second, which compares the two.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.dedup import exchange, minhash, text
from stages.dedup.exchange import Exchange
from stages.dedup.shuffle import Job, partition, read_table, shard_range, write_scratch, write_sorted

EXACT_BAND = -1
REASON_EXACT = "exact_duplicate"
REASON_NEAR = "near_duplicate"

SIGNATURES = "signatures"  # <shard>.parquet: doc, sig (when verifying; see signature_column)
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


# ----------------------------------------------------------------------------- exchanges

def band_exchange(job: Job) -> Exchange:
    """Band keys, from each shard to the partition of the key."""
    return Exchange.between(job, "bands", BANDS, len(job.shards), job.config.partitions, to_shards=False)


def candidate_exchange(job: Job) -> Exchange:
    """Candidate pairs, from each partition to the shard of their first document."""
    return Exchange.between(job, "candidates", CANDIDATES, job.config.partitions, len(job.shards), to_shards=True)


def head_exchange(job: Job) -> Exchange:
    """Candidate pairs with their first document's signature, from that shard to the second's."""
    return Exchange.between(job, "candidate signatures", HEADS, len(job.shards), len(job.shards), to_shards=True)


# ----------------------------------------------------------------------------- map: signatures

# Columns of the input shards that signing reads.
SIGNED_COLUMNS = ["id", "text", "lang", "quality_score"]


class Signed:
    """What ``sign`` finds in the batches of one shard, for ``write_signed``."""

    def __init__(self) -> None:
        self.docs: list[pa.Table] = []
        self.keyed: list[pa.Table] = []
        self.signed: list[pa.Table] = []


def sign(job: Job, doc: np.ndarray, batch: pa.Table, lowered: pa.Array, into: Signed) -> None:
    """Per batch: document attributes, one row per (document, band) key and (when verifying) the
    signatures; ``lowered`` is the batch's texts ``text.nfc_lower``ed (for the exact key)."""
    config = job.config
    into.docs.append(_doc_attributes(batch, doc))
    if config.exact_documents:
        keys = text.normalised_digests(lowered)
        into.keyed.append(_band_rows(job, np.full(len(doc), EXACT_BAND), keys, doc))
    if config.near_duplicates:
        signatures, has_shingles = _signatures(job, batch)
        keys = minhash.band_keys(signatures[has_shingles], job.bands, job.rows).reshape(-1)
        band = np.tile(np.arange(job.bands), int(has_shingles.sum()))
        into.keyed.append(_band_rows(job, band, keys, np.repeat(doc[has_shingles], job.bands)))
        if config.verify:
            into.signed.append(_signature_rows(job, doc, signatures))


def write_signed(job: Job, shard: int, signed: Signed) -> None:
    """A shard's docs/, signatures/ (when verifying) and bands/ files, the last written last."""
    config = job.config
    write_scratch(job, job.path(DOCS, shard), _concat(signed.docs, DOCS_SCHEMA))
    if config.near_duplicates and config.verify:
        signature_schema = pa.schema([("doc", pa.int64()), ("sig", pa.binary(4 * config.num_perm))])
        write_scratch(job, job.path(SIGNATURES, shard), _concat(signed.signed, signature_schema))
    exchange.write(job, band_exchange(job), shard, _concat(signed.keyed, BANDS_SCHEMA))


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
    return pa.table({"doc": pa.array(doc, pa.int64()), "sig": signature_column(signatures)})


def signature_column(signatures: np.ndarray) -> pa.Array:
    """A (rows x num_perm) uint32 matrix as one fixed-size binary value per row: its values as
    little-endian uint32. A flat column: Parquet writes it about 20x and reads it 2x as fast as a
    fixed-size list of uint32 (which it stores with a repetition level per value), and a third
    smaller."""
    rows = np.ascontiguousarray(signatures, dtype="<u4")
    return pa.Array.from_buffers(pa.binary(rows.shape[1] * 4), rows.shape[0], [None, pa.py_buffer(rows.tobytes())])


def signature_matrix(column: pa.ChunkedArray | pa.Array, num_perm: int) -> np.ndarray:
    """A ``signature_column`` back as a (rows x num_perm) uint32 matrix. A column of fixed-size
    lists, as scratch directories written before the binary column hold, is read too."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        return column.flatten().to_numpy().reshape(-1, num_perm)
    if not len(column):
        return np.zeros((0, num_perm), dtype=np.uint32)
    values = np.frombuffer(column.buffers()[1], dtype="<u4")
    return values[column.offset * num_perm:(column.offset + len(column)) * num_perm].reshape(-1, num_perm) \
        .astype(np.uint32)


def _signatures(job: Job, batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures of a batch, and which documents had any shingle (others can only be
    exact duplicates: all documents without words would otherwise match each other)."""
    config = job.config
    texts = batch["text"].combine_chunks()
    langs = batch["lang"].combine_chunks() if "lang" in batch.column_names else None
    by_chars = minhash.char_shingled(texts, langs, config.char_ngram_langs)
    hasher = minhash.MinHasher(config.num_perm, config.seed)
    signatures = np.empty((batch.num_rows, config.num_perm), np.uint32)
    has_shingles = np.zeros(batch.num_rows, bool)
    for chars, n in ((False, config.word_ngram), (True, config.char_ngram)):
        rows = np.flatnonzero(by_chars == chars)
        token_hashes, counts = minhash.text_tokens(texts.take(pa.array(rows, pa.int64())), chars)
        values, per_doc = minhash.shingles(token_hashes, counts, n)
        signatures[rows] = hasher.signatures(values, per_doc)
        has_shingles[rows] = per_doc > 0
    return signatures, has_shingles


# ----------------------------------------------------------------------------- reduce: candidates

def link_partition(task: tuple[Job, int]) -> None:
    """Per partition: documents sharing a key in a band become pairs (first of them, other)."""
    job, part = task
    rows = exchange.read(job, band_exchange(job), part)
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
    pairs = unique_pairs(pairs)
    if job.config.near_duplicates and job.config.verify:
        exchange.write(job, candidate_exchange(job), part, pairs)
    else:  # the edges themselves (``edge_files``): laid out as always, whatever the shuffle settings
        write_sorted(job, job.path(CANDIDATES, part), pairs, len(job.shards))


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
    pairs = unique_pairs(exchange.read(job, candidate_exchange(job), shard))
    signatures = _read_signatures(job, shard)
    # Exact pairs need no signature, but keep theirs anyway: one schema, and they are few.
    attached = signature_column(signatures[pairs["u"].to_numpy() - low])
    table = pa.table({"v": pairs["v"], "u": pairs["u"], "exact": pairs["exact"], "sig": attached})
    exchange.write(job, head_exchange(job), shard, table)


def verify_shard(task: tuple[Job, int]) -> None:
    """Per shard: candidates whose second document is here, kept if their signatures agree on at
    least ``threshold`` of the permutations (the MinHash estimate of their Jaccard similarity)."""
    job, shard = task
    low, _ = shard_range(shard)
    pairs = exchange.read(job, head_exchange(job), shard)
    own = _read_signatures(job, shard)
    theirs = signature_matrix(pairs["sig"], job.config.num_perm)
    agreement = (own[pairs["v"].to_numpy() - low] == theirs).mean(axis=1)
    keep = pairs["exact"].to_numpy(zero_copy_only=False) | (agreement >= job.config.threshold)
    # One chunk: how Parquet cuts pages depends on the chunks, which depend on how the pairs were read.
    edges = pairs.select(["u", "v", "exact"]).filter(pa.array(keep)).combine_chunks()
    write_scratch(job, job.path(EDGES, shard), edges)


def _read_signatures(job: Job, shard: int) -> np.ndarray:
    """The signatures of a shard's documents, one row per document in corpus order."""
    column = read_table(job.filesystem, job.path(SIGNATURES, shard), columns=["sig"])["sig"]
    return signature_matrix(column, job.config.num_perm)


# ----------------------------------------------------------------------------- clusters' input

def edge_files(job: Job) -> list[str]:
    """The files holding every duplicate edge (u, v, exact): verified edges, or the candidates."""
    if job.config.near_duplicates and job.config.verify:
        return job.paths(EDGES, len(job.shards))
    return job.paths(CANDIDATES, job.config.partitions)
