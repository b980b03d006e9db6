"""The driver: runs stages in order, one task per unit, with receipts, resume and conservation,
then the steps after them. Consecutive per-document stages run as one group, one task per unit of
the first (``pipeline.fusion``; ``fuse: false`` runs each stage to completion before the next).

Layout of a run (``work_dir``)::

    01_ingest/kept/part-000-00000-0000.parquet   documents that go on
    01_ingest/removed/part-000-00000.parquet     documents dropped here, with a `reason` column
    01_ingest/_receipts/000-00000.json           one per finished unit of work: the commit point
    01_ingest/_manifest.json                     every unit's counts and files; complete or not
    01_ingest/_stats.json                        counters merged over all units
    01_ingest/_stage.json                        the config (and its hash) these outputs belong to
    02_langid/...

Planning (what runs, what is up to date) is ``pipeline.planning``; running one unit is
``pipeline.worker``; what is printed is ``pipeline.presentation``. The driver decides what is up to
date before it starts anything: a stage that is done is only reported (no Ray, no task, no file
written). For the stages that do have work it checks, before Ray starts, what would make every task
fail the same way: the input files exist and each stage can be constructed (its model file is there,
its packages import), so a missing asset is one ``error:`` line, not a task retried on every node.
Each stage checks that its input equals what the stage before it kept. On a machine's first run
(numba's cache empty) each stage's compiled loops are built once first, the stages split across the
workers (``pipeline.warmup``).
"""
from __future__ import annotations

import posixpath
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import pyarrow.fs as pafs

from pipeline import commit, storage
from pipeline.config import PipelineConfig
from pipeline.errors import ConservationError, PipelineError  # noqa: F401  (re-exported)
from pipeline.executor import Failure, InProcessExecutor, make_executor
from pipeline.fusion import Chain, follow_ups, fused_tasks, run_chain, stage_group
from pipeline.planning import (StageSpec, Unit, check_stage_assets, check_upstream_finished, ensure_assets,  # noqa: F401
                               list_units, may_run, plan_stages, read_manifest, select, up_to_date, upstream_of)
from pipeline.presentation import StageResult, parallelism_note, removed_by_reason, summary_line
from pipeline.stage import PrepareContext, Stage
from pipeline.steps import run_steps
from pipeline.tally import Keys, Tally
from pipeline.warmup import start_warm_up, warm_up
from pipeline.worker import run_unit


def run_pipeline(config: PipelineConfig, use_ray: bool = True, start: str | None = None,
                 only: str | None = None, force: bool = False, log: Callable[[str], None] = print) -> list[StageResult]:
    """Run the configured stages in order (``start``: from that stage on; ``only``: just that one),
    then, unless ``only`` is given, the configured steps after them (``pipeline.steps``)."""
    unplanned = plan_stages(config, fingerprints=False)
    selected = select([spec.name for spec in unplanned], start, only)
    # Ray starts on the first task, so a run with nothing to do never starts it
    executor = make_executor(config.ray, use_ray, on_start=lambda ray: log(
        f"Ray ready in {ray.startup_seconds:.1f} s, {ray.workers} workers"))
    results = []
    try:
        # A machine's first run only: the workers compile the stages' loops while the driver trains
        # a model (``start_warm_up``), or else before the first stage (``warm_up``).
        compiled = start_warm_up([spec for spec in unplanned if spec.name in selected], executor, log)
        ensure_assets(config, upto=selected[-1], log=log)
        specs = plan_stages(config)
        chosen = [spec for spec in specs if spec.name in selected]
        check_upstream_finished(specs, chosen[0], "--only" if only else "--from")
        runnable = may_run(specs, chosen, config, force)
        check_stage_assets(runnable)
        compiled()
        warm_up(runnable, executor, log)
        position = 0
        while position < len(chosen):
            group = stage_group(specs, chosen, position, config, force)
            if len(group) == 1:
                done = [run_stage(group[0], upstream_of(specs, group[0]), config, executor, force=force, log=log)]
            else:
                done = run_group(group, specs, config, executor, force=force, log=log)
            for result in done:
                log(summary_line(result))
                if note := parallelism_note(result, executor, config):
                    log(note)
            results += done
            position += len(group)
        if only is None:
            run_steps(config, executor, force=force, log=log)
    finally:
        executor.shutdown()
    return results


