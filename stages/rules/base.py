"""The kinds of unit the stage runs: a ``Rule`` judges a whole document (a ``RuleGroup`` runs several
in one function), a ``LineCleaner`` removes lines from it (and may drop it outright, e.g. on
``lorem ipsum``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from stages.rules.document import Doc


@dataclass(frozen=True)
class Rule:
    """A named check. ``fails(doc)`` is True when the document must go; the drop reason is ``name``."""

    name: str
    fails: Callable[[Doc], bool]


@dataclass(frozen=True)
class RuleGroup:
    """Consecutive rules checked by one function: ``first_failing(doc)`` is the name of the first
    rule in order that the document fails (its drop reason), or None."""

    first_failing: Callable[[Doc], str | None]


@dataclass
class Cleaned:
    """What a line cleaner did to one document: its new view, or the reason to drop it."""

    doc: Doc
    reason: str | None = None
    removed_lines: dict[str, int] = field(default_factory=dict)
    removed_chars: dict[str, int] = field(default_factory=dict)
    joined_lines: int = 0


class LineCleaner:
    """Base of a line-level cleaner; ``name`` prefixes its line-rule names in the stats."""

    name: str

    def clean(self, doc: Doc) -> Cleaned:
        raise NotImplementedError


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0 for an empty denominator (empty documents are dropped earlier)."""
    return numerator / denominator if denominator else 0.0
