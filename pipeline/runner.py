"""The runner: executes stages in order, one task per shard, with receipts, resume and conservation.

Layout of a run (``work_dir``)::

    01_ingest/kept/part-000-00000-0000.parquet   documents that go on
    01_ingest/removed/part-000-00000.parquet     documents dropped here, with a `reason` column
    01_ingest/_receipts/000-00000.json           one per finished unit of work: the commit point
    01_ingest/_manifest.json                     every unit's counts and files; complete or not
    01_ingest/_stats.json                        counters merged over all units
    01_ingest/_stage.json                        the config (and its hash) these outputs belong to
    02_langid/...

A unit's outputs are written atomically, then its receipt; a unit with a receipt whose config hash
and input fingerprint still match is never redone, so a rerun resumes where the last one stopped.
Each stage's hash covers its config and the hash of the stage before it, so a config change
invalidates that stage and those after it, not earlier ones. Every unit checks that rows in equal
rows kept plus rows removed before it commits, and each stage checks that its input equals what the
stage before it kept.

The driver decides what is up to date before it starts anything: a stage whose manifest has its
config hash and lists exactly the current units with their current input fingerprints is done, and
is only reported (``ingest: up to date``): no Ray, no task, no file written. For the stages that do
have work, it checks in the driver, before Ray starts, what would make every task fail the same way:
the input files exist, and each stage can be constructed (its model file is there, its packages
import), so a missing asset is one ``error:`` line, not a task retried on every node. ``--from`` and
``--only`` need the stage before to be finished; when it is not, the message names the first stage
of the run that has no finished output.
"""
from __future__ import annotations

import hashlib
import posixpath
import time
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.config import PipelineConfig, config_hash
from pipeline.executor import Failure, make_executor
from pipeline.registry import stage_class
from pipeline.stage import REASON_COLUMN, PrepareContext, Stage, StageConfig
from pipeline.stats import Stats
from stages.ingest import InputError, InputFile, list_input_files, read_file, text_bytes

INGEST = "ingest"


class ConservationError(Exception):
    """A unit's rows in differ from its rows kept plus removed: a bug in a stage, so never retried."""


class PipelineError(Exception):
    """A run that cannot go on; the message says which stage and what to do."""


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to run one stage's unit: sent with every task."""

    index: int
    name: str
    config: StageConfig
    hash: str
    directory: str  # a path on ``filesystem`` (for s3://bucket/run: "bucket/run/02_langid")
    filesystem: pafs.FileSystem
    stage_type: type[Stage] | None = None  # resolved in the driver; None for ingest

    @property
    def label(self) -> str:
        return f"{self.index:02d} {self.name}"


@dataclass(frozen=True)
class Unit:
    """One unit of work: an input file (ingest) or an upstream shard (every other stage)."""

    unit: str
    source: str | InputFile
    fingerprint: str
    limit: int | None = None  # debugging only: process just the first N documents


@dataclass
class StageResult:
    spec: StageSpec
    receipts: list[dict]
    reused: int
    wall_seconds: float
    extra: dict = field(default_factory=dict)
    up_to_date: bool = False  # nothing to do: receipts come from the manifest (without stats)


def plan_stages(config: PipelineConfig, fingerprints: bool = True) -> list[StageSpec]:
    """Every stage of the run, in order, with its directory and chained config hash.

    The hash covers each stage's config, code version and asset fingerprint (its model file), and
    the hash of the stage before it. ``fingerprints=False`` skips reading the assets, for callers
    that only need names and directories.
    """
    fs, root = storage.resolve(config.work_dir)
    specs = []
    upstream = config_hash(INGEST, config.ingest, [source.model_dump() for source in config.inputs])
    specs.append(StageSpec(1, INGEST, config.ingest, upstream, storage.join(root, f"01_{INGEST}"), fs))
    for index, (name, stage_config) in enumerate(config.stage_configs().items(), start=2):
        stage_type = stage_class(name)
        assets = stage_type.fingerprint(stage_config) if fingerprints else ""
        upstream = config_hash(name, stage_config, getattr(stage_type, "version", 1), assets, upstream)
        specs.append(StageSpec(index, name, stage_config, upstream, storage.join(root, f"{index:02d}_{name}"),
                               fs, stage_type))
    return specs


# ----------------------------------------------------------------------------------- the worker side

_LOADED: dict[tuple[str, str], Stage] = {}


