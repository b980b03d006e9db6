"""Keyed document hashes: the only source of randomness in sampling and shuffling.

A document's hash depends on the seed, a salt and its id alone, never on which shard it sits in or
which worker reads it, so every decision made from it is the same for any sharding and any number of
workers. A document split into pieces (``mixture.count``) is placed and shuffled by its id too: its
pieces lie in consecutive sampling bins and share one shuffle key, so whatever a phase takes of it
is packed in one place, in order.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def keyed_hashes(seed: int, salt: str, ids: Sequence[str]) -> np.ndarray:
    """A uniform 64-bit hash per id (uint64), from blake2b keyed by ``seed`` and ``salt``: the
    little-endian digest of ``<seed> 0x1f <salt> 0x1f <id>``."""
    keyed = hashlib.blake2b(f"{seed}\x1f{salt}\x1f".encode(), digest_size=8)
    digests = []
    for doc_id in ids:  # copying the hasher fed the prefix: half the time of hashing prefix + id anew
        hasher = keyed.copy()
        hasher.update(doc_id.encode())
        digests.append(hasher.digest())
    return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64)


def sampling_bins(seed: int, ids: Sequence[str], bins: int) -> np.ndarray:
    """The sampling bin (0 <= bin < ``bins``) of each whole (one-piece) document; phases take whole bins."""
    return (keyed_hashes(seed, "bin", ids) % np.uint64(bins)).astype(np.int32)


def first_bins(seed: int, ids: Sequence[str], pieces: Sequence[int], bins: int) -> np.ndarray:
    """The bin of piece 0 of each document of ``pieces`` pieces; piece k lies in bin
    ``(first + k) % bins`` (``piece_bins``).

    A document of n <= ``bins`` pieces starts in one of the ``bins - n + 1`` bins that keep all its
    pieces on one pass of the tape (``mixture.phases``), so no document crosses the end of the tape:
    neither the first phase's start nor an epoch boundary cuts it. A one-piece document gets the bin
    ``sampling_bins`` gives it. Only a document of more pieces than bins wraps around."""
    counts = np.asarray(pieces, np.int64).reshape(-1)
    room = np.where(counts <= bins, bins - counts + 1, bins).astype(np.uint64)
    return (keyed_hashes(seed, "bin", ids) % room).astype(np.int64)


def piece_bins(first: np.ndarray, piece: np.ndarray, bins: int) -> np.ndarray:
    """The sampling bin of piece ``piece`` of a document whose piece 0 is in bin ``first``."""
    return ((np.asarray(first, np.int64) + np.asarray(piece, np.int64)) % bins).astype(np.int32)


def segment_labels(ids: Sequence[str], first: Sequence[int], last: Sequence[int],
                   pieces: Sequence[int]) -> list[str]:
    """The name of each packed run of pieces in the training shards' ``segment_ids``: the document id
    when the run is the whole document, else ``<id>#<first>-<last>`` (its pieces, 0-based, inclusive)."""
    return [doc_id if a == 0 and b == n - 1 else f"{doc_id}#{a}-{b}"
            for doc_id, a, b, n in zip(ids, first, last, pieces)]


def shuffle_keys(seed: int, phase: str, epoch: int, ids: Sequence[str]) -> np.ndarray:
    """Each document copy's place in a phase's shuffled order; another epoch gives another place. Keyed
    by the document id: every piece of a document a phase takes in one epoch gets the same key."""
    return keyed_hashes(seed, f"shuffle\x1f{phase}\x1f{epoch}", ids)
