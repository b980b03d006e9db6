"""``train-quality``: the contrast the quality stage needs, and the model files it scores with.

The classifier learns **curated text vs the web text the stage will judge**, as GPT-3, LLaMA and
DCLM trained theirs: positives are the configured ``gold`` sources plus, once the run exists, a
sample of its own encyclopedia, books and papers documents; negatives are the run's own ``web``
documents as they leave the stage before quality (``from_run``), or, before a run exists, the
configured ``web`` sources (raw crawl text). Known junk (``junk`` sources: spam) may be added, at
most as many rows as the web negatives of the same language, never alone: a classifier trained
against spam only learns what spam looks like, and then calls any informal text junk (the first
release ranked Chinese spam above personal e-mail that way).

Steps: read and label the rows; cut each gold row to a scored window (long curated documents give a
window from a seeded position, not always their front matter); balance gold and negatives per
language, each spread evenly over its sources (``balance``); hold out a fraction of every
(language, label, source) group; train fastText (one thread, seeded: same data, same bytes) in a
child process; train the gold n-gram language model on every non-held-out gold row; compute every
signal on the held-out rows for the per-language ``calibration``; write the report, the language
model and the classifier (last). The report's held-out metrics measure the training contrast (gold
vs this web), not agreement with people: ``bench/bench_quality.py human`` measures that.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field

from pipeline import storage
from pipeline.stage import StageConfig
from stages.quality_metrics import binary_metrics
from stages.quality_lm import NgramModel
from stages.quality_model import (
    FEATURES, GOLD, JUNK, LABEL_PREFIX, LM_SUFFIX, QualityModel, TextConfig, features, no_model, prepare_texts,
    report_path,
)

if TYPE_CHECKING:
    from stages.quality import QualityConfig

Kind = Literal["gold", "web", "junk"]
CURATED = ("encyclopedia", "books", "papers")
# Fewer held-out rows than this in a language: its signals are calibrated with every language's.
MIN_CALIBRATION_ROWS = 30


class TrainingSource(StageConfig):
    """One JSONL(.gz/.zst) file of training text, every row of one kind."""

    path: str
    label: Kind = Field(description="gold: curated text; web: crawl text as the stage sees it; junk: known junk")
    text_field: str = "text"
    lang_field: str = Field(
        "lang", description="language of the row; rows without one are labelled by lid.176, as the langid stage would")
    source_field: str = Field(
        "source", description="row field naming its origin, balanced over; default: the file name"
    )


class TrainingConfig(StageConfig):
    """Data, sampling and fastText hyper-parameters of ``train-quality``."""

    sources: list[TrainingSource] = Field(default_factory=list)
    from_run: bool = Field(
        True, description="when the stage before quality has finished, its web documents replace the "
        "`web` sources and its encyclopedia/books/papers documents join the gold (`train-quality` only)")
    run_sample_docs: int = Field(20_000, gt=0, description="documents sampled per category and language from the run")
    languages: list[str] | None = Field(
        None, description="languages to train on; default: every language with gold and web rows"
    )
    max_per_label_per_lang: int | None = Field(
        None, gt=0, description="cap on rows per label and language (before the held-out split)"
    )
    held_out_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(1, description="seeds the sampling order and fastText's initialisation")
    epoch: int = Field(25, gt=0)
    lr: float = Field(0.5, gt=0)
    dim: int = Field(16, gt=0, description="embedding size; model bytes ~ 4 * dim * (bucket + words)")
    word_ngrams: int = Field(
        2, ge=1, description="word (and, for CJK, character) n-grams; 1: words only, no hash buckets"
    )
    bucket: int = Field(200_000, ge=0, description="hash buckets for word n-grams")
    min_count: int = Field(2, ge=1, description="words seen fewer times are dropped from the vocabulary")
    quantize: bool = Field(False, description="product-quantise the model (.ftz-style, much smaller)")
    threads: int = Field(
        1, ge=1,
        description="fastText threads; 1 is deterministic, more are faster but Hogwild updates make "
        "the model differ run to run",
    )


# ---------------------------------------------------------------------------------------------
# Training rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    lang: str
    source: str
    label: str  # the classifier's label: gold, or junk for web and junk rows
    kind: str = ""  # gold | web | junk

    def __post_init__(self):
        if not self.kind:
            object.__setattr__(self, "kind", self.label)


def read_examples(source: TrainingSource) -> list[Example]:
    """Every row of one training file. Rows without text are skipped (they teach nothing)."""
    fs, path = storage.resolve(source.path)
    fallback_source = posixpath.basename(path).split(".")[0]
    # pyarrow decompresses by file extension (.gz, .zst, .bz2).
    with fs.open_input_stream(path) as raw:
        data = raw.read()
    examples, unlabelled = [], []
    for line_number, line in enumerate(io.StringIO(data.decode("utf-8")), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source.path}:{line_number}: not a JSON object ({error.msg})") from error
        text = record.get(source.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            continue
        lang = record.get(source.lang_field)
        if not isinstance(lang, str) or not lang:
            unlabelled.append(len(examples))
        examples.append(Example(
            id=str(record.get("id", f"{path}:{line_number}")), text=text, lang=normalise_lang(lang),
            source=str(record.get(source.source_field) or fallback_source),
            label=GOLD if source.label == GOLD else JUNK, kind=source.label,
        ))
    if unlabelled:
        detected = detect_languages([examples[i].text for i in unlabelled])
        for i, lang in zip(unlabelled, detected):
            examples[i] = replace(examples[i], lang=lang)
    return examples


def detect_languages(texts: list[str]) -> list[str]:
    """lid.176's label for each text, through the langid stage itself (the labels quality sees in a run)."""
    import pyarrow as pa

    from pipeline.stage import DOCUMENT_SCHEMA
    from stages.langid import LangID, LangIDConfig

    n = len(texts)
    table = pa.table({"id": [str(i) for i in range(n)], "text": texts, "source": ["train"] * n,
                      "category": ["web"] * n, "meta": ["{}"] * n}, schema=DOCUMENT_SCHEMA)
    output = LangID(LangIDConfig(bypass_categories=[])).process(table)
    labels = {}
    for side in (output.kept, output.removed):
        labels.update(zip(side.column("id").to_pylist(), side.column("lang").to_pylist()))
    return [normalise_lang(labels.get(str(i))) for i in range(n)]