def run_stage(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig, executor,
              force: bool = False, log: Callable[[str], None] = print) -> StageResult:
    """Run (or resume) one stage and write its manifest and stats.

    A write that fails in the driver for a reason retrying cannot fix (``storage.StorageError``:
    disk full, no permission) stops the run with a PipelineError naming the stage and the path."""
    with _naming(spec):
        return _run_stage(spec, upstream, config, executor, force, log)


@contextmanager
def _naming(spec: StageSpec) -> Iterator[None]:
    """A ``storage.StorageError`` of the driver's work on ``spec``'s directory as a PipelineError
    naming the stage (its message names the path and what to do)."""
    try:
        yield
    except storage.StorageError as error:
        raise PipelineError(f"{spec.label}: {error}") from None


def _run_stage(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig, executor,
               force: bool, log: Callable[[str], None]) -> StageResult:
    started = time.perf_counter()
    fs = spec.filesystem
    units = list_units(spec, upstream, config)
    if not force and (manifest := up_to_date(spec, units)) is not None:
        # read, never written: a finished stage's files keep their bytes and their mtimes
        if upstream is not None:
            _check_stage_input(spec, upstream, manifest["units"])
        return StageResult(spec, manifest["units"], reused=len(units),
                           wall_seconds=time.perf_counter() - started, up_to_date=True)
    _claim_directory(fs, spec, force, log)
    tally, keys = Tally(), Keys([spec.name], [unit.name for unit in units])
    take = tally.taker(lambda receipt: keys.key_of(spec.name, receipt))
    done = _valid_receipts(spec, units, take)
    pending = [unit for unit in units if unit.name not in done]
    if pending:
        _discard_manifest(spec)
        _prepare(spec, units, executor, log)
        for receipt in executor.map(run_unit, [(spec, unit) for unit in pending], spec.label,
                                    sizes=[unit.size for unit in pending], on_result=take):
            done[receipt["unit"]] = receipt
    receipts = [done[unit.name] for unit in units]
    stats = tally.result()
    _finish(spec, upstream, receipts, stats)
    return StageResult(spec, receipts, reused=len(units) - len(pending), wall_seconds=time.perf_counter() - started,
                       reasons=removed_by_reason(stats))


