"""``run_mixture``: the driver that runs the mixture steps in order, resuming finished work.

Each step's units commit with a receipt written after their files; a rerun skips units whose receipt
carries the current hash. The count step's hash covers the tokenizer model, the seed, the bin count and
the piece size, and each receipt names its input shard's checksum, so a changed shard is recounted
alone. Everything after it depends on the whole corpus: its hash (the plan hash) covers every input
checksum and the mixture config (less the options of the gather level, which change how pack reads,
not what it writes), and a change of it discards the old training shards.
"""
from __future__ import annotations

import math
import posixpath
from typing import Any, Callable

from mixture.chart import bar_chart
from mixture.composition import (LABELS, composition_csv, composition_markdown, composition_table,
                                 phases_csv, phases_markdown)
from mixture.config import MixtureConfig
from mixture.count import CountTask, count_shard, sum_histograms, token_path, token_type
from mixture.gather import GatherTask, block_name, gather_block, gather_path, reads, uses_gather
from mixture.pack import PackTask, pack_shard
from mixture.packing import ScatterTask, scatter_files, scatter_shard
from mixture.phases import plan_phases
from pipeline import commit, storage
from pipeline.commit import Ledger
from pipeline.config import PipelineConfig, config_hash
from pipeline.errors import PipelineError
from pipeline.stats import Stats
from pipeline.steps import finished_stage
from tokenizer import load_tokenizer
from tokenizer.load import MODEL_FILE, REPORT_FILE
from tokenizer.step import tokenizer_dir

MIXTURE_DIR = "mixture"
MANIFEST = "manifest.json"
COUNT_VERSION = 4  # bump when count_shard's output changes meaning
PACK_VERSION = 3  # bump when scatter/pack output changes meaning
SCATTER_VERSION = 2  # bump when scatter (and so gather) files change layout: a resumed run deals them again
HISTOGRAM_FILES_PER_TASK = 64
# How the pack step reads its runs, not what it writes (the training shards are the same bytes either
# way): left out of the plan hash, so that changing them never discards packed shards.
READ_PATH_OPTIONS = {"gather", "gather_above_reads", "gather_block"}


class Layout:
    """Where the mixture writes: URIs for tasks (``uri``), filesystem paths for the driver (``path``)."""

    def __init__(self, work_dir: str):
        self.root = storage.join(work_dir, MIXTURE_DIR)
        self.fs, self.local_root = storage.resolve(self.root)

    def uri(self, *parts: str) -> str:
        """A location under the mixture directory as tasks address it (local path or URI)."""
        return storage.join(self.root, *parts)

    def path(self, *parts: str) -> str:
        """The same location as a path on ``self.fs``."""
        return storage.join(self.local_root, *parts)


def run_mixture(config: PipelineConfig, executor, log: Callable[[str], None] = print,
                force: bool = False) -> dict[str, Any]:
    """Count tokens, write the composition table, plan the phases and write the training shards.

    ``executor.map(fn, items, label)`` runs the per-shard tasks (Ray or in-process). Outputs go to
    ``<work_dir>/mixture/``; ``force`` discards them first. Returns the composition table, the phase
    report and the training-shard manifest.
    """
    settings = MixtureConfig(**(config.mixture or {}))
    layout = Layout(config.work_dir)
    if force and storage.exists(layout.fs, layout.local_root):
        log("mixture: --force: discarding earlier outputs")
        layout.fs.delete_dir_contents(layout.local_root)
    storage.remove_temporaries(layout.fs, layout.local_root)
    units = _input_units(config, settings.input_stage)
    tokenizer_path = tokenizer_dir(config)
    tokenizer_sha = _tokenizer_sha256(tokenizer_path)
    tokenizer = load_tokenizer(tokenizer_path)

    count_hash = config_hash("mixture-count", COUNT_VERSION, tokenizer_sha, settings.seed, settings.sampling_bins,
                             settings.max_piece_tokens)
    stats = _count(units, count_hash, tokenizer_path, tokenizer_sha, settings, layout, executor, log)
    composition = composition_table(stats)
    _write_composition(layout, composition, _tokenizer_name(tokenizer))

    histograms, crossings = _histograms(units, settings, layout, executor)
    _check_histograms(histograms, stats)
    phases = plan_phases(settings, histograms, warn=log, crossings=crossings)
    width = settings.seq_len + 1
    for phase in phases:
        phase["shards"] = max(1, math.ceil(phase["tokens"] / (width * settings.sequences_per_shard)))
    plan_hash = config_hash("mixture-plan", PACK_VERSION, count_hash, [(u, f) for u, _, f in units],
                            settings.model_dump(mode="json", exclude=READ_PATH_OPTIONS))
    _claim(layout, plan_hash, log)
    storage.write_json(layout.fs, layout.path("plan.json"), {"plan_hash": plan_hash, "phases": phases})

    packing = _pack(phases, units, plan_hash, tokenizer, settings, layout, executor, log)
    _check_realised(phases, packing)
    manifest = _manifest(phases, packing, tokenizer, tokenizer_sha, settings, plan_hash)
    _write_phases(layout, phases)
    storage.write_json(layout.fs, layout.path(MANIFEST), manifest)
    log(composition_markdown(composition, _tokenizer_name(tokenizer)))
    log(phases_markdown(phases))
    log(f"mixture: training shards and manifest in {layout.uri()}")
    return {"composition": composition, "phases": phases, "manifest": manifest, "directory": layout.uri()}