def read_run_examples(shards: Sequence[str], sample_docs: int, seed: int) -> list[Example]:
    """A deterministic sample of a finished stage's kept documents: web as negatives, encyclopedia,
    books and papers as gold; at most ``sample_docs`` per (category, language), the documents with
    the smallest seeded hash of their id, so the sample does not depend on shard order or workers.
    Two passes: ids first, then the text of the chosen rows only."""
    wanted = {"web", *CURATED}
    candidates: dict[tuple[str, str], list[tuple[bytes, str, int]]] = {}
    for index, shard in enumerate(shards):
        fs, path = storage.resolve(shard)
        table = pq.read_table(path, filesystem=fs, columns=[c for c in ("id", "category", "lang")
                                                            if c in _columns(fs, path)])
        langs = table.column("lang").to_pylist() if "lang" in table.column_names else ["und"] * table.num_rows
        for row, (doc_id, category, lang) in enumerate(zip(table.column("id").to_pylist(),
                                                             table.column("category").to_pylist(), langs)):
            if category in wanted:
                group = candidates.setdefault((category, normalise_lang(lang)), [])
                group.append((_order_key(seed, "run", doc_id), shard, row))
    chosen: dict[str, dict[int, tuple[str, str]]] = {}
    for (category, lang), group in candidates.items():
        for _, shard, row in sorted(group)[:sample_docs]:
            chosen.setdefault(shard, {})[row] = (category, lang)
    examples = []
    for shard in shards:
        if shard not in chosen:
            continue
        fs, path = storage.resolve(shard)
        table = pq.read_table(path, filesystem=fs, columns=["id", "text", "source"])
        rows = sorted(chosen[shard])
        taken = table.take(rows).to_pylist()
        for row, record in zip(rows, taken):
            category, lang = chosen[shard][row]
            kind = "web" if category == "web" else GOLD
            examples.append(Example(id=record["id"], text=record["text"] or "", lang=lang,
                                    source=f"run:{category}", label=GOLD if kind == GOLD else JUNK, kind=kind))
    return [example for example in examples if example.text.strip()]


