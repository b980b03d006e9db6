"""The dedup stage's settings: every threshold with its default and what it means."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, PrivateAttr, field_validator, model_validator

from pipeline.stage import StageConfig

# partitions: auto. Every exchange reads a slice of each of S files per partition task, about half a
# millisecond each: on corpus-dev (17 shards) 16 partitions spent a fifth of the stage on them, 4
# did the same work 0.5-1.4 s sooner. At 64 shards and more, auto is the former default, 16.
SHARDS_PER_PARTITION = 4
AUTO_PARTITIONS_MAX = 16


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """Bands and rows for a Jaccard threshold, as ``datasketch.MinHashLSH`` picks them with
    ``weights=(1 - false_negative_weight, false_negative_weight)``: of every (b, r) with b * r <=
    num_perm, in its order, the first with the least weighted sum of the false-positive probability
    (the integral of 1 - (1 - s^r)^b over similarities s from 0 to the threshold) and the
    false-negative one ((1 - s^r)^b from the threshold to 1).

    datasketch integrates them with scipy's ``quad``; importing the two took 0.5 s of every run's
    start in the driver, before Ray. Both integrands are polynomials of degree b * r <= num_perm,
    which Gauss-Legendre quadrature with num_perm // 2 + 1 nodes integrates exactly, here for all
    pairs at once in a few milliseconds. ``tests/test_dedup.py`` checks that the choice is
    datasketch's; 2,094 settings of threshold, num_perm (2 to 1,024) and weight all agreed."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands, rows = (np.array(column, dtype=np.float64)[:, None] for column in zip(*pairs))

    def integral(low: float, high: float, integrand) -> np.ndarray:
        points = (high - low) / 2 * nodes + (high + low) / 2
        return (high - low) / 2 * (integrand(points[None, :]) @ weights)

    false_positive = integral(0.0, threshold, lambda s: 1 - (1 - s ** rows) ** bands)
    false_negative = integral(threshold, 1.0, lambda s: (1 - s ** rows) ** bands)
    error = false_positive * (1 - false_negative_weight) + false_negative * false_negative_weight
    return pairs[int(np.argmin(error))]  # argmin: the first of equals, as datasketch's strict "<"


class ComponentsConfig(StageConfig):
    """How the clusters (connected components of the duplicate edges) are found. Both ways give the
    same clusters and the same stage output; they differ in what one task must hold."""

    method: Literal["auto", "single_task", "distributed"] = Field(
        "auto",
        description="single_task: one task loads every edge; distributed: large-star/small-star "
        "rounds over `partitions` partitions of the edges, no task holding more than its partition; "
        "auto: distributed above distributed_above_edges",
    )
    distributed_above_edges: int = Field(
        10_000_000, ge=0,
        description="with method auto, the number of edge rows (duplicate pairs as found, before merging "
        "repeats) above which the distributed way runs; the single task grows by about 220 bytes per "
        "edge, 2.2 GB at this default (docs/scaling.md)",
    )
    split_above_arcs: int = Field(
        100_000, ge=0,
        description="distributed: a node (a giant cluster's root, in the last rounds) whose arcs one round's "
        "task writes more than split_above_arcs / partitions of is split from then on: its arcs go to "
        "split_slices tasks by neighbour, and so do a cluster's members once one partition holds more than "
        "that many. A node not split brings at most this many arcs to a task, a split one of n arcs about "
        "n / split_slices (docs/scaling.md)",
    )
    split_slices: int = Field(
        16, ge=1,
        description="distributed: how many tasks (at most partitions) share a split node's arcs or a giant "
        "cluster's members",
    )


class ShuffleConfig(StageConfig):
    """How dedup's all-to-all exchanges are read (``stages.dedup.exchange``): each task of a step over
    partitions or shards needs its slice of every file the step before wrote, S x P or S x S file
    reads in all. Either way the stage writes the same bytes."""

    gather: Literal["auto", "always", "never"] = Field(
        "auto",
        description="two-level shuffle: the map step writes a row group per block of gather_block "
        "targets, one gather task per block reads that row group from every map file and writes one "
        "file per target, and each target's task reads that file alone: sources x targets / "
        "gather_block + targets reads instead of sources x targets, for writing the exchanged rows "
        "once more. auto: per exchange, when sources x targets exceeds gather_above_reads and the "
        "gather level reads less, with blocks small enough for at least 8 gather tasks; always: every "
        "exchange, in blocks of gather_block",
    )
    gather_above_reads: int = Field(
        10_000, ge=0,
        description="with gather: auto, the file reads of a direct exchange (map files x tasks reading "
        "them) above which it is gathered first: verify's S x S above 100 shards, an exchange between S "
        "shards and 16 partitions (auto from 64 shards on) above 625. On local disk the exchanges took less task "
        "time through the gather level from the smallest size measured on (corpus-dev at 2x in 16 "
        "shards: -19%; in 64: -41%; a synthetic corpus in 256 shards: -81%), and on an object store "
        "every read is also a request (bench/bench_dedup_shuffle.py); below, a small corpus keeps "
        "its fewer tasks",
    )
    gather_block: int = Field(
        32, ge=1,
        description="targets (shards or partitions) per gather task (B); with gather: auto at most "
        "targets / 8, so that the gather step keeps at least 8 tasks. A gather task keeps B output "
        "files open, each holding up to 1 MiB of rows not yet written, besides one map file's row "
        "group at a time",
    )
    read_cache_mb: int = Field(
        128, ge=0,
        description="MiB of the scratch files it read that each worker process keeps, for the exchange "
        "reads that come back to the same file (each target of an exchange reads every file of the step "
        "before: on corpus-dev at 4x, 12,150 reads of 450 files). Files of the current step stay, older "
        "steps' files are evicted; 0: keep none (stages/dedup/kept_reads.py)",
    )