def _input_units(config: PipelineConfig, stage: str) -> list[tuple[str, str, str]]:
    """(unit name, shard URI, checksum) of every kept shard of the finished input stage."""
    finished = finished_stage(config, stage)
    return [(posixpath.basename(path)[: -len(".parquet")], path, checksum)
            for path, checksum in zip(finished.shards, finished.checksums)]


def _tokenizer_sha256(directory: str) -> str:
    fs, local = storage.resolve(directory)
    if not storage.exists(fs, storage.join(local, REPORT_FILE)):
        raise PipelineError(f"the mixture needs a trained tokenizer in {directory}; add a `tokenizer:` section "
                            f"and run `python -m pipeline train-tokenizer CONFIG` (or `run`)")
    return storage.sha256(fs, storage.join(local, MODEL_FILE))


def _tokenizer_name(tokenizer) -> str:
    return f"the trained {tokenizer.vocab_size:,}-entry BPE tokenizer"


def _count(units, count_hash: str, tokenizer_path: str, tokenizer_sha: str, settings: MixtureConfig,
           layout: Layout, executor, log) -> Stats:
    """Step 1: token files and exact counts per shard; returns the counts merged over the corpus."""
    directory = layout.uri("tokens")
    tasks = [CountTask(unit, source, checksum, count_hash, directory, tokenizer_path, tokenizer_sha,
                       settings.seed, settings.sampling_bins, settings.max_piece_tokens)
             for unit, source, checksum in units]
    ledger = _ledger(layout, "tokens")
    done = ledger.done({task.unit: task.fingerprint for task in tasks}, count_hash)
    pending = [task for task in tasks if task.unit not in done]
    log(f"mixture: counting tokens of {len(tasks)} shards of {settings.input_stage} "
        f"({len(tasks) - len(pending)} already counted)")
    for receipt in executor.map(count_shard, pending, "mixture count"):
        done[receipt["unit"]] = receipt
    _remove_unlisted(layout, "tokens", {task.unit for task in tasks})
    ledger.prune(task.unit for task in tasks)
    merged = Stats()
    for task in tasks:
        merged.merge(done[task.unit]["stats"])
    return merged


def _remove_unlisted(layout: Layout, step: str, units: set[str]) -> None:
    """Delete token files of shards the input stage no longer has."""
    for path in storage.list_files(layout.fs, layout.path(step), ".parquet"):
        if posixpath.basename(path)[: -len(".parquet")] not in units:
            layout.fs.delete_file(path)


def _ledger(layout: Layout, *step: str) -> Ledger:
    """The receipts of one mixture step (``pipeline.commit``), keyed by the hash of what it did."""
    return Ledger(layout.fs, layout.path(*step, "_receipts"), key="step_hash")


def _write_composition(layout: Layout, composition: dict, tokenizer_name: str) -> None:
    fs = layout.fs
    storage.write_bytes(fs, layout.path("composition.md"), composition_markdown(composition, tokenizer_name).encode())
    storage.write_bytes(fs, layout.path("composition.csv"), composition_csv(composition).encode())
    storage.write_json(fs, layout.path("composition.json"), composition)
    rows = [(row["label"], [row["share"]]) for row in composition["by_category"]]
    title = f"Share of tokens per category ({composition['total']['tokens']:,} tokens)"
    storage.write_bytes(fs, layout.path("composition.svg"), bar_chart(title, rows, ["share"]).encode())