def _stage_instance(spec: StageSpec) -> Stage:
    """The stage object of this worker process; built (and its models loaded) once per config."""
    key = (spec.name, spec.hash)
    if key not in _LOADED:
        _LOADED[key] = spec.stage_type(spec.config)
    return _LOADED[key]


def run_unit(task: tuple[StageSpec, Unit]) -> dict | Failure:
    """Process one unit and commit it with a receipt. Runs inside a Ray task (or in-process).

    The receipt is written last, after every output file is complete: a unit that fails part-way
    (a crash, a full disk) has no receipt, and a rerun redoes it."""
    spec, unit = task
    started = time.perf_counter()
    fs = spec.filesystem
    try:
        if spec.name == INGEST:
            receipt = _ingest_unit(spec, unit, fs)
        else:
            receipt = _map_unit(spec, unit, fs)
        receipt.update(unit=unit.unit, stage=spec.name, config_hash=spec.hash,
                       input_fingerprint=unit.fingerprint, seconds=round(time.perf_counter() - started, 4))
        _check_conservation(spec, receipt)
        storage.write_json(fs, _receipt_path(spec, unit.unit), receipt)
    except (InputError, ConservationError) as error:  # the same input fails the same way again
        return Failure(str(error))
    except storage.StorageError as error:  # disk full, no permission: retrying will not help
        return Failure(f"unit {unit.unit}: {error}")
    return receipt


def _ingest_unit(spec: StageSpec, unit: Unit, fs: pafs.FileSystem) -> dict:
    kept_files, stats = [], Stats()
    for table, batches in read_file(unit.source, spec.config, limit=unit.limit):
        if table.num_rows:
            name = f"part-{unit.unit}-{len(kept_files):04d}"
            kept_files.append(_write(fs, spec, "kept", name, table))
            stats.merge(output_stats(table, kept=True))
    removed = batches.take_removed()
    stats.merge(batches.stats).merge(output_stats(removed, kept=False))
    removed_files = [_write(fs, spec, "removed", f"part-{unit.unit}", removed)] if removed.num_rows else []
    read_bytes = sum(f["bytes"] for f in kept_files + removed_files)
    return _receipt(batches.records, read_bytes, kept_files, removed_files, stats)


def _map_unit(spec: StageSpec, unit: Unit, fs: pafs.FileSystem) -> dict:
    stage = _stage_instance(spec)
    stage.begin_shard(unit.unit, _scratch(spec), fs)
    with fs.open_input_file(unit.source) as source:
        parquet = pq.ParquetFile(source)
        table = parquet.read()
    if unit.limit is not None:
        table = table.slice(0, unit.limit)
    output = stage.process(table)
    if output.kept.num_rows + output.removed.num_rows != table.num_rows:
        raise ConservationError(
            f"stage {spec.name} lost rows in {unit.unit}: read {table.num_rows}, "
            f"kept {output.kept.num_rows}, removed {output.removed.num_rows}")
    stats = Stats().merge(output.stats)
    stats.merge(output_stats(output.kept, kept=True)).merge(output_stats(output.removed, kept=False))
    kept_file = _write(fs, spec, "kept", unit.unit, output.kept)
    removed_file = _write(fs, spec, "removed", unit.unit, output.removed)
    return _receipt(table.num_rows, text_bytes(table), [kept_file], [removed_file], stats)


