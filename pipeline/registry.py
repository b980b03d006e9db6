"""Where stage names in a config are looked up. Stages are imported lazily, so a missing optional
dependency of one stage does not break the others."""
from __future__ import annotations

import importlib

from pipeline.stage import Stage

# Name in the config -> "module:Class". Stages run in the order the config lists them.
STAGES: dict[str, str] = {
    "langid": "stages.langid:LangID",
    "rules": "stages.rules:Rules",
    "quality": "stages.quality:Quality",
    "dedup": "stages.dedup:Dedup",
}


def stage_class(name: str) -> type[Stage]:
    try:
        target = STAGES[name]
    except KeyError:
        known = ", ".join(STAGES)
        raise KeyError(f"unknown stage {name!r}; known stages: {known}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
