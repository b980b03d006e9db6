"""The `mixture:` section of a run config: phases, their target weights and budgets, and packing."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.config import Category  # the one category list: pipeline.stage.CATEGORIES
from pipeline.steps import StepConfig

# The InternLM report's Table 1: share of tokens per source category in the pretraining corpus.
REPORT_TABLE_1 = {"web": 75.1, "encyclopedia": 4.9, "books": 4.5, "papers": 3.3, "code": 7.6, "others": 4.6}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PhaseConfig(_Strict):
    """One training phase: how many tokens, drawn from which categories (and languages) in what shares.

    Token counts here are packed tokens: a document's tokens plus its end-of-document separator.
    """

    name: str = Field("pretrain", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="phase name; names its directory of training shards")
    tokens: int | None = Field(
        None, gt=0,
        description="token budget of the phase; null: the largest budget the weights allow before a "
        "category runs out (given max_epochs and what earlier phases consumed)",
    )
    weights: dict[Category, float] = Field(
        default_factory=lambda: dict(REPORT_TABLE_1),
        description="target share of the budget per category (normalised to sum 1; unlisted: 0)",
    )
    languages: dict[Category, dict[str, float]] = Field(
        default_factory=dict,
        description="optional split of a category's share by `lang` (normalised within the category; "
        "languages not listed are not drawn); categories not listed keep their own language mix",
    )

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(weight < 0 for weight in weights.values()):
            raise ValueError("weights must be >= 0")
        if sum(weights.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return weights

    @field_validator("languages")
    @classmethod
    def _positive_language_shares(cls, languages: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for category, shares in languages.items():
            if any(share < 0 for share in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"{category}: language shares must be >= 0 with at least one > 0")
        return languages

    @model_validator(mode="after")
    def _languages_of_weighted_categories(self) -> "PhaseConfig":
        unweighted = sorted(set(self.languages) - set(self.category_shares()))
        if unweighted:
            raise ValueError(f"languages given for categories without a weight: {unweighted}")
        return self

    def category_shares(self) -> dict[str, float]:
        """Target share per category with a positive weight, summing to 1."""
        total = sum(self.weights.values())
        return {category: weight / total for category, weight in self.weights.items() if weight > 0}


class MixtureConfig(StepConfig):
    """Composition table, phase sampling and packing of the cleaned corpus into training shards."""

    input_stage: str = Field("dedup", description="stage whose kept/ shards are the corpus (the last one)")
    seed: int = Field(0, description="salt of the per-document hashes that sample and shuffle")
    sampling_bins: int = Field(
        4096, ge=16, le=65_536,
        description="resolution of phase sampling: each document hashes to one of this many bins per "
        "category and language (a split one's pieces to consecutive bins, see max_piece_tokens), and "
        "phases take ranges of whole bins, so realised token counts are exact and a phase misses its "
        "target by at most half a bin (one piece on a small corpus)",
    )
    max_piece_tokens: int = Field(
        1024, ge=16,
        description="sampling granularity: documents with more tokens are split, at newlines or sentence "
        "ends, into pieces of at most this many tokens, and piece k goes to the sampling bin after piece "
        "k - 1's, so that no bin is large enough to throw a phase's weights off (a category misses its "
        "target by at most about half a piece; keep this well under weight_tolerance x the smallest "
        "phase budget). Pieces are not training units: a phase that takes consecutive pieces of a "
        "document packs them as that stretch of the document, in order, with one end-of-document id "
        "after it, and continues it across rows of seq_len + 1, so this does not bound the context a "
        "document gets and need not match seq_len. It sets how often a phase takes a document in "
        "part: only where its range of bins begins or ends inside the document's pieces, which happens "
        "to about (tokens of split documents) / (max_piece_tokens x sampling_bins) documents per "
        "category and range end (up to twice that: a piece holds half to all of max_piece_tokens); "
        "1,024 keeps the sample within a point of its weights; on a corpus of billions of tokens raise it (or sampling_bins) to cut "
        "fewer",
    )
    weight_tolerance: float = Field(
        0.01, gt=0, lt=1,
        description="a category whose realised weight in a phase is further than this from its target "
        "(0.01: one percentage point) is reported: a warning and a note in phases.md",
    )
    max_epochs: dict[Category, float] = Field(
        default_factory=dict,
        description="passes over a category allowed across all phases; unlisted: 1 (a document "
        "consumed by a phase is never reused); 2 lets later phases repeat it once",
    )
    phases: list[PhaseConfig] = Field(
        default_factory=lambda: [PhaseConfig()], min_length=1,
        description="training phases in order; each draws documents earlier phases left",
    )
    seq_len: int = Field(
        2048, ge=8, description="training context; packed rows hold seq_len + 1 tokens (inputs and targets)"
    )
    sequences_per_shard: int = Field(
        50_000, gt=0, description="rows per training shard, on average (documents are dealt to shards "
        "by hash); 50,000 rows of 2,049 uint16 tokens is about 200 MB"
    )
    rows_per_row_group: int = Field(1024, gt=0, description="Parquet row group size of the training shards")
    megatron: bool = Field(False, description="also write each phase as a Megatron-LM .bin/.idx dataset")
    gather: Literal["auto", "always", "never"] = Field(
        "auto",
        description="two-level shuffle (mixture.gather): a phase of T training shards dealt from S input "
        "shards costs its pack tasks S x T file reads (one row group of every scatter file each: 6 x "
        "10^8 on the 5 TB plan of docs/scaling.md), each parsing a footer that lists T row groups. With "
        "the gather level, scatter writes a row group per block of gather_block training shards, one "
        "task per block reads it from every scatter file and writes a file per training shard, and "
        "each pack task reads that file alone: S x T / gather_block + T reads, for writing the dealt "
        "tokens once more. auto: per phase, when S x T exceeds gather_above_reads and the gather level "
        "reads less. The training shards are byte-identical either way, so changing this (or the two "
        "options below) never repacks them (it deals again what is not packed yet)",
    )
    gather_above_reads: int = Field(
        500_000, ge=0,
        description="with gather: auto, the file reads of a one-level pack step (input shards S x "
        "training shards T of the phase) above which the phase is gathered first. Each such read also "
        "parses a scatter file footer that lists all T shards (about 15 us per shard, measured), "
        "S x T x T x 15 us in all, while gathering rewrites the dealt tokens once (about 25 MB/s per "
        "core), T x 8 s with shards of 200 MB: they break even near S x T = 5 x 10^5 on local disk. "
        "On an object store, where every read is also a request, a lower value pays "
        "(docs/scaling.md, \"Reads per task\")",
    )
    gather_block: int = Field(
        128, ge=1,
        description="training shards per gather task (B): the file reads of a phase's pack step fall "
        "from S x T to S x T / B + T. A gather task keeps B output files open and holds, per training "
        "shard of its block, the runs not yet written as a row group: up to about 1.4 MiB (180 MiB at "
        "128), besides one scatter file's footer and row groups at a time",
    )

    @field_validator("max_epochs")
    @classmethod
    def _at_least_one_epoch(cls, epochs: dict[str, float]) -> dict[str, float]:
        if any(value < 1 for value in epochs.values()):
            raise ValueError("max_epochs must be >= 1 (1 = every document at most once)")
        return epochs

    @model_validator(mode="after")
    def _distinct_phase_names(self) -> "MixtureConfig":
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be distinct: {names}")
        return self

    def epochs_allowed(self, category: str) -> float:
        """Passes over ``category`` allowed across all phases."""
        return self.max_epochs.get(category, 1.0)
