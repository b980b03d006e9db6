"""The tokenizer as a pipeline step (``pipeline.steps``): trains when its config or input changed.

``<work_dir>/tokenizer/_step.json`` records the hash it was trained for (the tokenizer config and the
input stage's chained config hash) and is written after the tokenizer's own files, so its presence
means they are complete. The driver only plans and merges: the sample is drawn by tasks and the
trainer runs in a task of its own (``tokenizer.train``).
"""
from __future__ import annotations

from typing import Any, Callable

from pipeline import storage
from pipeline.commit import Ledger
from pipeline.config import config_hash
from pipeline.errors import PipelineError
from pipeline.steps import STEP_MARKER, Step, finished_stage, step_dir
from tokenizer.config import TokenizerConfig

NAME = "tokenizer"


def tokenizer_dir(config) -> str:
    """Where the tokenizer is written and read: ``<work_dir>/tokenizer``."""
    return step_dir(config, NAME)


def train_tokenizer_step(config, executor=None, force: bool = False,
                         log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train the configured tokenizer unless it is up to date; its report, or None if not configured.
    ``executor`` runs the tasks (``pipeline.executor``; None: this process)."""
    from tokenizer.train import train_tokenizer

    settings = config.step_config(NAME)
    if settings is None:
        return None
    stage = finished_stage(config, settings.input_stage)
    directory = tokenizer_dir(config)
    filesystem, local = storage.resolve(directory)
    # one unit, the whole tokenizer, whose receipt is _step.json: written after every file it names
    ledger = Ledger(filesystem, local, key="hash")
    unit = STEP_MARKER[: -len(".json")]
    wanted = config_hash(NAME, settings, stage.spec.hash)
    if not force and ledger.done([unit], wanted):
        log(f"tokenizer: up to date in {directory}")
        return storage.read_json(filesystem, storage.join(local, "report.json"))
    ledger.forget(unit)
    try:
        report = train_tokenizer(settings, stage.shards, directory, log=log, executor=executor)
    except ValueError as error:  # the trainer's own message says what to change in the config
        raise PipelineError(str(error)) from error
    ledger.commit(unit, {"hash": wanted, "input_stage": stage.spec.name})
    return report


def summary(config) -> dict | None:
    """Size and compression of the trained tokenizer, for ``python -m pipeline report``."""
    fs, directory = storage.resolve(tokenizer_dir(config))
    report = storage.read_json_if_exists(fs, storage.join(directory, "report.json"))
    if not report:
        return None
    evaluation = report["evaluation"]
    out = {"directory": directory, "vocab_size": report["tokenizer"]["vocab_size"],
           "bytes_per_token": evaluation["overall"]["bytes_per_token"],
           "round_trip_failures": evaluation["round_trip"]["failures"]}
    out["text"] = (f"tokenizer: {out['vocab_size']:,} entries, {out['bytes_per_token']} bytes/token on held-out "
                   f"documents, {out['round_trip_failures']} round-trip failures ({directory})")
    return out


STEP = Step(
    name=NAME, Config=TokenizerConfig, summary=summary, command="train-tokenizer", uses_executor=True,
    run=lambda config, settings, executor, force, log: train_tokenizer_step(config, executor, force, log),
    help="train the BPE tokenizer on a finished stage's output",
    description="Train the sentencepiece BPE tokenizer of the config's `tokenizer:` section on the "
    "kept shards of `tokenizer.input_stage` (dedup by default), export tokenizer.json and evaluate "
    "it on held-out documents; writes <work_dir>/tokenizer/. Skipped when up to date. The sample is "
    "drawn by Ray tasks and the trainer runs in one Ray task on a whole node (--no-ray: in this process).",
)