def run_group(group: list[StageSpec], specs: list[StageSpec], config: PipelineConfig, executor,
              force: bool = False, log: Callable[[str], None] = print) -> list[StageResult]:
    """Run (or resume) consecutive per-document stages as one task per unit of the first
    (``pipeline.fusion``), then write each stage's manifest and stats in order, as ``run_stage``
    would. Each result's ``wall_seconds`` is the whole group's: its stages ran at the same time. A
    driver write that fails stops the run naming the stage whose directory it was, as there."""
    started = time.perf_counter()
    units = list_units(group[0], upstream_of(specs, group[0]), config)
    for spec in group:
        with _naming(spec):
            _claim_directory(spec.filesystem, spec, force, log)
    fresh: dict[tuple[str, str], dict] = {}
    keys = Keys([spec.name for spec in group], [unit.name for unit in units])
    tallies = {spec.name: Tally() for spec in group}
    takers = {name: tally.taker(lambda receipt, name=name: keys.key_of(name, receipt)) for name, tally in tallies.items()}
    # A source unit hands on only its first kept file; its others' tasks start when it returns
    # (follow_ups), so a second round finds nothing left: it is a check. Every task commits its
    # first stage and the stages after, so len(group) rounds always suffice.
    for _ in group:
        # the keys of units whose first stages are done come from those stages' receipts
        if not (tasks := fused_tasks(group, units, seen=lambda spec, receipt: keys.key_of(spec.name, receipt))):
            break
        for spec in group:
            with _naming(spec):
                _discard_manifest(spec)
        if any(chain.specs[0] is group[0] for chain, _ in tasks):
            _prepare(group[0], units, executor, log)
        sizes = [unit.size * len(chain.specs) for chain, unit in tasks]  # a longer chain does more per byte
        for receipts in executor.map(run_chain, tasks, Chain(tuple(group)).label, sizes=sizes,
                                     on_result=lambda receipts: [takers[r["stage"]](r) for r in receipts],
                                     more=lambda receipts: follow_ups(group, receipts)):
            fresh.update(((r["stage"], r["unit"]), r) for r in receipts)
    finished = []
    for spec in group:  # in order: each stage's units are the kept files the manifest before lists
        upstream = upstream_of(specs, spec)
        if spec is not group[0]:
            units = list_units(spec, upstream, config)
        done = {u.name: fresh[(spec.name, u.name)] for u in units if (spec.name, u.name) in fresh}
        done.update(spec.ledger.done({u.name: u.fingerprint for u in units if u.name not in done}, spec.hash,
                                     keep=takers[spec.name]))
        if missing := [u.name for u in units if u.name not in done]:
            raise PipelineError(f"{spec.label}: no receipt for {len(missing)} units after the fused tasks, "
                                f"e.g. {missing[0]}")
        receipts = [done[unit.name] for unit in units]
        stats = tallies[spec.name].result()
        with _naming(spec):
            _finish(spec, upstream, receipts, stats)
        finished.append((spec, receipts, sum((spec.name, unit.name) not in fresh for unit in units), stats))
    wall = time.perf_counter() - started
    return [StageResult(spec, receipts, reused=reused, wall_seconds=wall, reasons=removed_by_reason(stats))
            for spec, receipts, reused, stats in finished]


def _discard_manifest(spec: StageSpec) -> None:
    """Before a stage's units are redone: a manifest from an earlier run says it is complete, which
    it is not any more."""
    manifest_path = storage.join(spec.directory, "_manifest.json")
    if storage.exists(spec.filesystem, manifest_path):
        storage.delete_file(spec.filesystem, manifest_path)


def _finish(spec: StageSpec, upstream: StageSpec | None, receipts: list[dict], stats: dict) -> None:
    """Every unit is committed: drop what no unit owns, write the stats (the receipts', merged) and
    manifest, check the input."""
    _remove_unreferenced(spec, receipts)
    _write_manifest(spec, receipts, stats)
    if upstream is not None:
        _check_stage_input(spec, upstream, receipts)


def _prepare(spec: StageSpec, units: list[Unit], executor, log: Callable[[str], None], label: str | None = None) -> None:
    """Run the stage's global pass (``Stage.prepare``), if it has one, before any unit."""
    if spec.stage_type.prepare is Stage.prepare:
        return
    label = label or f"{spec.label} prepare"
    spec.stage_type(spec.config).prepare(PrepareContext(
        inputs={unit.name: unit.source for unit in units}, scratch=spec.scratch, filesystem=spec.filesystem,
        map=lambda fn, items: executor.map(fn, items, label),
        log=lambda message: log(f"[{spec.label}] {message}"), workers=executor.workers))


def _claim_directory(fs: pafs.FileSystem, spec: StageSpec, force: bool, log) -> None:
    """Make the stage directory belong to this config: wipe it if it holds another config's outputs."""
    commit.claim(fs, spec.directory, spec.hash, key="config_hash", marker="_stage.json", force=force, log=log,
                 label=f"[{spec.label}] ", record={"stage": spec.name, "config": spec.config.model_dump(mode="json")})


def _valid_receipts(spec: StageSpec, units: list[Unit], keep: Callable[[dict], dict]) -> dict[str, dict]:
    """Receipts of units already committed with this config and this exact input, by unit, as
    ``keep`` returns them."""
    return spec.ledger.done({unit.name: unit.fingerprint for unit in units}, spec.hash, keep=keep)


