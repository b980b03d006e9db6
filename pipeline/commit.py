"""Committing units of work and resuming them: the one mechanism behind every stage and step.

- ``claim(fs, directory, owner, ...)``: the directory belongs to one hash (a config's, a plan's),
  named by a marker file in it. A directory that holds another hash's outputs (or any, with
  ``force``) is cleared first; leftovers of writes a crash interrupted are removed either way.
- A unit of work writes its outputs (atomically: ``storage``) and then its receipt, last
  (``Ledger.commit``). The receipt is the commit point: a unit with a receipt is complete, a unit
  without one is redone from scratch.
- ``Ledger.done(units, owner)``: the receipts written for this hash and, where a unit has one, this
  input fingerprint; everything else is pending. ``Ledger.prune(units)``: receipts of units that no
  longer exist (an input file was removed) are deleted with the outputs they name.

Users: the runner (a ledger per stage, a receipt per unit: ``pipeline.worker``), the tokenizer step
(one receipt for the whole tokenizer, its ``_step.json``), the mixture (a ledger for each of its
steps) and dedup's global steps, whose output files carry their own counts and so are their own
receipts (``pending(items, done)`` with "the output exists").
"""
from __future__ import annotations

import posixpath
from typing import Any, Callable, Iterable, Mapping, Sequence

from pipeline import storage


def claim(fs: Any, directory: str, owner: str, *, key: str, marker: str, force: bool = False,
          log: Callable[[str], None] = print, label: str = "", record: Mapping[str, Any] | None = None,
          clear: Callable[[], None] | None = None, changed: str = "its config (or an earlier stage's) changed") -> bool:
    """Make ``directory`` belong to ``owner`` (the marker's ``key``); returns whether earlier
    outputs were discarded. ``clear``: what to delete instead of the whole directory's contents."""
    path = storage.join(directory, marker)
    previous = storage.read_json_if_exists(fs, path)
    previous_owner = previous.get(key) if previous else None
    discarded = previous is not None and (force or previous_owner != owner)
    if discarded:
        why = "--force" if force else changed
        log(f"{label}discarding earlier outputs: {why}")
        if clear is not None:
            clear()
        else:
            storage.delete_dir_contents(fs, directory)
    storage.remove_temporaries(fs, directory)
    if discarded or previous_owner != owner:  # a resumed directory's marker is already this one
        storage.write_json(fs, path, {key: owner, **(record or {})})
    return discarded


class Ledger:
    """The receipts of one step's units: ``<directory>/<unit>.json``, each with the hash it was
    written for under ``key`` and, when the unit has one, its ``input_fingerprint``."""

    def __init__(self, fs: Any, directory: str, key: str):
        self.fs, self.directory, self.key = fs, directory, key

    def path(self, unit: str) -> str:
        return storage.join(self.directory, f"{unit}.json")

    def read(self, unit: str) -> dict | None:
        return storage.read_json_if_exists(self.fs, self.path(unit))

    def done(self, units: Mapping[str, str | None] | Iterable[str], owner: str,
             check: Callable[[str, dict], bool] | None = None,
             keep: Callable[[dict], dict] | None = None) -> dict[str, dict]:
        """Receipts of the ``units`` (names, or names to input fingerprints) committed for ``owner``
        and their current input; ``check(unit, receipt)`` may ask more (its output still exists);
        ``keep(receipt)``, what of each receipt to hold (the runner: all but its stats)."""
        fingerprints = units if isinstance(units, Mapping) else dict.fromkeys(units)
        done = {}
        for unit, fingerprint in fingerprints.items():
            receipt = self.read(unit)
            if (receipt and receipt.get(self.key) == owner
                    and (fingerprint is None or receipt.get("input_fingerprint") == fingerprint)
                    and (check is None or check(unit, receipt))):
                done[unit] = keep(receipt) if keep else receipt
        return done

    def commit(self, unit: str, receipt: dict) -> None:
        """The unit's commit point: call it after every output of the unit is in place."""
        storage.write_json(self.fs, self.path(unit), receipt)

    def forget(self, unit: str) -> None:
        """Un-commit a unit before redoing it in place, so a crash midway leaves it pending."""
        if storage.exists(self.fs, self.path(unit)):
            storage.delete_file(self.fs, self.path(unit))

    def prune(self, units: Iterable[str]) -> None:
        """Delete the receipts of units not in ``units``."""
        keep = set(units)
        for path in storage.list_files(self.fs, self.directory, ".json"):
            if posixpath.basename(path)[: -len(".json")] not in keep:
                storage.delete_file(self.fs, path)


def pending(items: Sequence, done: Callable[[Any], bool]) -> list:
    """The items whose commit point (``done``) is not there yet, in order."""
    return [item for item in items if not done(item)]