def _histograms(units, settings: MixtureConfig, layout: Layout, executor) -> tuple[dict, dict]:
    """Packed tokens per sampling bin and ``category/lang`` over the corpus, and the pieces crossing
    into each bin (``mixture.count.sum_histograms``), summed in parallel chunks."""
    paths = [token_path(layout.uri("tokens"), unit) for unit, _, _ in units]
    chunks = [(paths[i:i + HISTOGRAM_FILES_PER_TASK], settings.sampling_bins)
              for i in range(0, len(paths), HISTOGRAM_FILES_PER_TASK)]
    totals: dict = {"packed": {}, "crossings": {}}
    for partial in executor.map(sum_histograms, chunks, "mixture histograms"):
        for kind, total in totals.items():
            for group, counts in partial[kind].items():
                total[group] = total[group] + counts if group in total else counts
    return totals["packed"], totals["crossings"]


def _check_histograms(histograms: dict, stats: Stats) -> None:
    """The planner's histograms must hold exactly the counted tokens, plus one separator per document
    (on its last piece)."""
    for group, counts in stats.get("by_group", {}).items():
        expected = counts["tokens"] + counts["documents"]
        got = int(histograms[group].sum()) if group in histograms else 0
        if got != expected:
            raise PipelineError(f"mixture: {group} has {got:,} packed tokens in its histogram, "
                                f"{expected:,} in its counts; rerun with --force")


def _claim(layout: Layout, plan_hash: str, log) -> None:
    """Make scatter/, gather/ and shards/ belong to this plan: discard them if they hold another
    plan's (the counted tokens stay: their receipts name the count hash they were made for)."""
    def clear() -> None:
        for step in ("scatter", "gather", "shards"):
            if storage.exists(layout.fs, layout.path(step)):
                layout.fs.delete_dir(layout.path(step))
        if storage.exists(layout.fs, layout.path(MANIFEST)):  # it would name shards just deleted
            layout.fs.delete_file(layout.path(MANIFEST))
    commit.claim(layout.fs, layout.local_root, plan_hash, key="plan_hash", marker="_plan.json", log=log,
                 label="mixture: ", clear=clear, changed="the plan changed (config, tokenizer or input)")


def _pack(phases: list[dict], units, plan_hash: str, tokenizer, settings: MixtureConfig,
          layout: Layout, executor, log) -> dict[str, list[dict]]:
    """Steps 3 and 4: scatter, gather the phases where it pays (``mixture.gather``), then pack every
    training shard not already packed; the pack receipts of each phase in shard order."""
    done = {}
    for phase in phases:
        names = [f"part-{shard:05d}" for shard in range(phase["shards"])]
        packed = _ledger(layout, "shards", phase["name"]).done(
            names, plan_hash, check=lambda unit, _, name=phase["name"]: storage.exists(
                layout.fs, layout.path("shards", name, f"{unit}.parquet")))
        done.update({(phase["name"], receipt["shard"]): receipt for receipt in packed.values()})
    pending = [(phase["name"], shard) for phase in phases for shard in range(phase["shards"])
               if (phase["name"], shard) not in done]
    gathered = {phase["name"]: uses_gather(settings.gather, settings.gather_above_reads, settings.gather_block,
                                           len(units), phase["shards"]) for phase in phases}
    sources = {}
    if pending:
        sources = scatter_files(layout.uri("scatter"), [phase["name"] for phase in phases],
                                [unit for unit, _, _ in units])
        gather_hash = config_hash("mixture-gather", SCATTER_VERSION, plan_hash, settings.gather_block)
        blocks, wanted = _blocks_to_gather(pending, gathered, gather_hash, settings.gather_block, layout)
        if blocks or not all(gathered[name] for name, _ in pending):
            row_groups = {name: settings.gather_block if chosen else 1 for name, chosen in gathered.items()}
            _scatter(phases, units, row_groups, plan_hash, settings, layout, executor, log)
        _gather(phases, gathered, blocks, wanted, sources, gather_hash, settings, layout, executor, log)
    log(f"mixture: packing {len(pending)} training shards of {settings.seq_len + 1} tokens per row "
        f"({len(done)} already packed)")
    tasks = [PackTask(
        phase=name, shard=shard,
        sources=[gather_path(layout.uri("gather", name), shard)] if gathered[name] else sources[name],
        path=layout.uri("shards", name, f"part-{shard:05d}.parquet"),
        receipt=layout.uri("shards", name, "_receipts", f"part-{shard:05d}.json"),
        step_hash=plan_hash, seq_len=settings.seq_len, eod_id=tokenizer.eod_id,
        pad_id=_pad_id(tokenizer), token_type=str(token_type(tokenizer.vocab_size)),
        rows_per_row_group=settings.rows_per_row_group, megatron=settings.megatron) for name, shard in pending]
    for receipt in executor.map(pack_shard, tasks, "mixture pack"):
        done[(receipt["phase"], receipt["shard"])] = receipt
    for step in ("scatter", "gather"):
        if storage.exists(layout.fs, layout.path(step)):
            # Every training shard is packed: these copies would only multiply the disk used.
            layout.fs.delete_dir(layout.path(step))
    return {phase["name"]: [done[(phase["name"], shard)] for shard in range(phase["shards"])] for phase in phases}