class DedupConfig(StageConfig):
    exact_documents: bool = Field(True, description="drop documents whose normalised text occurred earlier")
    near_duplicates: bool = Field(True, description="MinHash LSH near-duplicate detection")
    paragraphs: bool = Field(True, description="drop lines (paragraphs) that occurred in an earlier document")

    word_ngram: int = Field(5, ge=1, le=64, description="shingle size in words, for space-separated languages")
    char_ngram: int = Field(5, ge=1, le=64, description="shingle size in characters, for char_ngram_langs")
    char_ngram_langs: tuple[str, ...] = Field(
        ("zh", "ja", "ko", "th"),
        description="`lang` values (base before '-', so zh-Hant counts as zh) shingled by characters; "
        "without a `lang` column, documents mostly in Han/kana/Hangul/Thai script are",
    )
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations")
    seed: int = Field(1, ge=0, description="seed of the permutations (datasketch's `seed`)")
    threshold: float = Field(
        0.7, gt=0, lt=1,
        description="Jaccard similarity of shingle sets above which two documents are near duplicates; "
        "bands and rows are derived from it as datasketch.MinHashLSH does, unless given",
    )
    false_negative_weight: float = Field(
        0.9, gt=0, lt=1,
        description="datasketch MinHashLSH weights=(1 - w, w), used to derive bands and rows from threshold; "
        "0.9 favours recall (more candidates), and verify removes the extra false positives",
    )
    bands: int | None = Field(None, ge=1, description="explicit LSH bands (with rows); overrides threshold")
    rows: int | None = Field(None, ge=1, description="explicit LSH rows per band (with bands)")
    verify: bool = Field(
        True,
        description="keep a candidate pair only if its estimated Jaccard (share of equal MinHash values) "
        "reaches threshold; costs num_perm*4 bytes per band key in the shuffle",
    )
    keep: Literal["first", "longest", "quality"] = Field(
        "first",
        description="which document of a cluster stays: first in corpus order, longest text, or highest "
        "quality_score (needs the quality stage earlier); ties go to the first",
    )

    paragraph_min_chars: int = Field(
        30, ge=1, description="shorter paragraphs (after normalising) are never removed as duplicates"
    )
    paragraph_exempt: tuple[str, ...] = Field(
        (), description="paragraphs never removed, compared after normalising (e.g. 'References')"
    )
    paragraph_skip_categories: tuple[str, ...] = Field(
        ("code",), description="categories left out of paragraph dedup (repeated lines are normal in code)"
    )
    min_chars_after_paragraph_dedup: int = Field(
        100, ge=0,
        description="a document that lost paragraphs and has fewer characters left is dropped "
        "(too_short_after_paragraph_dedup)",
    )
    max_keeper_rounds: int = Field(
        3, ge=0,
        description="keeper rounds after the first. A cluster keeper left too short by paragraph dedup is "
        "replaced by its next member in another round, a run of members too short with it in one (corpus-dev "
        "with perturbed copies needs 2 rounds; the default leaves one more); each round is a pass over every shard's paragraph hashes. "
        "Keepers still too short after the last round are kept whole (no line dropped; short_keepers_kept in "
        "summary.json): their duplicates still point at a kept document, and their repeated lines stay",
    )
    partitions: int | Literal["auto"] = Field(
        "auto", description="hash partitions of the shuffles (band keys, paragraph hashes, the distributed "
        "clusters' documents): one reduce task each. auto: one per 4 input shards, from 1 to 16 (every "
        "exchange reads shards x partitions slices, which on a small corpus cost more than the work). "
        "Set it to at least the cluster's CPUs on a large cluster, and higher with the documents (docs/operations.md)"
    )
    # Left out of the config hash (exclude): it changes how the clusters are found, not what the stage
    # writes, so switching it reruns nothing.
    components: ComponentsConfig = Field(default_factory=ComponentsConfig, exclude=True,
                                         description="how the clusters are found (see ComponentsConfig)")

    # Left out of the config hash too: it changes which files carry the exchanged rows, not what the
    # stage writes.
    shuffle: ShuffleConfig = Field(default_factory=ShuffleConfig, exclude=True,
                                   description="how the all-to-all exchanges are read (see ShuffleConfig)")

    _lsh_shape: tuple[int, int] = PrivateAttr()

    @field_validator("partitions")
    @classmethod
    def _check_partitions(cls, partitions: int | str) -> int | str:
        if isinstance(partitions, int) and partitions < 1:
            raise ValueError(f"must be 'auto' or at least 1, got {partitions}")
        return partitions

    def with_partitions(self, shards: int) -> "DedupConfig":
        """This config with ``partitions`` a number: ``auto`` resolved for a corpus of ``shards`` shards."""
        if self.partitions != "auto":
            return self
        return self.model_copy(update={"partitions": min(AUTO_PARTITIONS_MAX, max(1, -(-shards // SHARDS_PER_PARTITION)))})

    @model_validator(mode="after")
    def _bands_and_rows(self) -> "DedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then threshold decides)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        self._lsh_shape = (self.bands, self.rows) if self.bands is not None else \
            lsh_params(self.threshold, self.num_perm, self.false_negative_weight)
        return self

    @property
    def lsh_shape(self) -> tuple[int, int]:
        """(bands, rows): explicit, or derived from ``threshold`` as datasketch does."""
        return self._lsh_shape