def _write(fs: pafs.FileSystem, spec: StageSpec, side: str, name: str, table: pa.Table) -> dict:
    path = storage.join(spec.directory, side, f"{name}.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=2000)
    data = sink.getvalue()
    storage.write_bytes(fs, path, data)
    return {"path": f"{side}/{name}.parquet", "rows": table.num_rows, "bytes": text_bytes(table),
            "sha256": hashlib.sha256(data).hexdigest()}


def _receipt(input_rows: int, input_bytes: int, kept: list[dict], removed: list[dict], stats: Stats) -> dict:
    return {
        "input_rows": input_rows,
        "input_bytes": input_bytes,
        "kept_rows": sum(f["rows"] for f in kept),
        "kept_bytes": sum(f["bytes"] for f in kept),
        "removed_rows": sum(f["rows"] for f in removed),
        "removed_bytes": sum(f["bytes"] for f in removed),
        "kept_files": kept,
        "removed_files": removed,
        "stats": stats,
    }


def _check_conservation(spec: StageSpec, receipt: dict) -> None:
    if receipt["input_rows"] != receipt["kept_rows"] + receipt["removed_rows"]:
        raise ConservationError(
            f"conservation violated in stage {spec.name}, unit {receipt['unit']}: "
            f"{receipt['input_rows']} in != {receipt['kept_rows']} kept + {receipt['removed_rows']} removed")


def output_stats(table: pa.Table, kept: bool) -> Stats:
    """Documents and text bytes per category, per language (when known) and per removal reason."""
    stats = Stats()
    if table.num_rows == 0:
        return stats
    side = "kept" if kept else "removed"
    lengths = pc.binary_length(table.column("text"))
    keys = [("category", "by_category")]
    if "lang" in table.column_names:
        keys.append(("lang", "by_lang"))
    if not kept:
        keys.append((REASON_COLUMN, "by_reason"))
    for column, heading in keys:
        grouped = pa.table({"key": pc.fill_null(table.column(column), "unknown"), "len": lengths})
        for row in grouped.group_by("key").aggregate([("len", "sum"), ("len", "count")]).to_pylist():
            stats.add(heading, row["key"], f"{side}_docs", row["len_count"])
            stats.add(heading, row["key"], f"{side}_bytes", row["len_sum"] or 0)
    if not kept:
        for reason, doc_id in zip(table.column(REASON_COLUMN).to_pylist(), table.column("id").to_pylist()):
            stats.example("examples", reason, doc_id)
    return stats


def _scratch(spec: StageSpec) -> str:
    return storage.join(spec.directory, "_scratch")


def _receipt_path(spec: StageSpec, unit: str) -> str:
    return storage.join(spec.directory, "_receipts", f"{unit}.json")


# ----------------------------------------------------------------------------------- the driver side

def run_pipeline(config: PipelineConfig, use_ray: bool = True, start: str | None = None,
                 only: str | None = None, force: bool = False, log: Callable[[str], None] = print) -> list[StageResult]:
    """Run the configured stages in order (``start``: from that stage on; ``only``: just that one),
    then, unless ``only`` is given, the configured steps after them: tokenizer and mixture."""
    from pipeline.steps import run_steps

    selected = _select([spec.name for spec in plan_stages(config, fingerprints=False)], start, only)
    _ensure_assets(config, upto=selected[-1], log=log)
    specs = plan_stages(config)
    chosen = [spec for spec in specs if spec.name in selected]
    _check_upstream_finished(specs, chosen[0], "--only" if only else "--from")
    _check_stage_assets(_may_run(specs, chosen, config, force))
    # Ray starts on the first task, so a run with nothing to do never starts it
    executor = make_executor(config.ray, use_ray, on_start=lambda ray: log(
        f"Ray ready in {ray.startup_seconds:.1f} s, {ray.workers} workers"))
    results = []
    try:
        for spec in chosen:
            upstream = specs[spec.index - 2] if spec.index > 1 else None
            result = run_stage(spec, upstream, config, executor, force=force, log=log)
            log(summary_line(result))
            results.append(result)
        if only is None:
            run_steps(config, executor, force=force, log=log)
    finally:
        executor.shutdown()
    return results


def _finished(spec: StageSpec) -> bool:
    """Whether the stage has a complete manifest written with its current config hash."""
    manifest = read_manifest(spec.filesystem, spec)
    return bool(manifest and manifest.get("complete") and manifest.get("config_hash") == spec.hash)


def _check_upstream_finished(specs: list[StageSpec], first: StageSpec, option: str) -> None:
    """``--from``/``--only`` a later stage: the stage before it must be finished with this config.
    If it is not, name the first stage of the run without finished output, which is where to start
    (not just the one before, which would lead the user back one stage per attempt)."""
    if first.index == 1 or _finished(specs[first.index - 2]):
        return
    missing = next(spec for spec in specs if not _finished(spec))
    raise PipelineError(
        f"{option} {first.name}: stage {specs[first.index - 2].name} has no finished output with this "
        f"config, and the first stage without one is {missing.name}: run "
        f"`python -m pipeline run CONFIG --from {missing.name}`")


def _may_run(specs: list[StageSpec], chosen: list[StageSpec], config: PipelineConfig, force: bool) -> list[StageSpec]:
    """The chosen stages that may have work: from the first one that is not up to date on. (A later
    stage that is up to date now may not be once an earlier one has rerun.) Listing the inputs here
    also stops a run whose input is missing before anything starts."""
    for position, spec in enumerate(chosen):
        upstream = specs[spec.index - 2] if spec.index > 1 else None
        if force or _up_to_date(spec, _units(spec, upstream, config, spec.filesystem)) is None:
            return chosen[position:]
    return []


def _check_stage_assets(specs: list[StageSpec]) -> None:
    """Construct each stage in the driver, as every worker will: a model file or a package that is
    missing fails here, once, with one line naming it, instead of in every task and every retry."""
    for spec in specs:
        if spec.stage_type is None:  # ingest: its assets are the input files, listed already
            continue
        try:
            spec.stage_type(spec.config)
        except (ImportError, OSError, ValueError, RuntimeError) as error:
            hint = " (install the project with `pip install -e .`; see README.md)" if isinstance(error, ImportError) else ""
            raise PipelineError(f"stage {spec.name} cannot start: {type(error).__name__}: {error}{hint}") from None


def _ensure_assets(config: PipelineConfig, upto: str, log: Callable[[str], None]) -> None:
    """Build what the stages up to ``upto`` need beyond their config (the quality model) before
    the run is planned, since those files' fingerprints are part of the stage hashes."""
    stage_configs = list(config.stage_configs().items())
    names = [name for name, _ in stage_configs]
    last = names.index(upto) if upto in names else -1  # ingest has no assets
    for name, stage_config in stage_configs[:last + 1]:
        try:
            stage_class(name).ensure_assets(stage_config, log)
        except ValueError as error:  # e.g. no training data configured: the message says which
            raise PipelineError(str(error)) from error
        except (ImportError, FileNotFoundError) as error:  # a package or file building the asset needs
            raise PipelineError(f"stage {name} cannot start: {type(error).__name__}: {error}") from None


def _select(names: list[str], start: str | None, only: str | None) -> list[str]:
    """The stage names ``--from``/``--only`` select, in run order."""
    for option, value in (("--from", start), ("--only", only)):
        if value is not None and value not in names:
            raise PipelineError(f"{option} {value}: no such stage in this config; stages are {', '.join(names)}")
    if only:
        return [only]
    if start:
        return names[names.index(start):]
    return names


def run_stage(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig, executor,
              force: bool = False, log: Callable[[str], None] = print) -> StageResult:
    """Run (or resume) one stage and write its manifest and stats.

    A write that fails in the driver for a reason retrying cannot fix (``storage.StorageError``:
    disk full, no permission) stops the run with a PipelineError naming the stage and the path."""
    try:
        return _run_stage(spec, upstream, config, executor, force, log)
    except storage.StorageError as error:
        raise PipelineError(f"{spec.label}: {error}") from None


def _run_stage(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig, executor,
               force: bool, log: Callable[[str], None]) -> StageResult:
    started = time.perf_counter()
    fs = spec.filesystem
    units = _units(spec, upstream, config, fs)
    if not force and (manifest := _up_to_date(spec, units)) is not None:
        # read, never written: a finished stage's files keep their bytes and their mtimes
        if upstream is not None:
            _check_stage_input(spec, upstream, manifest["units"], fs)
        return StageResult(spec, manifest["units"], reused=len(units),
                           wall_seconds=time.perf_counter() - started, up_to_date=True)
    _claim_directory(fs, spec, force, log)
    done = {r["unit"]: r for r in _valid_receipts(fs, spec, units)}
    pending = [unit for unit in units if unit.unit not in done]
    if pending:
        manifest = storage.join(spec.directory, "_manifest.json")
        if storage.exists(fs, manifest):  # from an earlier run: this stage is not complete any more
            storage.delete_file(fs, manifest)
        if _has_prepare(spec):
            spec.stage_type(spec.config).prepare(PrepareContext(
                inputs={unit.unit: unit.source for unit in units},
                scratch=_scratch(spec), filesystem=fs,
                map=lambda fn, items: executor.map(fn, items, f"{spec.label} prepare"),
                log=lambda message: log(f"[{spec.label}] {message}")))
        for receipt in executor.map(run_unit, [(spec, unit) for unit in pending], spec.label):
            done[receipt["unit"]] = receipt
    receipts = [done[unit.unit] for unit in units]
    _remove_unreferenced(fs, spec, receipts)
    _write_manifest(fs, spec, receipts)
    if upstream is not None:
        _check_stage_input(spec, upstream, receipts, fs)
    return StageResult(spec, receipts, reused=len(units) - len(pending), wall_seconds=time.perf_counter() - started)


def _up_to_date(spec: StageSpec, units: list[Unit]) -> dict | None:
    """The stage's manifest if it says the stage finished with this config hash on exactly these
    units and input fingerprints (so there is nothing to redo), else None."""
    manifest = read_manifest(spec.filesystem, spec)
    if not manifest or not manifest.get("complete") or manifest.get("config_hash") != spec.hash:
        return None
    recorded = [(unit.get("unit"), unit.get("input_fingerprint")) for unit in manifest.get("units", [])]
    return manifest if recorded == [(unit.unit, unit.fingerprint) for unit in units] else None


def _has_prepare(spec: StageSpec) -> bool:
    return spec.stage_type is not None and spec.stage_type.prepare is not Stage.prepare


def _claim_directory(fs: pafs.FileSystem, spec: StageSpec, force: bool, log) -> None:
    """Make the stage directory belong to this config: wipe it if it holds another config's outputs."""
    marker = storage.join(spec.directory, "_stage.json")
    previous = storage.read_json(fs, marker).get("config_hash") if storage.exists(fs, marker) else None
    if previous is not None and (force or previous != spec.hash):
        why = "--force" if force else "its config (or an earlier stage's) changed"
        log(f"[{spec.label}] discarding earlier outputs: {why}")
        storage.delete_dir_contents(fs, spec.directory)
    storage.remove_temporaries(fs, spec.directory)
    if force or previous != spec.hash:  # a resumed stage's marker is already this one
        storage.write_json(fs, marker, {"stage": spec.name, "config_hash": spec.hash,
                                        "config": spec.config.model_dump(mode="json")})


def _units(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig, fs) -> list[Unit]:
    if upstream is None:
        units = []
        for source_index, source in enumerate(config.inputs):
            try:
                files = list_input_files(source)
            except InputError as error:
                raise PipelineError(str(error)) from None
            for file_index, item in enumerate(files):
                source_fs, _ = storage.resolve(source.path)
                info = source_fs.get_file_info(item.path)
                units.append(Unit(f"{source_index:03d}-{file_index:05d}", item, f"{info.size}:{info.mtime_ns}"))
        return units
    manifest = read_manifest(fs, upstream)
    if manifest is None or not manifest.get("complete") or manifest.get("config_hash") != upstream.hash:
        raise PipelineError(f"stage {spec.name} needs the finished output of {upstream.name}, which is "
                            f"missing or stale; run `python -m pipeline run CONFIG --from {upstream.name}`")
    units = []
    for receipt in manifest["units"]:
        for kept in receipt["kept_files"]:
            name = posixpath.basename(kept["path"])[: -len(".parquet")]
            units.append(Unit(name, storage.join(upstream.directory, kept["path"]), kept["sha256"]))
    return units


def _valid_receipts(fs, spec: StageSpec, units: list[Unit]) -> list[dict]:
    """Receipts of units already committed with this config and this exact input."""
    valid = []
    for unit in units:
        path = _receipt_path(spec, unit.unit)
        if storage.exists(fs, path):
            receipt = storage.read_json(fs, path)
            if receipt.get("config_hash") == spec.hash and receipt.get("input_fingerprint") == unit.fingerprint:
                valid.append(receipt)
    return valid


def _remove_unreferenced(fs, spec: StageSpec, receipts: list[dict]) -> None:
    """Delete shards and receipts no current unit owns (e.g. an input file that was removed)."""
    referenced = {f["path"] for r in receipts for f in r["kept_files"] + r["removed_files"]}
    for side in ("kept", "removed"):
        for path in storage.list_files(fs, storage.join(spec.directory, side), ".parquet"):
            if f"{side}/{posixpath.basename(path)}" not in referenced:
                storage.delete_file(fs, path)
    units = {r["unit"] for r in receipts}
    for path in storage.list_files(fs, storage.join(spec.directory, "_receipts"), ".json"):
        if posixpath.basename(path)[: -len(".json")] not in units:
            storage.delete_file(fs, path)


def _write_manifest(fs, spec: StageSpec, receipts: list[dict]) -> None:
    totals = {key: sum(r[key] for r in receipts) for key in
              ("input_rows", "kept_rows", "removed_rows", "input_bytes", "kept_bytes", "removed_bytes")}
    totals["task_seconds"] = round(sum(r["seconds"] for r in receipts), 3)
    units = [{k: v for k, v in r.items() if k != "stats"} for r in receipts]
    merged = Stats()
    for receipt in receipts:
        merged.merge(receipt["stats"])
    storage.write_json(fs, storage.join(spec.directory, "_stats.json"), merged)
    # last: the manifest is the stage's commit point, read by the next stage and by `report`
    storage.write_json(fs, storage.join(spec.directory, "_manifest.json"), {
        "stage": spec.name, "config_hash": spec.hash, "complete": True, "totals": totals, "units": units})


def read_manifest(fs, spec: StageSpec) -> dict | None:
    """The stage's manifest, or None when it has none (it never finished, or is redoing units)."""
    return storage.read_json_if_exists(fs, storage.join(spec.directory, "_manifest.json"))


def _check_stage_input(spec: StageSpec, upstream: StageSpec, receipts: list[dict], fs) -> None:
    expected = read_manifest(fs, upstream)["totals"]["kept_rows"]
    got = sum(r["input_rows"] for r in receipts)
    if got != expected:
        raise PipelineError(f"conservation violated: {upstream.name} kept {expected} documents "
                            f"but {spec.name} read {got}")


def summary_line(result: StageResult) -> str:
    """One line per stage: documents in/kept/removed by reason, size and speed; for a stage that
    was up to date, just that (it did nothing, so a speed would mean nothing)."""
    receipts = result.receipts
    docs_in = sum(r["input_rows"] for r in receipts)
    kept = sum(r["kept_rows"] for r in receipts)
    if result.up_to_date:
        return (f"{result.spec.name}: up to date ({len(receipts)} units, {docs_in:,} in, {kept:,} kept, "
                f"{docs_in - kept:,} removed)")
    reasons: dict[str, int] = {}
    for receipt in receipts:
        for reason, counts in receipt["stats"].get("by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + counts.get("removed_docs", 0)
    removed = ", ".join(f"{reason} {count:,}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))
    megabytes = sum(r["input_bytes"] for r in receipts) / 1e6
    task_seconds = sum(r["seconds"] for r in receipts)
    speed = f"{megabytes / result.wall_seconds:.1f} MB/s" if result.wall_seconds else "-"
    per_core = f"{megabytes / task_seconds:.1f} MB/s per task" if task_seconds else "-"
    reuse = f", {result.reused} reused" if result.reused else ""
    return (f"[{result.spec.label}] {len(receipts)} units{reuse} | {docs_in:,} in, {kept:,} kept, "
            f"{docs_in - kept:,} removed ({removed or 'none'}) | {megabytes:.1f} MB, "
            f"{result.wall_seconds:.1f} s, {speed}, {per_core}")


def debug_stage(config: PipelineConfig, name: str, shard: int = 0, limit: int | None = None,
                log: Callable[[str], None] = print) -> tuple[StageSpec, dict]:
    """Run one stage on one unit in this process, writing under ``<work_dir>/_debug/<stage>/``.

    The stage before it must have finished. Nothing in the real stage directory is touched, so a
    debugging session never disturbs a run's resume state.
    """
    from dataclasses import replace

    from pipeline.executor import InProcessExecutor

    names = [spec.name for spec in plan_stages(config, fingerprints=False)]
    if name not in names:
        raise PipelineError(f"no stage {name!r} in this config; stages are {', '.join(names)}")
    _ensure_assets(config, upto=name, log=log)
    specs = plan_stages(config)
    spec = specs[names.index(name)]
    upstream = specs[spec.index - 2] if spec.index > 1 else None
    _check_upstream_finished(specs, spec, "stage")
    _check_stage_assets([spec])
    units = _units(spec, upstream, config, spec.filesystem)
    if not 0 <= shard < len(units):
        raise PipelineError(f"--shard {shard}: stage {name} has {len(units)} units (0..{len(units) - 1})")
    debug_dir = storage.join(posixpath.dirname(spec.directory), "_debug", f"{spec.index:02d}_{name}")
    spec = replace(spec, directory=debug_dir)
    if spec.filesystem.get_file_info(debug_dir).type != pafs.FileType.NotFound:
        spec.filesystem.delete_dir_contents(debug_dir)
    if _has_prepare(spec):
        executor = InProcessExecutor()
        spec.stage_type(spec.config).prepare(PrepareContext(
            inputs={unit.unit: unit.source for unit in units}, scratch=_scratch(spec),
            filesystem=spec.filesystem, map=lambda fn, items: executor.map(fn, items, "prepare"),
            log=lambda message: log(f"[{spec.label}] {message}")))
    unit = replace(units[shard], limit=limit)
    log(f"[{spec.label}] unit {unit.unit} ({unit.source if isinstance(unit.source, str) else unit.source.path})")
    receipt = run_unit((spec, unit))
    if isinstance(receipt, Failure):
        raise PipelineError(receipt.message)
    return spec, receipt