def _remove_unreferenced(spec: StageSpec, receipts: list[dict]) -> None:
    """Delete shards and receipts no current unit owns (e.g. an input file that was removed)."""
    fs = spec.filesystem
    referenced = {f["path"] for r in receipts for f in r["kept_files"] + r["removed_files"]}
    for side in ("kept", "removed"):
        for path in storage.list_files(fs, storage.join(spec.directory, side), ".parquet"):
            if f"{side}/{posixpath.basename(path)}" not in referenced:
                storage.delete_file(fs, path)
    spec.ledger.prune(r["unit"] for r in receipts)


def _write_manifest(spec: StageSpec, receipts: list[dict], stats: dict) -> None:
    fs = spec.filesystem
    totals = {key: sum(r[key] for r in receipts) for key in
              ("input_rows", "kept_rows", "removed_rows", "input_bytes", "kept_bytes", "removed_bytes")}
    totals["task_seconds"] = round(sum(r["seconds"] for r in receipts), 3)
    storage.write_json(fs, storage.join(spec.directory, "_stats.json"), stats)
    # last: the manifest is the stage's commit point, read by the next stage and by `report`
    storage.write_json(fs, storage.join(spec.directory, "_manifest.json"), {
        "stage": spec.name, "config_hash": spec.hash, "complete": True, "totals": totals, "units": receipts})


def _check_stage_input(spec: StageSpec, upstream: StageSpec, receipts: list[dict]) -> None:
    expected = read_manifest(spec.filesystem, upstream)["totals"]["kept_rows"]
    got = sum(r["input_rows"] for r in receipts)
    if got != expected:
        raise PipelineError(f"conservation violated: {upstream.name} kept {expected} documents "
                            f"but {spec.name} read {got}")


def debug_stage(config: PipelineConfig, name: str, shard: int = 0, limit: int | None = None,
                log: Callable[[str], None] = print) -> tuple[StageSpec, dict]:
    """Run one stage on one unit in this process, writing under ``<work_dir>/_debug/<stage>/``.

    The stage before it must have finished. Nothing in the real stage directory is touched, so a
    debugging session never disturbs a run's resume state.
    """
    names = [spec.name for spec in plan_stages(config, fingerprints=False)]
    if name not in names:
        raise PipelineError(f"no stage {name!r} in this config; stages are {', '.join(names)}")
    ensure_assets(config, upto=name, log=log)
    specs = plan_stages(config)
    spec = specs[names.index(name)]
    check_upstream_finished(specs, spec, "stage")
    check_stage_assets([spec])
    units = list_units(spec, upstream_of(specs, spec), config)
    if not 0 <= shard < len(units):
        raise PipelineError(f"--shard {shard}: stage {name} has {len(units)} units (0..{len(units) - 1})")
    debug_dir = storage.join(posixpath.dirname(spec.directory), "_debug", f"{spec.index:02d}_{name}")
    spec = replace(spec, directory=debug_dir)
    if spec.filesystem.get_file_info(debug_dir).type != pafs.FileType.NotFound:
        spec.filesystem.delete_dir_contents(debug_dir)
    _prepare(spec, units, InProcessExecutor(), log, label="prepare")
    unit = replace(units[shard], limit=limit)
    log(f"[{spec.label}] unit {unit.name} ({_describe_source(unit.source)})")
    receipt = run_unit((spec, unit))
    if isinstance(receipt, Failure):
        raise PipelineError(receipt.message)
    return spec, receipt


def _describe_source(source) -> str:
    """A unit's input for a person: an upstream shard's path, or the input files of a source unit."""
    if isinstance(source, tuple):
        paths = [getattr(item, "path", str(item)) for item in source]
        return paths[0] if len(paths) == 1 else f"{len(paths)} files: {paths[0]} ... {paths[-1]}"
    return getattr(source, "path", str(source))