def _gather(phases: list[dict], gathered: dict[str, bool], blocks: list[tuple[str, int]], wanted: int,
            sources: dict, gather_hash: str, settings: MixtureConfig, layout: Layout, executor, log) -> None:
    """Step 3b: per phase, how its pack tasks will read; then the gather ``blocks`` not already
    gathered, each from every scatter file of its phase."""
    size = settings.gather_block
    for phase in phases:
        inputs, shards = len(sources[phase["name"]]), phase["shards"]
        one_level = reads(inputs, shards, None)
        how = (f"gathered in blocks of {size}: {reads(inputs, shards, size):,} file reads instead of {one_level:,}"
               if gathered[phase["name"]] else
               f"packed from the scatter files: {one_level:,} file reads (gather: {settings.gather})")
        log(f"mixture: phase {phase['name']}: {shards:,} training shards dealt from {inputs:,} input shards, "
            f"{how}")
    if not wanted:
        return
    log(f"mixture: gathering blocks of {size} training shards from every scatter file "
        f"({wanted - len(blocks)} of {wanted} blocks already gathered)")
    counts = {phase["name"]: phase["shards"] for phase in phases}
    executor.map(gather_block, [GatherTask(phase=name, block=block, first=block * size,
                                           stop=min((block + 1) * size, counts[name]), sources=sources[name],
                                           directory=layout.uri("gather", name), step_hash=gather_hash)
                                for name, block in blocks], "mixture gather")


