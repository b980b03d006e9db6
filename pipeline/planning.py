"""Planning a run: which stages, their directories and chained config hashes, their units of work,
and what is already done. Pure reads: nothing here writes a file or starts a task.

Each stage's hash covers its config, its asset fingerprint (a model file) and the hash of the stage
before it, so a config change invalidates that stage and those after it, not earlier ones. A stage
whose manifest has its hash and lists exactly the current units with their current input
fingerprints is up to date. The first stage is the registered source stage (``registry.SOURCE``,
ingest): its units are input files; every later stage's units are the kept shards of the one before.
"""
from __future__ import annotations

import posixpath
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow.fs as pafs

from pipeline import registry, storage
from pipeline.commit import Ledger
from pipeline.config import PipelineConfig, config_hash
from pipeline.errors import InputError, PipelineError
from pipeline.stage import Stage, StageConfig


@dataclass(frozen=True)
class StageSpec:
    """Everything a worker needs to run one stage's unit: sent with every task."""

    index: int
    name: str
    config: StageConfig
    hash: str
    directory: str  # a path on ``filesystem`` (for s3://bucket/run: "bucket/run/02_langid")
    filesystem: pafs.FileSystem
    stage_type: type[Stage]
    batch_rows: int = 10_000  # rows per batch when the stage streams its shard

    @property
    def label(self) -> str:
        return f"{self.index:02d} {self.name}"

    @property
    def scratch(self) -> str:
        return storage.join(self.directory, "_scratch")

    @property
    def ledger(self) -> Ledger:
        """The stage's receipts (``pipeline.commit``), one per unit, under ``_receipts/``."""
        return Ledger(self.filesystem, storage.join(self.directory, "_receipts"), key="config_hash")


@dataclass(frozen=True)
class Unit:
    """One unit of work: an input file (the source stage) or an upstream shard (every other stage)."""

    name: str
    source: Any  # an upstream shard's path, or what the source stage lists (an InputFile)
    fingerprint: str
    limit: int | None = None  # debugging only: process just the first N documents
    # bytes of input (an upstream shard's text, a source unit's files): an estimate of the unit's
    # work, which only orders the tasks (largest first, ``executor.map``'s ``sizes``)
    size: int = 0

    @property
    def unit(self) -> str:  # the receipt key; kept for code that names tasks by it (test fixtures)
        return self.name


def plan_stages(config: PipelineConfig, fingerprints: bool = True) -> list[StageSpec]:
    """Every stage of the run, in order, with its directory and chained config hash.

    ``fingerprints=False`` skips reading the assets, for callers that only need names and directories.
    """
    fs, root = storage.resolve(config.work_dir)
    source = registry.source_stage()
    source_config = source.source_config(config)
    upstream = config_hash(source.name, source_config, source.hash_inputs(config))
    specs = [StageSpec(1, source.name, source_config, upstream, storage.join(root, f"01_{source.name}"), fs, source,
                       config.batch_rows)]
    for index, (name, stage_config) in enumerate(config.stage_configs().items(), start=2):
        stage_type = registry.stage_class(name)
        assets = stage_type.fingerprint(stage_config) if fingerprints else ""
        # the 1 stands where a per-stage code version once was: it keeps the hashes of earlier runs
        upstream = config_hash(name, stage_config, 1, assets, upstream)
        specs.append(StageSpec(index, name, stage_config, upstream, storage.join(root, f"{index:02d}_{name}"),
                               fs, stage_type, config.batch_rows))
    return specs


def upstream_of(specs: list[StageSpec], spec: StageSpec) -> StageSpec | None:
    return specs[spec.index - 2] if spec.index > 1 else None


def read_manifest(fs, spec: StageSpec) -> dict | None:
    """The stage's manifest, or None when it has none (it never finished, or is redoing units)."""
    return storage.read_json_if_exists(fs, storage.join(spec.directory, "_manifest.json"))


def list_units(spec: StageSpec, upstream: StageSpec | None, config: PipelineConfig) -> list[Unit]:
    """The units of a stage: the source stage's input files, or the upstream stage's kept shards.

    The source stage's are listed once per ``spec`` object, that is once per run (``plan_stages``
    makes new ones each run): a run asks for them three times while it plans, and listing 20,000
    input files took 0.2 s each time (one request per thousand files on object storage)."""
    if upstream is None:
        listed = _SOURCE_UNITS.get(id(spec))
        if listed is not None and listed[0]() is spec:
            return list(listed[1])
        try:
            units = [Unit(name, item, fingerprint, size=_source_bytes(item))
                     for name, item, fingerprint in spec.stage_type.units(config)]
        except InputError as error:
            raise PipelineError(str(error)) from None
        key = id(spec)
        _SOURCE_UNITS[key] = (weakref.ref(spec, lambda _: _SOURCE_UNITS.pop(key, None)), units)
        return list(units)
    manifest = read_manifest(spec.filesystem, upstream)
    if manifest is None or not manifest.get("complete") or manifest.get("config_hash") != upstream.hash:
        raise PipelineError(f"stage {spec.name} needs the finished output of {upstream.name}, which is "
                            f"missing or stale; run `python -m pipeline run CONFIG --from {upstream.name}`")
    return kept_units(upstream, manifest["units"])


