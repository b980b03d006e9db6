"""The source stage's pass over the pieces of files its readers cut, before it reads any of them
(``Ingest.prepare``), for readers whose pieces need what the pieces before them hold
(``Reader.index``: a JSON-lines piece numbers its lines from where the piece before it stopped, and
an id an earlier piece holds is a ``duplicate_id`` in it; a Parquet piece knows its rows' numbers
from the footer and needs the pass only for its ids, ``Reader.index_for_ids``).

Every piece of such a file is indexed at once on the workers (``index_piece``: its record count; its
ids go to ``scratch`` as ``<unit>.ids.parquet``, with a 64-bit digest of each). The driver then, a
file at a time, sums the counts in file order and finds, by digest, the ids of a piece that some
earlier piece holds too: usually none. Only for those does it read the earlier pieces' id files, so a
piece's ``seen`` holds exact ids, and an id that merely shares a digest is one more id that no
record of the piece holds. Each piece's ``Before`` goes to ``scratch`` as ``<unit>.before.json``
with the piece's stamp, where the piece's task reads it (``with_before``); a rerun whose stamps
match (the file unchanged, cut the same way) indexes nothing again.

The driver holds 8 bytes per id of the file it is at, not the ids.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.readers import Before, InputFile


def prepare_pieces(inputs: dict[str, tuple[InputFile, ...]], config: Any, scratch: str, fs: Any,
                   map_: Callable, log: Callable[[str], None]) -> None:
    """Index the pieces of every cut file whose reader indexes them, unless indexed already."""
    files: dict[tuple[str, str], list[tuple[str, InputFile]]] = {}
    for name, items in inputs.items():
        for item in items:
            if _indexed_piece(item):
                files.setdefault((item.source.name, item.path), []).append((name, item))
    stale = [pieces for pieces in files.values()
             if not all(_stored(fs, scratch, name, item) is not None for name, item in pieces)]
    if not stale:
        return
    tasks = [(item, config, fs, _ids_path(scratch, name)) for pieces in stale for name, item in pieces]
    log(f"counting the records and ids of {len(tasks)} pieces of {len(stale)} large files, before reading them")
    counts = iter(map_(index_piece, tasks))
    for pieces in stale:  # a file at a time: the driver holds one file's digests
        records = [next(counts) for _ in pieces]
        names = [name for name, _ in pieces]
        seen = _seen(fs, scratch, names, [_digests(fs, scratch, name) for name in names])
        first = 1
        for (name, item), count, ids in zip(pieces, records, seen):
            storage.write_json(fs, _before_path(scratch, name), {"piece": _stamp(item), "first": first, "seen": ids})
            first += count


def index_piece(task: tuple[InputFile, Any, Any, str]) -> int:
    """A worker's share of the pass: one piece's record count (its ids, with a digest each, written
    to ``path``)."""
    item, config, fs, path = task
    index = item.reader.index(item, config)
    encoded = []
    for doc_id in index.ids:
        try:
            encoded.append(doc_id.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: such a record is ``invalid_id``, never seen
            pass
    digests = np.fromiter((int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") for raw in encoded),
                          dtype=np.uint64, count=len(encoded))
    # written even empty: an earlier run's file for this piece must not stand for it
    storage.write_parquet(fs, path, pa.table({"digest": pa.array(digests, pa.uint64()), "id": pa.array(encoded, pa.binary())}))
    return index.records


def _digests(fs: Any, scratch: str, unit: str) -> np.ndarray:
    """The digests of a piece's ids, from its id file."""
    return storage.read_parquet(fs, _ids_path(scratch, unit), columns=["digest"])["digest"].to_numpy()


def with_before(item: InputFile, scratch: str, fs: Any, unit: str) -> InputFile:
    """``item`` with its ``before``, when it is a piece its reader indexes; else as it is."""
    if not _indexed_piece(item):
        return item
    stored = _stored(fs, scratch, unit, item)
    if stored is None:  # prepare_pieces runs before any unit of the stage: a bug if it did not
        raise RuntimeError(f"{item.path}: no index of piece {item.piece} in {scratch}")
    return dataclasses.replace(item, before=Before(stored["first"], tuple(stored["seen"])))


def _seen(fs: Any, scratch: str, names: list[str], digests: list[np.ndarray]) -> list[list[str]]:
    """For each piece of one file, the ids of earlier pieces whose digest one of its ids has too."""
    seen: list[list[str]] = [[] for _ in names]
    if not any(len(d) for d in digests):
        return seen
    piece_of = np.concatenate([np.full(len(d), k) for k, d in enumerate(digests)])
    every = np.concatenate(digests)
    order = np.lexsort((piece_of, every))  # by digest, then by piece
    every, piece_of = every[order], piece_of[order]
    starts = np.flatnonzero(np.r_[True, every[1:] != every[:-1]])
    earliest = np.repeat(piece_of[starts], np.diff(np.r_[starts, every.size]))
    later = piece_of > earliest
    for k in np.unique(piece_of[later]).tolist():
        wanted = np.unique(every[later & (piece_of == k)])
        ids: set[str] = set()
        for j in range(k):
            if np.isin(digests[j], wanted).any():
                table = storage.read_parquet(fs, _ids_path(scratch, names[j]))
                match = pa.array(np.isin(table["digest"].to_numpy(), wanted))
                ids.update(raw.decode("utf-8") for raw in table["id"].filter(match).to_pylist())
        seen[k] = sorted(ids)
    return seen


def _indexed_piece(item: InputFile) -> bool:
    reader = item.reader
    return (item.piece is not None and reader.index is not None
            and (not reader.index_for_ids or item.source.id_field is not None))


def _stored(fs: Any, scratch: str, unit: str, item: InputFile) -> dict | None:
    """The piece's stored ``Before``, when it is there and of this piece of this file."""
    stored = storage.read_json_if_exists(fs, _before_path(scratch, unit))
    return stored if stored is not None and stored.get("piece") == _stamp(item) else None


def _stamp(item: InputFile) -> str:
    """What the index depends on besides the stage's config (its scratch is wiped when that changes)."""
    return f"{item.path}:{item.size}:{item.mtime_ns}:{list(item.piece)}"


def _before_path(scratch: str, unit: str) -> str:
    return storage.join(scratch, "pieces", f"{unit}.before.json")


def _ids_path(scratch: str, unit: str) -> str:
    return storage.join(scratch, "pieces", f"{unit}.ids.parquet")