def _blocks_to_gather(pending: list[tuple[str, int]], gathered: dict[str, bool], gather_hash: str, size: int,
                      layout: Layout) -> tuple[list[tuple[str, int]], int]:
    """The (phase, block) gather blocks that hold a pending training shard and have no receipt for
    this plan and block size, or lost a gather file; and how many blocks hold a pending shard."""
    wanted = list(dict.fromkeys((name, shard // size) for name, shard in pending if gathered[name]))
    missing = []
    for name in dict.fromkeys(name for name, _ in wanted):
        blocks = {block_name(block): block for phase, block in wanted if phase == name}

        def complete(_, receipt: dict, name: str = name) -> bool:
            return all(storage.exists(layout.fs, gather_path(layout.path("gather", name), shard))
                       for shard in range(*receipt["shards"]))
        done = _ledger(layout, "gather", name).done(list(blocks), gather_hash, check=complete)
        missing += [(name, block) for unit, block in blocks.items() if unit not in done]
    return missing, len(wanted)


def _pad_id(tokenizer) -> int:
    """The tokenizer's pad id, or its end-of-document id if it has none."""
    pad = tokenizer.processor.pad_id()
    return pad if pad >= 0 else tokenizer.eod_id


def _scatter(phases: list[dict], units, blocks: dict[str, int], plan_hash: str, settings: MixtureConfig,
             layout: Layout, executor, log) -> None:
    """Step 3: deal every phase's documents to training shards (input shards not already dealt), in
    row groups of ``blocks[phase]`` training shards: a scatter file dealt for another layout (the
    gather options changed) is dealt again."""
    selections = [{"name": phase["name"], "shards": phase["shards"], "block": blocks[phase["name"]],
                   "groups": [{key: group[key] for key in ("category", "lang", "segments")}
                              for group in phase["groups"] if group["segments"]]} for phase in phases]
    scatter_hash = config_hash("mixture-scatter", SCATTER_VERSION, plan_hash, blocks)
    tasks = [ScatterTask(unit, token_path(layout.uri("tokens"), unit), layout.uri("scatter"), scatter_hash,
                         settings.seed, selections) for unit, _, _ in units]
    dealt = _ledger(layout, "scatter").done([task.unit for task in tasks], scatter_hash)
    pending = [task for task in tasks if task.unit not in dealt]
    log(f"mixture: dealing the documents of {len(phases)} phases to training shards "
        f"({len(tasks) - len(pending)} of {len(tasks)} input shards already dealt)")
    executor.map(scatter_shard, pending, "mixture scatter")


def _check_realised(phases: list[dict], packing: dict[str, list[dict]]) -> None:
    """Exactness: the training shards hold, per category, exactly the tokens the plan chose. Fills in
    each category's document copies and each phase's sequences."""
    for phase in phases:
        receipts = packing[phase["name"]]
        packed = Stats()
        for receipt in receipts:
            packed.merge(receipt["stats"])
        for category, row in phase["categories"].items():
            counts = packed.get("by_category", {}).get(category, {})
            if counts.get("tokens", 0) != row["tokens"]:
                raise PipelineError(f"mixture: phase {phase['name']}: the shards hold {counts.get('tokens', 0):,} "
                                    f"{category} tokens, the plan chose {row['tokens']:,}; rerun with --force")
            row["documents"] = counts.get("documents", 0)  # runs: whole documents and parts of documents
            row["partial_documents"] = counts.get("partial_documents", 0)
        phase["sequences"] = sum(receipt["sequences"] for receipt in receipts)


def _manifest(phases: list[dict], packing: dict[str, list[dict]], tokenizer, tokenizer_sha: str,
              settings: MixtureConfig, plan_hash: str) -> dict:
    """What a trainer reads (``tokenizer.reader``): row format, then per phase its shards in order.
    ``documents`` counts runs (end-of-document ids): whole documents, and the parts of documents a
    phase took in part, which ``partial_documents`` counts."""
    entries = []
    counted = ("sequences", "tokens", "pad_tokens", "documents", "partial_documents")
    for phase in phases:
        shards = [{"path": f"shards/{phase['name']}/part-{r['shard']:05d}.parquet",
                   **{key: r[key] for key in counted}} for r in packing[phase["name"]]]
        totals = {key: sum(shard[key] for shard in shards) for key in counted}
        entries.append({"name": phase["name"], **totals, "shards": shards})
    return {
        "plan_hash": plan_hash,
        "seq_len": settings.seq_len,
        "row_tokens": settings.seq_len + 1,
        "token_type": str(token_type(tokenizer.vocab_size)),
        "vocab_size": tokenizer.vocab_size,
        "eod_id": tokenizer.eod_id,
        "pad_id": _pad_id(tokenizer),
        "tokenizer_sha256": tokenizer_sha,
        "megatron": settings.megatron,
        "last_row": "each shard's last row is padded with pad_id after n_tokens real tokens",
        "documents": "runs, each ended by one eod_id: a whole document, or the consecutive pieces of one "
                     "that a phase took in part (partial_documents; segment id <id>#<first>-<last>)",
        "phases": entries,
    }


def _write_phases(layout: Layout, phases: list[dict]) -> None:
    fs = layout.fs
    storage.write_bytes(fs, layout.path("phases.md"), phases_markdown(phases).encode())
    storage.write_bytes(fs, layout.path("phases.csv"), phases_csv(phases).encode())
    report = [{**phase, "groups": [{key: value for key, value in group.items() if key != "segments"}
                                   for group in phase["groups"]]} for phase in phases]
    storage.write_json(fs, layout.path("phases.json"), report)
    rows = [(f"{phase['name']}: {LABELS.get(category, category)}", [row["target_weight"], row["weight"]])
            for phase in phases for category, row in phase["categories"].items()]
    storage.write_bytes(fs, layout.path("phases.svg"),
                        bar_chart("Target and realised weight per phase", rows, ["target", "realised"]).encode())
