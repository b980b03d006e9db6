"""The steps after the document stages: train the tokenizer, then build the mixture.

``run`` runs them after the last stage when the config has a ``tokenizer:`` or ``mixture:``
section; ``python -m pipeline train-tokenizer CONFIG`` and ``python -m pipeline mixture CONFIG`` run
one alone. Both read the kept/ shards of a finished stage (``finished_shards``).

The tokenizer is redone only when its config or its input changed: ``<work_dir>/tokenizer/_step.json``
records the hash it was trained for (the tokenizer config and the input stage's chained config
hash) and is written after the tokenizer's own files, so its presence means they are complete.
The mixture builder keeps its own receipts (``mixture.run_mixture``). Last, ``run`` writes the HTML
report (``pipeline.html_report``) when anything it summarises is newer than it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipeline import storage
from pipeline.config import PipelineConfig, config_hash
from pipeline.runner import PipelineError, StageSpec, plan_stages, read_manifest

TOKENIZER_DIR = "tokenizer"
STEP_MARKER = "_step.json"


@dataclass(frozen=True)
class FinishedStage:
    """A stage that finished with this config: its spec and its kept/ shards (URIs or local paths,
    in manifest order, each with the sha256 its receipt recorded)."""

    spec: StageSpec
    shards: list[str]
    checksums: list[str]


def finished_stage(config: PipelineConfig, name: str) -> FinishedStage:
    """The stage ``name`` as it finished; PipelineError unless it finished with this config."""
    specs = {spec.name: spec for spec in plan_stages(config)}
    if name not in specs:
        raise PipelineError(f"no stage {name!r} in this config; stages are {', '.join(specs)}")
    spec = specs[name]
    manifest = read_manifest(spec.filesystem, spec)
    if manifest is None or manifest.get("config_hash") != spec.hash:
        raise PipelineError(f"stage {name} has not finished with this config ({spec.directory}); "
                            f"run `python -m pipeline run CONFIG` first")
    files = [file for unit in manifest["units"] for file in unit["kept_files"]]
    # spec.directory is a path on its filesystem; a URI work_dir needs its scheme back.
    scheme = config.work_dir.split("://")[0] + "://" if "://" in config.work_dir else ""
    return FinishedStage(spec, [scheme + storage.join(spec.directory, file["path"]) for file in files],
                         [file["sha256"] for file in files])


def finished_shards(config: PipelineConfig, name: str) -> list[str]:
    """The kept/ Parquet shards of the finished stage ``name``, in manifest order."""
    return finished_stage(config, name).shards


def tokenizer_dir(config: PipelineConfig) -> str:
    """Where the tokenizer is written and read: ``<work_dir>/tokenizer``."""
    return storage.join(config.work_dir, TOKENIZER_DIR)


def train_tokenizer_step(config: PipelineConfig, force: bool = False,
                         log: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Train the configured tokenizer unless it is up to date; its report, or None if not configured."""
    from tokenizer import train_tokenizer

    if config.tokenizer is None:
        return None
    stage = finished_stage(config, config.tokenizer.input_stage)
    directory = tokenizer_dir(config)
    filesystem, local = storage.resolve(directory)
    marker = storage.join(local, STEP_MARKER)
    wanted = config_hash("tokenizer", config.tokenizer, stage.spec.hash)
    if not force and storage.exists(filesystem, marker) and storage.read_json(filesystem, marker)["hash"] == wanted:
        log(f"tokenizer: up to date in {directory}")
        return storage.read_json(filesystem, storage.join(local, "report.json"))
    if storage.exists(filesystem, marker):
        storage.delete_file(filesystem, marker)
    try:
        report = train_tokenizer(config.tokenizer, stage.shards, directory, log=log)
    except ValueError as error:  # the trainer's own message says what to change in the config
        raise PipelineError(str(error)) from error
    storage.write_json(filesystem, marker, {"hash": wanted, "input_stage": stage.spec.name})
    return report


def run_steps(config: PipelineConfig, executor, force: bool = False, log: Callable[[str], None] = print) -> None:
    """The configured steps after the stages, in order: tokenizer, then mixture; then the HTML
    report (``<work_dir>/report.html``), configured steps or not, unless it is newer than all it
    summarises (a rerun of a finished run writes nothing)."""
    from pipeline.html_report import report_is_current, report_path, write_html_report

    train_tokenizer_step(config, force=force, log=log)
    if config.mixture is not None:
        from mixture import run_mixture

        run_mixture(config, executor, log=log, force=force)
    if force or not report_is_current(config):
        write_html_report(config, log=log)
    else:
        log(f"report: up to date ({report_path(config)})")