def _columns(fs, path: str) -> list[str]:
    return pq.read_schema(path, filesystem=fs).names


def normalise_lang(lang: object) -> str:
    """Primary language subtag, as lid.176 labels languages: ``zh-Hans`` -> ``zh``; none -> ``und``."""
    if not isinstance(lang, str) or not lang:
        return "und"
    return lang.replace("_", "-").split("-")[0].lower()


def _order_key(seed: int, *parts: str) -> bytes:
    """A seeded pseudo-random order that depends on the rows, not on file or listing order."""
    return hashlib.sha1("\x1f".join((str(seed), *parts)).encode()).digest()


def gold_window(example: Example, max_chars: int, seed: int) -> Example:
    """A long gold document as one scored window from a seeded line start: a book's first window is
    its title page and licence, not its prose."""
    if len(example.text) <= 2 * max_chars:
        return example
    limit = len(example.text) - max_chars
    start = int.from_bytes(_order_key(seed, "window", example.id)[:8], "big") % limit
    line_start = example.text.rfind("\n", 0, start) + 1
    return replace(example, text=example.text[line_start:line_start + max_chars])


def cap_junk(examples: list[Example], seed: int) -> tuple[list[Example], dict]:
    """Junk rows of each language, at most as many as its web rows (none without web rows),
    spread evenly over the junk sources."""
    web = {}
    for example in examples:
        if example.kind == "web":
            web[example.lang] = web.get(example.lang, 0) + 1
    junk: dict[str, dict[str, list[Example]]] = {}
    kept = [example for example in examples if example.kind != "junk"]
    for example in examples:
        if example.kind == "junk":
            junk.setdefault(example.lang, {}).setdefault(example.source, []).append(example)
    summary = {}
    for lang, by_source in sorted(junk.items()):
        for rows in by_source.values():
            rows.sort(key=lambda e: _order_key(seed, "junk", e.source, e.id, e.text))
        quotas = even_quotas({source: len(rows) for source, rows in sorted(by_source.items())}, web.get(lang, 0))
        for source, quota in quotas.items():
            kept.extend(by_source[source][:quota])
        summary[lang] = {"available": sum(map(len, by_source.values())), "used": sum(quotas.values())}
    return kept, summary


def balance(examples: Iterable[Example], config: TrainingConfig) -> tuple[list[Example], list[Example], dict]:
    """Equal gold and negatives per language, each label spread evenly over its sources.

    Returns (train, held_out, summary). The summary counts the rows available, trained on and held
    out per language, label and source, and says why any language was skipped.
    """
    pools = _pools(examples, config.seed)
    summary: dict = {"available": {}, "train": {}, "held_out": {}, "skipped_languages": {}}
    for lang, by_label in pools.items():
        summary["available"][lang] = {label: _counts(by_source) for label, by_source in by_label.items()}
    train: list[Example] = []
    held_out: list[Example] = []
    for lang, by_label in pools.items():
        skipped = _why_skipped(lang, by_label, config)
        if skipped:
            summary["skipped_languages"][lang] = skipped
            continue
        n = min(sum(map(len, by_source.values())) for by_source in by_label.values())
        n = min(n, config.max_per_label_per_lang or n)
        for label, by_source in by_label.items():
            for source, quota in even_quotas(_counts(by_source), n).items():
                chosen = by_source[source][:quota]
                cut = math.ceil(len(chosen) * config.held_out_fraction)
                held_out.extend(chosen[:cut])
                train.extend(chosen[cut:])
                summary["held_out"].setdefault(lang, {}).setdefault(label, {})[source] = cut
                summary["train"].setdefault(lang, {}).setdefault(label, {})[source] = len(chosen) - cut
    return train, held_out, summary


def _pools(examples: Iterable[Example], seed: int) -> dict[str, dict[str, dict[str, list[Example]]]]:
    """lang -> label -> source -> rows in seeded random order (sorted keys at every level)."""
    pools: dict = {}
    for example in examples:
        by_label = pools.setdefault(example.lang, {GOLD: {}, JUNK: {}})
        by_label[example.label].setdefault(example.source, []).append(example)
    for by_label in pools.values():
        for by_source in by_label.values():
            for rows in by_source.values():
                rows.sort(key=lambda e: _order_key(seed, e.label, e.source, e.id, e.text))
    return {
        lang: {label: dict(sorted(by_source.items())) for label, by_source in by_label.items()}
        for lang, by_label in sorted(pools.items())
    }


