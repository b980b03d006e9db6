"""The mixture as a pipeline step (``pipeline.steps``); ``mixture.build`` keeps its own receipts."""
from __future__ import annotations

from pipeline import storage
from pipeline.steps import Step, step_dir
from mixture.config import MixtureConfig

NAME = "mixture"


def _run(config, settings, executor, force, log):
    from mixture.build import run_mixture

    return run_mixture(config, executor, log=log, force=force)


def summary(config) -> dict | None:
    """The corpus's token total and the phases written, for ``python -m pipeline report``."""
    fs, directory = storage.resolve(step_dir(config, NAME))
    composition = storage.read_json_if_exists(fs, storage.join(directory, "composition.json"))
    if not composition:
        return None
    manifest = storage.read_json_if_exists(fs, storage.join(directory, "manifest.json"))
    out = {"directory": directory, "tokens": sum(row["tokens"] for row in composition["by_category"]),
           "phases": [{"name": p["name"], "sequences": p["sequences"], "tokens": p["tokens"]}
                      for p in (manifest or {}).get("phases", [])]}
    phases = "; ".join(f"{p['name']} {p['sequences']:,} sequences, {p['tokens']:,} tokens" for p in out["phases"])
    out["text"] = (f"mixture: {out['tokens']:,} tokens in the corpus; {phases or 'no training shards yet'} "
                   f"(table: {directory}/composition.md)")
    return out


STEP = Step(name=NAME, Config=MixtureConfig, run=_run, summary=summary, command="mixture", uses_executor=True,
            help="count tokens, write the composition table and the packed training shards",
            description="With the trained tokenizer, count the tokens of the cleaned corpus per category and "
            "language (the report's Table 1, as Markdown, CSV, JSON and a chart), sample the configured "
            "phases and pack them into fixed-length training sequences; writes <work_dir>/mixture/.")
