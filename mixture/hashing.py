"""Keyed document hashes: the only source of randomness in sampling and shuffling.

A document's hash depends on the seed, a salt and its id alone, never on which shard it sits in or
which worker reads it, so every decision made from it is the same for any sharding and any number of
workers.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np


def keyed_hashes(seed: int, salt: str, ids: Sequence[str]) -> np.ndarray:
    """A uniform 64-bit hash per id (uint64), from blake2b keyed by ``seed`` and ``salt``."""
    prefix = f"{seed}\x1f{salt}\x1f".encode()
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(prefix + doc_id.encode(), digest_size=8).digest(), "little")
         for doc_id in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def sampling_bins(seed: int, ids: Sequence[str], bins: int) -> np.ndarray:
    """The sampling bin (0 <= bin < ``bins``) of each document; phases take whole bins."""
    return (keyed_hashes(seed, "bin", ids) % np.uint64(bins)).astype(np.int32)


def shuffle_keys(seed: int, phase: str, epoch: int, ids: Sequence[str]) -> np.ndarray:
    """Each document copy's place in a phase's shuffled order; another epoch gives another place."""
    return keyed_hashes(seed, f"shuffle\x1f{phase}\x1f{epoch}", ids)
