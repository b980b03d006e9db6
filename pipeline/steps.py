"""The step contract: what runs after the document stages (the tokenizer, the mixture, the report).

A step is one file that defines a ``Step`` and one line in ``pipeline.registry.STEPS``::

    class IndexConfig(StepConfig):            # the config's top-level `index:` section, strict
        input_stage: str = "dedup"

    def run(config, step_config, executor, force, log):   # redo only what changed
        stage = finished_stage(config, step_config.input_stage)
        ...write under step_dir(config, "index")...

    STEP = Step(name="index", Config=IndexConfig, run=run, summary=summary,
                help="build the decontamination index")

``run_pipeline`` runs every registered step whose section the config has (or every one with
``section=False``), in the order of ``STEPS``, after the last stage; ``python -m pipeline STEP_COMMAND
CONFIG`` runs one alone when it sets ``command``. ``summary(config)`` returns what ``python -m pipeline
report`` prints about the step (a dict with a one-line ``text``), or None when it has not run.

Vocabulary: a *stage* transforms documents shard by shard (``pipeline.stage``); a *step* runs after
the stages on their finished output (this module); a *unit* is one committed piece of work of either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from pipeline import registry, storage
from pipeline.errors import PipelineError, StepError
from pipeline.planning import StageSpec, plan_stages, read_manifest

STEP_MARKER = "_step.json"
Log = Callable[[str], None]


class StepConfig(BaseModel):
    """Base of a step's config section: unknown keys are errors; also readable as a mapping
    (``{**config.mixture, "seed": 2}``), as the YAML section it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def keys(self):
        return self.model_dump(mode="json").keys()

    def __getitem__(self, key: str) -> Any:
        return self.model_dump(mode="json")[key]


@dataclass(frozen=True)
class Step:
    """A registered step. ``run(config, step_config, executor, force, log)`` does its work (or finds
    it up to date); ``summary(config)`` describes its outputs for ``report`` (None: nothing yet)."""

    name: str
    run: Callable[..., Any]
    Config: type[BaseModel] | None = None
    summary: Callable[[Any], dict | None] | None = None
    section: bool = True  # runs only when the config has a top-level section `name:`
    command: str | None = None  # `python -m pipeline COMMAND CONFIG` runs this step alone
    help: str = ""
    description: str = ""
    uses_executor: bool = False  # the command starts Ray (or --no-ray) for it


@dataclass(frozen=True)
class Command:
    """A command a plug-in adds to ``python -m pipeline`` (``registry.COMMANDS``):
    ``add_arguments(parser)`` declares its options after CONFIG, ``run(config, args)`` does it
    (StepError or PipelineError for what the user must fix)."""

    name: str
    run: Callable[[Any, Any], None]
    help: str = ""
    description: str = ""
    add_arguments: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class FinishedStage:
    """A stage that finished with this config: its spec and its kept/ shards (URIs or local paths,
    in manifest order, each with the sha256 its receipt recorded)."""

    spec: StageSpec
    shards: list[str]
    checksums: list[str]


def finished_stage(config, name: str) -> FinishedStage:
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
    # spec.directory is a path on its filesystem; a URI work_dir needs its scheme and options back.
    return FinishedStage(spec, [storage.uri_beside(config.work_dir, storage.join(spec.directory, file["path"]))
                                for file in files],
                         [file["sha256"] for file in files])


def finished_shards(config, name: str) -> list[str]:
    """The kept/ Parquet shards of the finished stage ``name``, in manifest order."""
    return finished_stage(config, name).shards


def step_dir(config, name: str) -> str:
    """Where a step writes: ``<work_dir>/<step name>``."""
    return storage.join(config.work_dir, name)


def configured_steps(config) -> list[tuple[Step, Any]]:
    """The steps this config runs, in registry order, each with its typed config (None if it has none)."""
    chosen = []
    for step in registry.steps():
        step_config = config.step_config(step.name)
        if step_config is not None or not step.section:
            chosen.append((step, step_config))
    return chosen


def run_step(step: Step, config, executor, force: bool = False, log: Log = print) -> Any:
    """Run one step; StepError when the config lacks the section it needs."""
    step_config = config.step_config(step.name)
    if step.section and step_config is None:
        raise StepError(f"the config has no `{step.name}:` section")
    return step.run(config, step_config, executor, force, log)


def run_steps(config, executor, force: bool = False, log: Log = print) -> None:
    """The configured steps after the stages, in registry order."""
    for step, _ in configured_steps(config):
        run_step(step, config, executor, force=force, log=log)
