"""The run configuration: YAML in, typed and validated objects out.

Every mistake is reported with the key path that caused it (``stages.rules.min_words: Input should be
a valid integer``), and unknown keys are errors, because a misspelt threshold that silently falls back
to its default is the worst kind of bug in a data pipeline. For the same reason types are strict
(``max_doc_bytes: true`` is not 1, ``shard_bytes: "100000"`` is not a number), a key given twice in
one YAML mapping is an error naming the key and both lines (YAML itself would keep the last one), and
input names must be unique (they prefix every document id).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from pipeline import registry
from pipeline.errors import ConfigError
from pipeline.readers import unread_option
from pipeline.stage import CATEGORIES, StageConfig

Category = Literal[CATEGORIES]  # the one list is pipeline.stage.CATEGORIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UrlFilterConfig(_Strict):
    """URL block/allow lists of an input (``stages.web.urlfilter``): files of one rule a line, ``#``
    comments, as UT1's blacklists are; local paths or URIs, read once per worker process."""

    block_domains: tuple[str, ...] = Field((), description="files of blocked domains: a domain blocks itself "
                                           "and its subdomains (UT1 `domains` files)")
    block_urls: tuple[str, ...] = Field((), description="files of blocked URL substrings, matched scheme-less "
                                        "and case-insensitively (UT1 `urls` files)")
    allow_domains: tuple[str, ...] = Field((), description="files of allowed domains: a URL on one of them (or a "
                                           "subdomain) is kept whatever the block lists say")


class InputSource(_Strict):
    """One input: a file, a directory or a glob, all of one ``category``, or of the categories its
    records name in ``category_field`` (a mixed dataset need not be split by category first).

    Which of the optional keys an input may set depends on its reader (``Reader.options``): a key the
    reader would not read is an error, never silently ignored."""

    name: str = Field(description="source name written to the `source` column")
    path: str = Field(description="file, directory (searched recursively) or glob; local path or URI")
    category: Category | None = Field(None, description="the category of every record (with category_field: of "
                                       "records whose field is empty); one of category, category_field is required")
    category_field: str | None = Field(None, description="JSONL/Parquet: field holding each record's category "
                                       "(one of the pipeline's categories; another value is bad input: bad_category)")
    lang_field: str | None = Field(None, description="JSONL/Parquet: field holding each record's language, a "
                                   "code such as en, zh or zh-Hant; langid takes it instead of classifying "
                                   "(langid.declared_lang); empty: not declared; any other value is bad input: "
                                   "bad_lang")
    format: str = Field("auto", description="a registered reader (jsonl, parquet, txt, warc, wet, html: "
                                            "pipeline.registry.READERS), or auto: told from the file name")
    text_field: str = "text"
    id_field: str | None = Field(None, description="field holding a stable id; default: path and line")
    html_field: str | None = Field(None, description="JSONL/Parquet: field holding a page's HTML; its main text "
                                   "(charset resolved, boilerplate removed) becomes the document text")
    extractor: Literal["auto", "trafilatura", "trafilatura_fast", "resiliparse"] = Field(
        "auto", description="main-text extractor of HTML (warc, html, html_field); stages.web.html.METHODS")
    url_filter: UrlFilterConfig | None = Field(
        None, description="warc, wet, and JSONL/Parquet records with a `url` field: records whose URL a block "
                          "list matches are removed (url_blocked) before any extraction")

    @model_validator(mode="after")
    def _has_a_category(self) -> "InputSource":
        if self.category is None and self.category_field is None:
            raise ValueError("set `category` (one for every record) or `category_field` (each record's own)")
        return self


