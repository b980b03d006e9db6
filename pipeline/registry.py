"""Where the plug-ins are found: document stages, the source stage, input readers and steps.

Each table maps a name to ``"module:attribute"``, imported lazily on first use, so a missing optional
dependency of one plug-in does not break the others, and ``pipeline`` imports none of them (the
tables are strings, not imports: no import cycle is possible). A plug-in is one file that defines its
object (a ``Stage`` subclass, a ``Reader``, a ``Step``) plus one line here; code that is not part of
the project (a test, a notebook) registers at run time with ``register(table, name, obj)``.

- ``STAGES``: the names under ``stages:`` in a config; they run in the order the config lists them.
- ``SOURCE``: the first stage, which turns input files into document shards (``pipeline.source``).
- ``READERS``: input formats (an input's ``format:``, or recognised by file name in this order).
- ``STEPS``: what runs after the stages, in this order, when the config has a top-level section of
  that name (or always, for a step with ``section=False``).
"""
from __future__ import annotations

import importlib
from typing import Any

# Name in the config -> "module:Class". Stages run in the order the config lists them.
STAGES: dict[str, str] = {
    "langid": "stages.langid:LangID",
    "rules": "stages.rules:Rules",
    "quality": "stages.quality:Quality",
    "dedup": "stages.dedup:Dedup",
    "decontaminate": "stages.decontaminate:Decontaminate",
    "pii": "stages.pii:PII",
}

SOURCE = "stages.ingest:Ingest"

READERS: dict[str, Any] = {
    "parquet": "stages.readers.parquet:READER",
    "txt": "stages.readers.txt:READER",
    "jsonl": "stages.readers.jsonl:READER",
    "warc": "stages.readers.warc:READER",
    "wet": "stages.readers.warc:WET_READER",
    "html": "stages.readers.html:READER",
}

STEPS: dict[str, Any] = {
    "tokenizer": "tokenizer.step:STEP",
    "mixture": "mixture.step:STEP",
    "report": "pipeline.report_step:STEP",
}

# Commands a plug-in adds to ``python -m pipeline`` (``pipeline.cli``): name -> "module:COMMAND".
COMMANDS: dict[str, Any] = {
    "train-quality": "stages.quality_command:COMMAND",
}


def load(target: Any) -> Any:
    """The object a table entry names: ``"module:attribute"`` is imported (once per process: ingest
    asks for the readers several times per input file); anything else is itself."""
    if not isinstance(target, str):
        return target
    if target not in _LOADED:
        module_name, attribute = target.split(":")
        _LOADED[target] = getattr(importlib.import_module(module_name), attribute)
    return _LOADED[target]


_LOADED: dict[str, Any] = {}


def register(table: dict[str, Any], name: str, target: Any) -> None:
    """Add (or replace) a plug-in at run time: ``register(STEPS, "index", my_step)``."""
    table[name] = target


def stage_class(name: str) -> Any:
    try:
        target = STAGES[name]
    except KeyError:
        known = ", ".join(STAGES)
        raise KeyError(f"unknown stage {name!r}; known stages: {known}") from None
    return load(target)


def source_stage() -> Any:
    return load(SOURCE)


def reader(name: str) -> Any:
    return load(READERS[name])


def readers() -> list[Any]:
    return [load(target) for target in READERS.values()]


def steps() -> list[Any]:
    """Every registered step, in run order."""
    return [load(target) for target in STEPS.values()]


def step(name: str) -> Any:
    return load(STEPS[name])


def commands() -> dict[str, Any]:
    return {name: load(target) for name, target in COMMANDS.items()}
