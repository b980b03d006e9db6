"""``Listing``: a list as long as the corpus has shards, shipped to tasks as a file.

Steps whose every task needs every input shard's name (dedup's shuffles, the mixture's gather and
pack) would otherwise pickle the whole list into each task: 3 MB per task at 16,000 shards, times
thousands of tasks per step. A Listing pickles to its path, length and digest (a few hundred bytes
whatever the length); a task that indexes it reads the file once per worker process.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterator

from pipeline import storage

_LISTINGS: dict[str, tuple[str, ...]] = {}  # keyed by content: a long-lived worker may see many runs


class Listing:
    """``items`` written to ``path`` (on ``filesystem``) unless the file there already holds them."""

    def __init__(self, items: tuple[str, ...], filesystem: Any, path: str):
        self._items: tuple[str, ...] | None = tuple(items)
        payload = json.dumps(self._items).encode()
        self.digest = hashlib.sha256(payload).hexdigest()
        self.count, self.filesystem, self.path = len(self._items), filesystem, path
        _LISTINGS[self.digest] = self._items
        if not (storage.exists(filesystem, path) and storage.sha256(filesystem, path) == self.digest):
            storage.write_bytes(filesystem, path, payload)

    def __getstate__(self) -> dict:
        return {"digest": self.digest, "count": self.count, "filesystem": self.filesystem, "path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _items=None)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> str:
        if self._items is None:
            if self.digest not in _LISTINGS:
                with self.filesystem.open_input_file(self.path) as source:
                    payload = source.read()
                if hashlib.sha256(payload).hexdigest() != self.digest:
                    raise ValueError(f"{self.path} does not list the shards this task was planned for")
                _LISTINGS[self.digest] = tuple(json.loads(payload))
            self._items = _LISTINGS[self.digest]
        return self._items[index]

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self.count))


def forget_listings() -> None:
    """Drop the lists read so far, as a fresh worker process starts without them (for tests)."""
    _LISTINGS.clear()