def _counts(by_source: dict[str, list[Example]]) -> dict[str, int]:
    return {source: len(rows) for source, rows in by_source.items()}


def _why_skipped(lang: str, by_label: dict[str, dict[str, list[Example]]], config: TrainingConfig) -> str | None:
    if config.languages is not None and lang not in config.languages:
        return "not in train.languages"
    missing = [label for label, by_source in by_label.items() if not by_source]
    if missing:
        return "no gold rows" if missing[0] == GOLD else "no web rows"
    return None


def even_quotas(available: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over sources as evenly as their sizes allow (water-filling).

    Sources are served smallest first, each taking its fair share of what is left or all it has,
    so a small source gives everything and the others share the rest; shares differ by at most one,
    the extra ones going to sources in name order.
    """
    remaining = min(total, sum(available.values()))
    quotas: dict[str, int] = {}
    by_size = sorted(available, key=lambda source: (available[source], source))
    for i, source in enumerate(by_size):
        quotas[source] = min(available[source], remaining // (len(by_size) - i))
        remaining -= quotas[source]
    while remaining:
        for source in sorted(available):
            if remaining and quotas[source] < available[source]:
                quotas[source] += 1
                remaining -= 1
    return {source: quotas[source] for source in sorted(available)}


def training_rows(config: "QualityConfig", run_shards: Sequence[str] | None = None,
                  log: Callable[[str], None] = print) -> tuple[list[Example], list[Example], list[Example], dict]:
    """(train, held_out, every gold row, data summary): the rows ``train_quality_model`` uses."""
    training = config.train
    if not training.sources and not run_shards:
        raise ValueError(f"quality: no training sources configured, and {no_model(config.model_path)}")
    examples = [example for source in training.sources for example in read_examples(source)]
    origin = "configured sources"
    if run_shards:
        run_rows = read_run_examples(run_shards, training.run_sample_docs, training.seed)
        if any(example.kind == "web" for example in run_rows):
            examples = [example for example in examples if example.kind != "web"]
            origin = "the run"
        examples += run_rows
    if not any(example.kind == "web" for example in examples):
        raise ValueError("quality: no web rows to train against: configure a `train.sources` entry with "
                         "`label: web` (raw crawl text) or run the stages before quality first; junk alone "
                         "is never the contrast")
    examples = [gold_window(e, config.text.max_chars, training.seed) if e.kind == GOLD else e for e in examples]
    examples, junk_summary = cap_junk(examples, training.seed)
    log(f"quality: {len(examples)} training rows (web rows from {origin})")
    train, held_out, summary = balance(examples, training)
    if not train or not held_out:
        raise ValueError("quality: no language has both gold and web training rows")
    summary["web_rows_from"] = origin
    summary["junk"] = junk_summary
    return train, held_out, [e for e in examples if e.kind == GOLD], summary


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def train_quality_model(config: "QualityConfig", log: Callable[[str], None] = print,
                        run_shards: Sequence[str] | None = None) -> dict:
    """Train the classifier and the language model described by ``config``; write the model files
    and the report (also returned). ``run_shards``: kept/ shards of the stage before quality."""
    started = time.perf_counter()
    train, held_out, gold_rows, summary = training_rows(config, run_shards, log)
    log(f"quality: training on {len(train)} rows, holding out {len(held_out)}")
    held_ids = {(e.source, e.id) for e in held_out}
    with tempfile.TemporaryDirectory(prefix="quality-train-") as workdir:
        train_file = os.path.join(workdir, "train.txt")
        local_model = os.path.join(workdir, "model.bin")
        write_fasttext_file(train, train_file, config.text, config.train.seed)
        fit_seconds = fit_in_subprocess(train_file, local_model, config.train)
        lm_rows: dict[str, list[Example]] = {}
        for example in gold_rows:
            if (example.source, example.id) not in held_ids and example.lang in summary["train"]:
                lm_rows.setdefault(example.lang, []).append(example)
        lm = NgramModel.train({lang: prepare_texts([e.text for e in rows], config.text, [lang] * len(rows))
                               for lang, rows in sorted(lm_rows.items())})
        local_lm = local_model + LM_SUFFIX
        with open(local_lm, "wb") as sink:
            sink.write(lm.to_bytes())
        model = QualityModel(local_model, config.text, calibration={})
        signals = model.signals([e.text for e in held_out], [e.lang for e in held_out])
        report = {
            "model_path": config.model_path,
            "model_bytes": os.path.getsize(local_model),
            "lm_bytes": os.path.getsize(local_lm),
            "text": config.text.model_dump(mode="json"),
            "train": config.train.model_dump(mode="json"),
            "data": summary,
            "held_out": evaluate(held_out, signals["classifier"]),
            "calibration": calibrate(held_out, signals),
            "perplexity_percentiles": web_percentiles(held_out, signals["perplexity"]),
        }
        _publish(local_model, local_lm, report, config.model_path)
    overall = report["held_out"]["overall"]
    log(f"quality: held-out gold-vs-web F1 {overall['f1']:.4f}, ROC AUC {overall['roc_auc']:.4f} "
        f"({overall['n']} rows); fit {fit_seconds:.1f} s, total {time.perf_counter() - started:.1f} s; "
        f"classifier {report['model_bytes'] / 1e6:.1f} MB, language model {report['lm_bytes'] / 1e6:.1f} MB "
        f"-> {config.model_path}")
    return report


def calibrate(rows: Sequence[Example], signals: dict[str, np.ndarray]) -> dict:
    """Per language (and ``*``: all), each feature's median and spread (half the 10-90 percentile
    range: robust to the long tails of perplexity and length) over held-out gold and web rows."""
    values = features(signals)
    langs = np.array([e.lang for e in rows], dtype=object)
    groups = {"*": np.ones(len(rows), dtype=bool)}
    for lang in sorted(set(langs)):
        if (langs == lang).sum() >= MIN_CALIBRATION_ROWS:
            groups[lang] = langs == lang
    result = {}
    for group, mask in groups.items():
        result[group] = {}
        for name in FEATURES:
            column = values[name][mask]
            column = column[np.isfinite(column)]
            if column.size == 0:
                result[group][name] = [0.0, 1.0]
                continue
            low, median, high = np.percentile(column, [10, 50, 90])
            result[group][name] = [round(float(median), 6), round(max(float(high - low) / 2, 1e-6), 6)]
    return result


def web_percentiles(rows: Sequence[Example], perplexity: np.ndarray) -> dict:
    """Per language, the 0th..100th percentiles of held-out web rows' perplexity (for
    ``perplexity_cutoffs``: CCNet splits its crawl into head/middle/tail the same way)."""
    result = {}
    for lang in sorted({e.lang for e in rows}):
        mask = np.array([e.lang == lang and e.kind == "web" for e in rows])
        values = perplexity[mask]
        values = values[np.isfinite(values)]
        if values.size:
            result[lang] = [round(float(v), 3) for v in np.percentile(values, np.arange(101))]
    return result


def _publish(local_model: str, local_lm: str, report: dict, model_path: str) -> None:
    """Write the report, the language model, then the classifier: its existence means training finished."""
    fs, path = storage.resolve(report_path(model_path))
    storage.write_json(fs, path, report)
    for local, target in ((local_lm, model_path + LM_SUFFIX), (local_model, model_path)):
        fs, path = storage.resolve(target)
        with open(local, "rb") as source:
            storage.write_bytes(fs, path, source.read())


def write_fasttext_file(examples: Sequence[Example], path: str, text_config: TextConfig, seed: int) -> None:
    """One ``__label__<label> <prepared text>`` line per example, gold and junk interleaved.

    SGD sees the file in order, so rows are shuffled (by a seeded hash, not by input order).
    """
    ordered = sorted(examples, key=lambda e: _order_key(seed, "shuffle", e.id, e.text))
    lines = prepare_texts([example.text for example in ordered], text_config, [example.lang for example in ordered])
    with open(path, "w", encoding="utf-8") as sink:
        for example, line in zip(ordered, lines):
            sink.write(f"{LABEL_PREFIX}{example.label} {line}\n")


def fit_in_subprocess(train_file: str, model_file: str, training: TrainingConfig) -> float:
    """``fit`` in a fresh Python process whose memory allocator hands out zeroed memory
    (``trainer_environment``); return its training seconds. A child process per training also keeps
    the trainer's memory out of long-lived drivers."""
    repo = str(Path(__file__).resolve().parent.parent)
    env = trainer_environment(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "stages.quality_train", train_file, model_file, training.model_dump_json()]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"quality: fastText training failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


