"""The run configuration: YAML in, typed and validated objects out.

Every mistake is reported with the key path that caused it (``stages.rules.min_words: Input should be
a valid integer``), and unknown keys are errors, because a misspelt threshold that silently falls back
to its default is the worst kind of bug in a data pipeline.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.registry import stage_class
from pipeline.stage import StageConfig
from tokenizer.config import TokenizerConfig

Category = Literal["web", "encyclopedia", "books", "papers", "code", "others"]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSource(_Strict):
    """One input: a file, a directory or a glob, all of one category."""

    name: str = Field(description="source name written to the `source` column")
    path: str = Field(description="file, directory (searched recursively) or glob; local path or URI")
    category: Category
    format: Literal["auto", "jsonl", "parquet", "txt"] = "auto"
    text_field: str = "text"
    id_field: str | None = Field(None, description="field holding a stable id; default: path and line")


class IngestConfig(StageConfig):
    shard_bytes: int = Field(64_000_000, gt=0, description="target text bytes per output shard")
    max_doc_bytes: int = Field(
        20_000_000, gt=0, description="documents larger than this are bad input (too_large)"
    )
    on_bad_input: Literal["fail", "quarantine"] = Field(
        "quarantine",
        description="fail: stop at the first bad record; quarantine: write it to removed/ with a reason",
    )


class RayConfig(_Strict):
    address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); none starts Ray locally"
    )
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a locally started Ray")
    num_workers: int | None = Field(
        None, gt=0, description="tasks in flight at once; default: the cluster's CPUs"
    )
    max_retries: int = Field(2, ge=0, description="retries of a task whose worker died or raised")


class PipelineConfig(_Strict):
    work_dir: str
    ray: RayConfig = RayConfig()
    inputs: list[InputSource] = Field(min_length=1)
    ingest: IngestConfig = IngestConfig()
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tokenizer: TokenizerConfig | None = Field(
        None, description="train a BPE tokenizer on a finished stage's output after the stages"
    )
    mixture: dict[str, Any] | None = Field(
        None, description="composition table, phases and packed training shards (mixture.MixtureConfig)"
    )

    def stage_configs(self) -> dict[str, StageConfig]:
        """The typed config of every listed stage, in run order (validated in ``load_config``)."""
        return {name: stage_class(name).Config(**(raw or {})) for name, raw in self.stages.items()}


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config; raise ConfigError naming the file and key on any mistake."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "<config>") -> PipelineConfig:
    try:
        config = PipelineConfig(**raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, prefix=())) from None
    for name, stage_raw in config.stages.items():
        try:
            cls = stage_class(name)
        except KeyError as error:
            raise ConfigError(f"{source}: stages.{name}: {error.args[0]}") from None
        try:
            cls.Config(**(stage_raw or {}))
        except ValidationError as error:
            raise ConfigError(_describe(error, source, prefix=("stages", name))) from None
    if config.mixture is not None:
        from mixture import MixtureConfig

        try:
            MixtureConfig(**config.mixture)
        except ValidationError as error:
            raise ConfigError(_describe(error, source, prefix=("mixture",))) from None
    return config


def _describe(error: ValidationError, source: str, prefix: tuple) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in (*prefix, *problem["loc"]))
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def config_hash(*parts: Any) -> str:
    """A short hash of JSON-able parts (stage config, upstream hash, code version), stable across
    processes: sets are sorted, since their iteration order changes with PYTHONHASHSEED."""
    blob = json.dumps(parts, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot hash {type(value).__name__}")
