"""Command line: ``python -m pipeline COMMAND ...``; ``--help`` on each explains it."""
from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline import registry, storage
from pipeline.config import load_config
from pipeline.errors import ConfigError, InputError, PipelineError, StepError, TaskFailed
from pipeline.presentation import reason_totals
from pipeline.runner import debug_stage, run_pipeline
from pipeline.steps import run_step

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
    stage.add_argument("--examples", type=int, default=3, help="removed documents to print (default 3)")

    for step in registry.steps():  # a step with a command: `python -m pipeline COMMAND CONFIG`
        if step.command:
            parser_ = commands.add_parser(step.command, help=step.help, description=step.description or step.help)
            parser_.add_argument("config", help=f"YAML config with a `{step.name}:` section")
            parser_.add_argument("--force", action="store_true", help="redo it even if up to date")
            if step.uses_executor:
                parser_.add_argument("--no-ray", action="store_true", help="run every task in this process")
            parser_.set_defaults(step=step)
    for command in registry.commands().values():  # commands of other plug-ins (train-quality)
        parser_ = commands.add_parser(command.name, help=command.help, description=command.description or command.help)
        parser_.add_argument("config", help="YAML config")
        if command.add_arguments is not None:
            command.add_arguments(parser_)
        parser_.set_defaults(plugin_command=command)

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
            print(f"done in {time.perf_counter() - started:.1f} s; outputs under {storage.shown(config.work_dir)}")
        elif args.command == "stage":
            _debug(config, args)
        elif args.command == "report":
            from pipeline.report import print_report

            print_report(config, as_json=args.json)
            if args.html:  # after the tables, so the page's path is the last line; stderr keeps --json parseable
                from pipeline.html_report import write_html_report

                write_html_report(config, log=lambda line: print(line, file=sys.stderr if args.json else sys.stdout))
        elif getattr(args, "step", None) is not None:
            _step(config, args.step, use_ray=not getattr(args, "no_ray", False), force=args.force)
        else:
            args.plugin_command.run(config, args)
    except (ConfigError, PipelineError, TaskFailed, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _step(config, step, use_ray: bool, force: bool) -> None:
    if config.step_config(step.name) is None:
        raise StepError(f"the config has no `{step.name}:` section")
    from pipeline.executor import InProcessExecutor, make_executor

    executor = make_executor(config.ray, use_ray) if step.uses_executor else InProcessExecutor()
    try:
        run_step(step, config, executor, force=force)
    finally:
        executor.shutdown()


def _debug(config, args) -> None:
    spec, receipt = debug_stage(config, args.name, shard=args.shard, limit=args.limit)
    print(f"read {receipt['input_rows']:,} documents: kept {receipt['kept_rows']:,}, "
          f"removed {receipt['removed_rows']:,} in {receipt['seconds']:.2f} s")
    for reason, count in sorted(reason_totals([receipt]).items()):
        print(f"  {reason}: {count:,}")
    for side in ("kept", "removed"):
        for file in receipt[f"{side}_files"]:
            print(f"{side}: {storage.join(spec.directory, file['path'])}")
    removed = [f for f in receipt["removed_files"]]
    if removed and args.examples:
        table = storage.read_parquet(spec.filesystem, storage.join(spec.directory, removed[0]["path"]))
        for row in table.slice(0, args.examples).to_pylist():
            preview = row["text"][:300].replace("\n", " | ")
            print(json.dumps({"id": row["id"], "reason": row["reason"], "text": preview}, ensure_ascii=False))