# fastText's Python binding (fasttext-numpy2 0.10.4) allocates its matrices without initialising them
# (``posix_memalign``; upstream fastText's ``std::vector`` starts at zero), and with one thread its
# ``DenseMatrix::uniform`` fills only the first tenth of the input matrix (ten blocks, one per
# thread). The other rows, most word-pair buckets, start as whatever the memory held: zero pages
# in a fresh process's first large allocation, old data where memory is reused: a second training
# in one process, a small matrix (``word_ngrams`` 1 has no buckets), or MALLOC_PERTURB_ set. Such a
# model differs from run to run or diverges to NaN. glibc fills every block it hands out with
# ``perturb ^ 0xff``, zero here; its per-thread cache, which hands blocks back unfilled, is off.
ZEROED_ALLOCATIONS = {"glibc.malloc.perturb": "255", "glibc.malloc.tcache_count": "0"}


def trainer_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a process that trains with fastText: glibc's ``ZEROED_ALLOCATIONS`` tunables
    in place of any the caller set for them (and of MALLOC_PERTURB_), so the model is the same
    whatever memory the process reuses, and the same as upstream fastText's. Other C libraries ignore
    them; there the model depends, as it did here before, on a fresh process's large blocks being
    fresh zero pages, which they usually are."""
    env = {key: value for key, value in environ.items() if key != "MALLOC_PERTURB_"}
    kept = [item for item in environ.get("GLIBC_TUNABLES", "").split(":")
            if item and item.split("=", 1)[0] not in ZEROED_ALLOCATIONS]
    env["GLIBC_TUNABLES"] = ":".join(kept + [f"{name}={value}" for name, value in ZEROED_ALLOCATIONS.items()])
    return env


def fit(train_file: str, model_file: str, training: TrainingConfig) -> float:
    """Train on ``train_file``, save to ``model_file``; return the training seconds."""
    import fasttext

    started = time.perf_counter()
    model = fasttext.train_supervised(
        input=train_file, epoch=training.epoch, lr=training.lr, dim=training.dim,
        wordNgrams=training.word_ngrams, bucket=training.bucket, minCount=training.min_count,
        loss="softmax", thread=training.threads, seed=training.seed, verbose=0,
    )
    if training.quantize:
        # Without retraining, quantisation uses no data; qnorm keeps the norms accurate.
        model.quantize(qnorm=True, retrain=False)
    model.save_model(model_file)
    return time.perf_counter() - started


def evaluate(examples: Sequence[Example], scores: np.ndarray) -> dict:
    """Gold is the positive class. Overall, per language, and per ``lang/label/source`` group."""
    gold = np.array([example.label == GOLD for example in examples])
    langs = [example.lang for example in examples]
    groups = [f"{example.lang}/{example.kind}/{example.source}" for example in examples]
    result: dict = {"overall": binary_metrics(gold, scores), "by_lang": {}, "by_source": {}}
    for lang in sorted(set(langs)):
        mask = np.array([value == lang for value in langs])
        result["by_lang"][lang] = binary_metrics(gold[mask], scores[mask])
    for group in sorted(set(groups)):
        mask = np.array([value == group for value in groups])
        result["by_source"][group] = {
            "n": int(mask.sum()),
            "mean_score": round(float(scores[mask].mean()), 4),
            "scored_gold_at_0.5": round(float((scores[mask] >= 0.5).mean()), 4),
        }
    return result


if __name__ == "__main__":
    # The child side of fit_in_subprocess: TRAIN_FILE MODEL_FILE TRAINING_CONFIG_JSON.
    print(fit(sys.argv[1], sys.argv[2], TrainingConfig.model_validate_json(sys.argv[3])))