class IngestConfig(StageConfig):
    shard_bytes: int = Field(64_000_000, gt=0, description="target text bytes per output shard; also the size "
                             "of a unit of ingest work: smaller files of one input are read together up to it "
                             "by their size on disk (a compressed file holds more text than that), and a reader "
                             "that can (Parquet, by row groups; plain JSON lines, by byte range) cuts a larger file "
                             "into pieces of about that much text; where the footers tell a unit's text (Parquet), "
                             "it is cut into the nearest whole number of equal shards")
    max_files_per_unit: int = Field(1_000, gt=0, description="most files one ingest task reads (1: one task per "
                                    "file); bounds a task's list of files when inputs are tiny")
    max_doc_bytes: int = Field(20_000_000, gt=0, description="documents larger than this are bad input (too_large); "
                               "a record of over 8 times as many raw bytes is not read (record_too_large)")
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
    """The run config. Top-level sections other than these fields belong to registered steps
    (``pipeline.registry.STEPS``): ``config.step_config(name)``, or ``config.<name>``, is the typed
    config of a step's section, None when the config has no such section."""

    work_dir: str
    ray: RayConfig = RayConfig()
    inputs: list[InputSource] = Field(min_length=1)
    ingest: IngestConfig = IngestConfig()
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    batch_rows: int = Field(10_000, gt=0, description="rows per batch (whole row groups) of a stage that streams "
                            "its shard (Stage.whole_shard = False); bounds a task's memory, never its output")
    fuse: bool = Field(True, description="run consecutive per-document stages (no global pass: langid, rules, "
                       "quality, pii; ingest may lead) as one task per unit, each stage's kept rows handed to "
                       "the next in memory (pipeline.fusion); the files written are the same either way")
    _steps: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("stages", mode="before")
    @classmethod
    def _no_stages(cls, value: Any) -> Any:
        """``stages:`` with every stage commented out (YAML null) is no stages: ingest alone."""
        return {} if value is None else value

    def stage_configs(self) -> dict[str, StageConfig]:
        """The typed config of every listed stage, in run order (validated in ``load_config``)."""
        return {name: registry.stage_class(name).Config(**(raw or {})) for name, raw in self.stages.items()}

    def step_config(self, name: str) -> Any:
        """The typed config of the step section ``name``, or None when the config has none."""
        return (self.__pydantic_private__ or {}).get("_steps", {}).get(name)

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_") and name in registry.STEPS:
            return self.step_config(name)
        return super().__getattr__(name)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML loading keeps the last value, so ``max_doc_bytes`` written twice (say, once in a
    block copied from another config) silently changes a threshold; here it is an error naming the
    key and the lines of both occurrences."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}  # only this mapping's own keys: overriding a key merged in with `<<:` is fine
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own check reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise ConfigError(f"line {line}: duplicate key {key!r} (first given at line {first}); "
                                      "remove one of them")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a YAML config; raise ConfigError naming the file and key on any mistake."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "<config>") -> PipelineConfig:
    """Validate a config mapping (as YAML gives it); raise ConfigError naming ``source`` and the key."""
    core = {key: value for key, value in raw.items() if key not in registry.STEPS}
    _validate_strictly(PipelineConfig, core, source, prefix=())
    try:
        config = PipelineConfig(**core)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, prefix=())) from None
    _check_input_names(config, source)
    _check_formats(config, source)
    _check_reader_options(config, source)
    for name, stage_raw in config.stages.items():
        try:
            cls = registry.stage_class(name)
        except KeyError as error:
            raise ConfigError(f"{source}: stages.{name}: {error.args[0]}") from None
        _typed(cls.Config, stage_raw or {}, source, ("stages", name))
    for name in registry.STEPS:
        section = raw.get(name)
        if section is None:
            continue
        if isinstance(section, BaseModel):  # a section taken from another config object
            section = section.model_dump(mode="json")
        step = registry.step(name)
        if step.Config is None:
            raise ConfigError(f"{source}: {name}: unknown key (the {name} step takes no configuration)")
        config._steps[name] = _typed(step.Config, section, source, (name,))
    return config


def _typed(model: type[BaseModel], raw: Any, source: str, prefix: tuple) -> BaseModel:
    """``model(**raw)``, strictly; ConfigError naming the key under ``prefix`` on any mistake."""
    _validate_strictly(model, raw, source, prefix=prefix)
    try:
        return model(**raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, prefix=prefix)) from None
    except TypeError:  # not a mapping at all
        raise ConfigError(f"{source}: {'.'.join(prefix)}: expected a mapping, got {type(raw).__name__}") from None


def _check_formats(config: PipelineConfig, source: str) -> None:
    """An input's ``format`` must be ``auto`` or a registered reader (worded as pydantic words a Literal)."""
    for index, item in enumerate(config.inputs):
        if item.format != "auto" and item.format not in registry.READERS:
            *first, last = [repr(name) for name in ["auto", *sorted(registry.READERS)]]
            raise ConfigError(f"{source}: inputs.{index}.format: Input should be {', '.join(first)} or {last}")


def _check_reader_options(config: PipelineConfig, source: str) -> None:
    """An input of a named format may set only the keys its reader reads (with ``format: auto`` the
    source stage checks each file's reader when it lists the files)."""
    for index, item in enumerate(config.inputs):
        if item.format != "auto" and (problem := unread_option(item, registry.reader(item.format))):
            raise ConfigError(f"{source}: inputs.{index}.{problem}")


def _validate_strictly(model: type[BaseModel], raw: Any, source: str, prefix: tuple) -> None:
    """Reject values pydantic's default (lax) mode would coerce: ``true`` for a number (it reads 1),
    ``"100000"`` for an int, ``1`` for a bool.

    Validated as JSON in strict mode, because that is strict about exactly those scalars while still
    taking what YAML can only spell one way: a list for a tuple field, a string for a Literal or a
    path. YAML values JSON has no type for (dates) go in as strings, as lax mode would read them."""
    try:
        blob = json.dumps(raw, default=str)
    except (TypeError, ValueError):  # not JSON-shaped at all: the lax validation reports it
        return
    try:
        model.model_validate_json(blob, strict=True)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, prefix=prefix)) from None


def _check_input_names(config: PipelineConfig, source: str) -> None:
    """Input names must be unique and contain no ``/``: a document id is ``<input name>/...``, so two
    inputs of one name (or ``web`` next to ``web/x``) could give two documents the same id."""
    first: dict[str, int] = {}
    for index, item in enumerate(config.inputs):
        if not item.name or "/" in item.name:
            raise ConfigError(f"{source}: inputs.{index}.name: {item.name!r}: an input name must be non-empty "
                              "and contain no '/' (it is the first part of every document id)")
        if item.name in first:
            raise ConfigError(f"{source}: inputs.{index}.name: duplicate input name {item.name!r} (also "
                              f"inputs.{first[item.name]}.name); input names must be unique, since they "
                              "prefix the ids of their documents")
        first[item.name] = index


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
