"""``python -m pipeline train-quality CONFIG``: the quality stage's command (``registry.COMMANDS``)."""
from __future__ import annotations

from pipeline.errors import PipelineError, StepError
from pipeline.steps import Command, finished_shards


def _run(config, args) -> None:
    from stages.quality_model import model_exists
    from stages.quality_train import train_quality_model

    if "quality" not in config.stages:
        raise StepError("the config has no `stages.quality` section")
    quality = config.stage_configs()["quality"]
    if model_exists(quality.model_path) and not args.force:
        print(f"{quality.model_path} exists; --force retrains it")
        return
    try:
        train_quality_model(quality, run_shards=_run_shards_before(config, "quality") if quality.train.from_run else None)
    except ValueError as error:
        raise StepError(str(error)) from error


def _run_shards_before(config, name: str) -> list[str] | None:
    """The kept/ shards of the stage before ``name`` when it has finished with this config: the
    documents ``name`` will see. None before the run got that far."""
    names = list(config.stages)
    if names.index(name) == 0:
        return None
    before = names[names.index(name) - 1]
    try:
        shards = finished_shards(config, before)
    except PipelineError:
        print(f"quality: stage {before} has not finished; training on the configured sources")
        return None
    print(f"quality: training against the web documents {before} kept ({len(shards)} shards)")
    return shards


COMMAND = Command(
    name="train-quality", run=_run,
    add_arguments=lambda parser: parser.add_argument("--force", action="store_true",
                                                     help="retrain even if the model exists"),
    help="train the quality stage's classifier and language model",
    description="Train the quality model of `stages.quality`: a fastText classifier of curated (gold) text "
    "against the web text the stage will judge, and a gold n-gram language model, then write both and "
    "a report (held-out metrics, per-language calibration) beside `model_path`. When the stage before "
    "quality has finished with this config, its web documents are the negatives and its encyclopedia, "
    "books and papers join the gold (`train.from_run`); otherwise the `train.sources` labelled web are. "
    "`run` trains by itself when the model is missing. A retrained model changes the quality stage's "
    "hash, so the next `run` redoes quality and the stages after it.")
