"""Command line: ``python -m pipeline COMMAND ...``; ``--help`` on each explains it."""
from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline import storage
from pipeline.config import ConfigError, load_config
from pipeline.executor import TaskFailed
from pipeline.runner import PipelineError, debug_stage, run_pipeline
from stages.ingest import InputError

DESCRIPTION = """\
Clean a text corpus for LLM pretraining: ingest -> language ID -> rules -> quality model -> dedup,
each stage writing Parquet shards (kept/ and removed/ with a reason) under the config's work_dir;
then train the BPE tokenizer and build the mixture (composition table, packed training shards).
Runs on Ray: set ray.address in the config (or RAY_ADDRESS) to join a cluster; otherwise Ray starts
locally. Finished work is never redone, so rerunning a command resumes it."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every stage, then tokenizer and mixture (resumes)",
                              description="Run every configured stage in order, then the tokenizer and "
                              "mixture steps when the config has those sections. Work that already "
                              "finished with the same config is skipped, so this also resumes.")
    run.add_argument("config", help="YAML config, e.g. configs/sample.yaml")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage (earlier ones must be done)")
    group.add_argument("--only", metavar="STAGE",
                       help="run just this stage, not the steps after (the stage before it must be done)")
    run.add_argument("--force", action="store_true", help="discard and redo the selected stages and steps")
    run.add_argument("--no-ray", action="store_true", help="run every task in this process, one at a time")

    stage = commands.add_parser("stage", help="run one stage on one shard in this process, for debugging",
                                description="Run one stage on one unit (an input file for ingest, a shard "
                                "otherwise) in this process, so print() and debuggers work. Output goes to "
                                "<work_dir>/_debug/<stage>/ and never touches the run's own outputs.")
    stage.add_argument("name", help="stage name: ingest, or a name under `stages:` in the config")
    stage.add_argument("config", help="YAML config")
    stage.add_argument("--shard", type=int, default=0, help="index of the unit to run (default 0)")
    stage.add_argument("--limit", type=int, default=None, help="process only the first N documents")
    stage.add_argument("--no-ray", action="store_true", help="accepted for symmetry: this command never uses Ray")
    stage.add_argument("--examples", type=int, default=3, help="removed documents to print (default 3)")

    quality = commands.add_parser(
        "train-quality", help="train the quality stage's classifier and language model",
        description="Train the quality model of `stages.quality`: a fastText classifier of curated (gold) text "
        "against the web text the stage will judge, and a gold n-gram language model, then write both and "
        "a report (held-out metrics, per-language calibration) beside `model_path`. When the stage before "
        "quality has finished with this config, its web documents are the negatives and its encyclopedia, "
        "books and papers join the gold (`train.from_run`); otherwise the `train.sources` labelled web are. "
        "`run` trains by itself when the model is missing. A retrained model changes the quality stage's "
        "hash, so the next `run` redoes quality and the stages after it.")
    quality.add_argument("config", help="YAML config with a `stages.quality` section")
    quality.add_argument("--force", action="store_true", help="retrain even if the model exists")

    tokenizer = commands.add_parser(
        "train-tokenizer", help="train the BPE tokenizer on a finished stage's output",
        description="Train the sentencepiece BPE tokenizer of the config's `tokenizer:` section on the "
        "kept shards of `tokenizer.input_stage` (dedup by default), export tokenizer.json and evaluate "
        "it on held-out documents; writes <work_dir>/tokenizer/. Skipped when up to date.")
    tokenizer.add_argument("config", help="YAML config with a `tokenizer:` section")
    tokenizer.add_argument("--force", action="store_true", help="retrain even if up to date")

    mix = commands.add_parser(
        "mixture", help="count tokens, write the composition table and the packed training shards",
        description="With the trained tokenizer, count the tokens of the cleaned corpus per category and "
        "language (the report's Table 1, as Markdown, CSV, JSON and a chart), sample the configured "
        "phases and pack them into fixed-length training sequences; writes <work_dir>/mixture/.")
    mix.add_argument("config", help="YAML config with `tokenizer:` and `mixture:` sections")
    mix.add_argument("--force", action="store_true", help="redo it even if up to date")
    mix.add_argument("--no-ray", action="store_true", help="run every task in this process")

    report = commands.add_parser("report", help="summarise a finished or partial run",
                                 description="Print what each stage kept and removed, why, and how fast, "
                                 "from the manifests and receipts under work_dir. --html also writes "
                                 "<work_dir>/report.html: one self-contained page (inline SVG charts, no "
                                 "script, no network) with the funnel, removal reasons and removed documents, "
                                 "score histograms with thresholds, duplicate clusters, tokenizer compression, "
                                 "the mixture, run times, config hashes and versions. `run` writes it too.")
    report.add_argument("config", help="YAML config")
    report.add_argument("--json", action="store_true", help="print the summary as JSON")
    report.add_argument("--html", action="store_true",
                        help="write <work_dir>/report.html (reads manifests, stats and a bounded sample of rows)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "run":
            started = time.perf_counter()
            run_pipeline(config, use_ray=not args.no_ray, start=args.start, only=args.only, force=args.force)
            print(f"done in {time.perf_counter() - started:.1f} s; outputs under {config.work_dir}")
        elif args.command == "stage":
            _debug(config, args)
        elif args.command == "train-quality":
            _train_quality(config, force=args.force)
        elif args.command == "train-tokenizer":
            _train_tokenizer(config, force=args.force)
        elif args.command == "mixture":
            _mixture(config, use_ray=not args.no_ray, force=args.force)
        elif args.command == "report":
            from pipeline.report import print_report

            print_report(config, as_json=args.json)
            if args.html:  # after the tables, so the page's path is the last line; stderr keeps --json parseable
                from pipeline.html_report import write_html_report

                write_html_report(config, log=lambda line: print(line, file=sys.stderr if args.json else sys.stdout))
    except (ConfigError, PipelineError, TaskFailed, InputError, StepError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


class StepError(Exception):
    """A command that cannot run with this config (a section it needs is missing)."""


def _train_quality(config, force: bool) -> None:
    from stages.quality_model import model_exists
    from stages.quality_train import train_quality_model

    if "quality" not in config.stages:
        raise StepError("the config has no `stages.quality` section")
    quality = config.stage_configs()["quality"]
    if model_exists(quality.model_path) and not force:
        print(f"{quality.model_path} exists; --force retrains it")
        return
    try:
        train_quality_model(quality, run_shards=_run_shards_before(config, "quality") if quality.train.from_run else None)
    except ValueError as error:
        raise StepError(str(error)) from error


def _run_shards_before(config, name: str) -> list[str] | None:
    """The kept/ shards of the stage before ``name`` when it has finished with this config: the
    documents ``name`` will see. None before the run got that far."""
    from pipeline.steps import finished_shards

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


def _train_tokenizer(config, force: bool) -> None:
    from pipeline.steps import train_tokenizer_step

    if config.tokenizer is None:
        raise StepError("the config has no `tokenizer:` section")
    train_tokenizer_step(config, force=force)


def _mixture(config, use_ray: bool, force: bool) -> None:
    if config.mixture is None:
        raise StepError("the config has no `mixture:` section")
    from mixture import run_mixture
    from pipeline.executor import make_executor

    executor = make_executor(config.ray, use_ray)
    try:
        run_mixture(config, executor, force=force)
    finally:
        executor.shutdown()


def _debug(config, args) -> None:
    spec, receipt = debug_stage(config, args.name, shard=args.shard, limit=args.limit)
    print(f"read {receipt['input_rows']:,} documents: kept {receipt['kept_rows']:,}, "
          f"removed {receipt['removed_rows']:,} in {receipt['seconds']:.2f} s")
    for reason, counts in sorted(receipt["stats"].get("by_reason", {}).items()):
        print(f"  {reason}: {counts['removed_docs']:,}")
    for side in ("kept", "removed"):
        for file in receipt[f"{side}_files"]:
            print(f"{side}: {storage.join(spec.directory, file['path'])}")
    removed = [f for f in receipt["removed_files"]]
    if removed and args.examples:
        table = storage.read_parquet(spec.filesystem, storage.join(spec.directory, removed[0]["path"]))
        for row in table.slice(0, args.examples).to_pylist():
            preview = row["text"][:300].replace("\n", " | ")
            print(json.dumps({"id": row["id"], "reason": row["reason"], "text": preview}, ensure_ascii=False))