_SOURCE_UNITS: dict[int, tuple[weakref.ref, list[Unit]]] = {}


def kept_units(upstream: StageSpec, receipts: list[dict]) -> list[Unit]:
    """The units the kept files of ``upstream``'s receipts are for the stage after it: one per
    file, named as the file, its sha256 the fingerprint."""
    return [Unit(kept_unit_name(kept), storage.join(upstream.directory, kept["path"]), kept["sha256"],
                 size=kept["bytes"]) for receipt in receipts for kept in receipt["kept_files"]]


def kept_unit_name(kept: dict) -> str:
    """The name of the unit a kept file is for the stage after: the file's name without ``.parquet``."""
    return posixpath.basename(kept["path"])[: -len(".parquet")]


def _source_bytes(item: Any) -> int:
    """The bytes of what a source unit reads: its input files' listed sizes (-1 where not listed; a
    piece of a file counts the whole file, which is only an estimate)."""
    items = item if isinstance(item, (tuple, list)) else (item,)
    return sum(max(int(getattr(part, "size", 0) or 0), 0) for part in items)


def up_to_date(spec: StageSpec, units: list[Unit]) -> dict | None:
    """The stage's manifest if it says the stage finished with this config hash on exactly these
    units and input fingerprints (so there is nothing to redo), else None."""
    manifest = read_manifest(spec.filesystem, spec)
    if not manifest or not manifest.get("complete") or manifest.get("config_hash") != spec.hash:
        return None
    recorded = [(unit.get("unit"), unit.get("input_fingerprint")) for unit in manifest.get("units", [])]
    return manifest if recorded == [(unit.name, unit.fingerprint) for unit in units] else None


def select(names: list[str], start: str | None, only: str | None) -> list[str]:
    """The stage names ``--from``/``--only`` select, in run order."""
    for option, value in (("--from", start), ("--only", only)):
        if value is not None and value not in names:
            raise PipelineError(f"{option} {value}: no such stage in this config; stages are {', '.join(names)}")
    if only:
        return [only]
    if start:
        return names[names.index(start):]
    return names


def _finished(spec: StageSpec) -> bool:
    """Whether the stage has a complete manifest written with its current config hash."""
    manifest = read_manifest(spec.filesystem, spec)
    return bool(manifest and manifest.get("complete") and manifest.get("config_hash") == spec.hash)


def check_upstream_finished(specs: list[StageSpec], first: StageSpec, option: str) -> None:
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


def may_run(specs: list[StageSpec], chosen: list[StageSpec], config: PipelineConfig, force: bool) -> list[StageSpec]:
    """The chosen stages that may have work: from the first one that is not up to date on. (A later
    stage that is up to date now may not be once an earlier one has rerun.) Listing the inputs here
    also stops a run whose input is missing before anything starts."""
    for position, spec in enumerate(chosen):
        if force or up_to_date(spec, list_units(spec, upstream_of(specs, spec), config)) is None:
            return chosen[position:]
    return []


def check_stage_assets(specs: list[StageSpec]) -> None:
    """Construct each stage in the driver, as every worker will: a model file or a package that is
    missing fails here, once, with one line naming it, instead of in every task and every retry."""
    for spec in specs:
        try:
            spec.stage_type(spec.config)
        except (ImportError, OSError, ValueError, RuntimeError) as error:
            hint = " (install the project with `pip install -e .`; see README.md)" if isinstance(error, ImportError) else ""
            raise PipelineError(f"stage {spec.name} cannot start: {type(error).__name__}: {error}{hint}") from None


def ensure_assets(config: PipelineConfig, upto: str, log: Callable[[str], None]) -> None:
    """Build what the stages up to ``upto`` need beyond their config (the quality model) before
    the run is planned, since those files' fingerprints are part of the stage hashes."""
    stage_configs = list(config.stage_configs().items())
    names = [name for name, _ in stage_configs]
    last = names.index(upto) if upto in names else -1  # the source stage has no assets
    for name, stage_config in stage_configs[:last + 1]:
        try:
            registry.stage_class(name).ensure_assets(stage_config, log)
        except ValueError as error:  # e.g. no training data configured: the message says which
            raise PipelineError(str(error)) from error
        except (ImportError, FileNotFoundError) as error:  # a package or file building the asset needs
            raise PipelineError(f"stage {name} cannot start: {type(error).__name__}: {error}") from None
