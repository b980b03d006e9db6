"""The global passes of dedup, in order: each a map over shards or partitions, through files.

``run_prepare`` runs the steps below; every item (a shard or a partition) has its outputs written
into the scratch directory atomically and an item whose output exists is skipped, so a run killed
at any point resumes with the first unfinished item. No item holds more than one shard, one
partition, or (the single-task clusters) the edges with their endpoints' ids. Signatures, the one
step that reads the input text, runs each shard as a Ray task of its own; the others run their items
several to a task, one after another: up to four tasks per worker, of three items or more where the
step has that many (``run_step``).

    step                 item        reads                          writes
    signatures           shard       input shard                    docs/, signatures/, bands/,
                                                                    paragraph-hashes/ **
    candidates           partition   its rows of every bands/ file  candidates/
    attach signatures *  shard       candidates/ with u here        candidates-with-signature/
    verify *             shard       ... with v here                edges/
    components ***       partition   edges/ (or candidates/)        components/ (``stages.dedup.star``)
    clusters ***         (one)       edges/ (or candidates/); in    clusters/ + _SUCCESS.json,
                                     round r > 0 round r - 1's      cluster-components/
                                     cluster-components/, findings
    paragraphs **        shard       paragraph-hashes/, clusters/   paragraphs/
    paragraph removals** partition   its rows of every paragraphs/  successor-removals/, paragraph-removals/
    short keepers **     shard       clusters/, paragraph-removals/ short-successors/, too-short-keepers/
    decisions            shard       clusters/, paragraph-removals/ decisions/<shard name>.parquet

    * when near_duplicates and verify are on; ** when paragraphs is on; *** when the clusters are
    found distributed (``components.method``; ``distributed_components``), the components run first,
    in as many rounds of steps as the edges need, and clusters is four steps per shard or partition
    (``stages.dedup.partitioned``) instead of one task. Both ways write the same clusters/.

    Where a step reads "its rows of every" file of the step before (an exchange), a gather step can
    run in between (``stages.dedup.exchange``, ``shuffle.gather``): one task per block of the next
    step's shards or partitions, reading the block's row group of every file and writing a file per
    shard or partition (``gathered/``), which that task then reads alone. The output is the same.

Keeper rounds. Paragraph dedup runs on the documents document dedup keeps, so it can only run after
the clusters chose their keepers, and it can leave a keeper too short (most of its paragraphs
occurred earlier). Its near-duplicates would then be removed pointing at a removed document, and the
cluster would keep nothing. So clusters, paragraphs, paragraph removals and short keepers form a
round: when a round finds keepers too short, the next round bars them from keeping (each such
cluster keeps its next best member) and runs again, in its own ``<dir>-round<r>`` directories
(``shuffle.ROUND_SCOPED``); the last round, the first that finds none, is what decisions read. The
text is read and hashed once, before round 0 (``paragraph-hashes/``); a round only filters those
hashes by its clusters, so it costs a pass over the hashes, not over the text.

It terminates and each barred document really is too short in the end: a barred document stays in
paragraph dedup, so from round to round the documents it covers only grow, and with them what each
document loses; every round bars at least one more document, of finitely many. A cluster whose
members are all barred keeps nothing, and each member is removed for its own reason. Documents
outside the changed clusters get the same decisions they would get in round 0 unless a new keeper's
paragraphs occur first in it.

Runs of short keepers in one round. A cluster of n near-identical pages whose lines also occur
earlier would bar one member per round, n - 1 rounds. So once a cluster has a barred member, its
removed members (successors) ride along in paragraph dedup without taking part, and a successor that
loses too much to the round's participants alone is recorded (``short-successors/``); a later round
bars it as soon as every member ranked before it is barred or such a successor (``clusters.fates``),
along with them. The decisions stay exactly those of one keeper per round. Call a barred set closed
when a round with it bars no one more. With more barred, each member is barred or keeps as before,
so the participants, what each loses and the keepers too short only grow: one keeper per round
reaches the smallest closed set S. A successor s barred early is in S: else, every member ranked
before s being in S, s keeps with S barred; the participants s was checked against take part with S
barred too, so s loses at least as much, is too short, and S is not closed. So every set the rounds
reach lies within S, the rounds stop at a closed one, and that is S: barring early only skips rounds.

A bound. Chains across clusters (a new keeper's paragraphs leave another cluster's keeper too short)
still take rounds, two for each cluster so reached (its keeper, then its run of successors), so after ``max_keeper_rounds`` rounds past round 0 the keepers the last
round found too short are kept whole instead: no reason, no line dropped, so their duplicates still
point at a kept document; their repeated lines stay in the corpus. The summary counts them
(``short_keepers_kept``).
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import commit, storage
from pipeline.executor import Group, run_group
from pipeline.listing import Listing
from stages.dedup import clusters, documents, exchange, paragraphs, partitioned, star, text
from stages.dedup.config import DedupConfig
from stages.dedup.shuffle import Job, Step, batches, read_table, write_scratch

DECISIONS = "decisions"
DECISION_SCHEMA = pa.schema([
    ("id", pa.string()), ("reason", pa.string()), ("kept_id", pa.string()), ("cluster", pa.string()),
    ("drop", pa.list_(pa.int32())),
])


def make_job(config: DedupConfig, inputs: dict[str, str], scratch: str, filesystem: Any) -> Job:
    """The job of a prepare run over ``inputs`` (shard name -> path, in corpus order), with the
    partitions a number (``partitions: auto`` follows the shard count, which the inputs fix)."""
    config = config.with_partitions(len(inputs))
    bands, rows = config.lsh_shape
    return Job(config, filesystem, scratch, Listing(tuple(inputs), filesystem, storage.join(scratch, "shard-names.json")),
               Listing(tuple(inputs.values()), filesystem, storage.join(scratch, "shard-paths.json")), bands, rows,
               run=uuid.uuid4().hex)


def decisions_path(scratch: str, shard: str) -> str:
    return storage.join(scratch, DECISIONS, f"{shard}.parquet")


def plan(job: Job) -> list[Step]:
    """The steps of one prepare run whose keeper round is ``job.round``, in order, with the single-task
    clusters (the distributed components take as many rounds as the edges need: ``run_prepare``)."""
    return document_steps(job) + round_steps(job, distributed=False) + [decision_step(job)]


def document_steps(job: Job) -> list[Step]:
    """Signatures (and with paragraphs the paragraph hashes), candidates and (with verify)
    verification: the same in every keeper round; only the first reads the input shards' text."""
    config = job.config
    shards = tuple(range(len(job.shards)))
    partitions = tuple(range(config.partitions))
    receipt = paragraphs.PARAGRAPH_HASHES if config.paragraphs else documents.BANDS
    steps = [Step("signatures", read_shard, shards, lambda i: job.path(receipt, i), reads_text=True)]
    steps += exchange.steps(job, documents.band_exchange(job))
    steps.append(Step("candidates", documents.link_partition, partitions, lambda p: job.path(documents.CANDIDATES, p)))
    if config.near_duplicates and config.verify:
        steps += exchange.steps(job, documents.candidate_exchange(job))
        steps.append(Step("attach signatures", documents.attach_head_signatures, shards,
                          lambda i: job.path(documents.HEADS, i)))
        steps += exchange.steps(job, documents.head_exchange(job))
        steps.append(Step("verify", documents.verify_shard, shards, lambda i: job.path(documents.EDGES, i)))
    return steps


def read_shard(task: tuple[Job, int]) -> None:
    """Per shard, the one pass over its text: what ``documents.sign`` finds and, with paragraphs,
    the paragraph hashes, both from one NFC and lowercasing of each batch. The paragraph hashes are
    written last, so they are the step's receipt (without paragraphs, the band keys are)."""
    job, shard = task
    config = job.config
    columns = documents.SIGNED_COLUMNS + (["category"] if config.paragraphs else [])
    signed, hashed = documents.Signed(), []
    for doc, batch in batches(job, shard, columns):
        texts = pc.fill_null(batch["text"].combine_chunks(), "")
        lowered = text.nfc_lower(texts) if config.exact_documents or config.paragraphs else None
        documents.sign(job, doc, batch, lowered, signed)
        if config.paragraphs:
            hashed.append(paragraphs.hash_paragraphs(job, doc, batch, texts, lowered))
    documents.write_signed(job, shard, signed)
    if config.paragraphs:
        paragraphs.write_paragraph_hashes(job, shard, hashed)


def round_steps(job: Job, distributed: bool) -> list[Step]:
    """The steps of keeper round ``job.round``: clusters (from ``star``'s components when
    ``distributed``) and, with paragraphs, paragraph dedup and the check of the keepers it leaves too short."""
    config = job.config
    shards = tuple(range(len(job.shards)))
    partitions = tuple(range(config.partitions))
    suffix = f" (keeper round {job.round})" if job.round else ""
    steps = partitioned.steps(job, suffix) if distributed else [
        Step("clusters" + suffix, clusters.cluster_corpus, (0,), lambda _: clusters.summary_path(job))]
    if config.paragraphs:
        steps.append(Step("paragraphs" + suffix, paragraphs.select_paragraphs, shards,
                          lambda i: job.path(paragraphs.PARAGRAPHS, i)))
        steps += exchange.steps(job, paragraphs.paragraph_exchange(job), suffix)
        steps.append(Step("paragraph removals" + suffix, paragraphs.find_repeated_paragraphs, partitions,
                          lambda p: job.path(paragraphs.REMOVALS, p)))
        steps += exchange.steps(job, paragraphs.removal_exchange(job), suffix)
        steps += exchange.steps(job, paragraphs.removal_exchange(job, paragraphs.SUCCESSOR_REMOVALS), suffix)
        steps.append(Step("short keepers" + suffix, paragraphs.find_short_keepers, shards,
                          lambda i: job.path(documents.BARRED, i)))
    return steps


def decision_step(job: Job) -> Step:
    shards = tuple(range(len(job.shards)))
    return Step("decisions", decide_shard, shards, lambda i: decisions_path(job.scratch, job.shards[i]))


# Tasks per worker for a step that does not read text. A task costs the driver a few milliseconds
# (submitting it, taking its result), about what such a step does per shard at small scale: on 60
# shards at 4x with 2 workers, a task per shard left the workers idle a fifth of dedup's prepare.
# Several tasks per worker rather than one keep the workers even when shards differ in size, but
# not fewer than three items a task: on corpus-dev's 12 shards with 2 workers, 8 tasks of one or
# two shards each made the steps after signatures 10-15% slower than 4 tasks of three.
GROUPS_PER_WORKER = 4
MIN_GROUP_ITEMS = 3


def run_step(job: Job, step: Step, map_fn: Callable, log: Callable[[str], None], workers: int = 1) -> None:
    # a step's output file is its own receipt: written last, by rename, with its counts in its footer
    todo = commit.pending(step.items, lambda item: storage.exists(job.filesystem, step.output(item)))
    done = len(step.items) - len(todo)
    groups = len(todo) if step.reads_text else min(len(todo), GROUPS_PER_WORKER * workers, -(-len(todo) // MIN_GROUP_ITEMS))
    log(f"{step.name}: {len(todo)} items" + (f" ({done} already done)" if done else "")
        + (f" in {groups} tasks" if groups < len(todo) else ""))
    if not todo:
        return
    tasks = [(job, item) for item in todo]
    if groups == len(todo):
        map_fn(step.fn, tasks)
    else:
        bounds = [len(todo) * g // groups for g in range(groups + 1)]
        map_fn(run_group, [Group(step.fn, tuple(tasks[a:b])) for a, b in zip(bounds, bounds[1:])])


def run_prepare(config: DedupConfig, inputs: dict[str, str], scratch: str, filesystem: Any,
                map_fn: Callable, log: Callable[[str], None], workers: int = 1) -> dict:
    """All steps, with ``map_fn`` running ``workers`` tasks at once; returns the corpus-wide
    summary, also written to ``summary.json``."""
    job = make_job(config, inputs, scratch, filesystem)
    _check_inputs(job)
    if config.near_duplicates:
        log(f"MinHash: {config.num_perm} permutations, {job.bands} bands x {job.rows} rows, "
            f"threshold {config.threshold}" + (", verified" if config.verify else ""))
    for step in document_steps(job):
        run_step(job, step, map_fn, log, workers)
    distributed = distributed_components(job, log)
    if distributed:
        for step in star.steps(job):
            run_step(job, step, map_fn, log, workers)
    while True:
        for step in round_steps(job, distributed):
            run_step(job, step, map_fn, log, workers)
        barred = short_keepers(job)
        if not barred:
            break
        if job.round >= config.max_keeper_rounds:
            log(f"{barred:,} cluster keepers too short after paragraph dedup in keeper round {job.round}, "
                f"the last (max_keeper_rounds): kept whole")
            break
        log(f"{barred:,} cluster keepers too short after paragraph dedup: choosing others "
            f"(keeper round {job.round + 1})")
        job = replace(job, round=job.round + 1)
    run_step(job, decision_step(job), map_fn, log, workers)
    summary = storage.read_json(filesystem, clusters.summary_path(job))
    summary["short_keepers_kept"] = barred
    summary["lsh"] = {"num_perm": config.num_perm, "bands": job.bands, "rows": job.rows}
    storage.write_json(filesystem, storage.join(scratch, "summary.json"), summary)
    log(f"{summary['clusters']:,} clusters holding {summary['clustered_docs']:,} documents; "
        f"edges: {summary['edges']['exact']:,} exact, {summary['edges']['near']:,} near")
    return summary


def distributed_components(job: Job, log: Callable[[str], None]) -> bool:
    """Whether the clusters are found distributed: as ``components.method`` says or, with ``auto``, when
    the edge files hold more rows than ``distributed_above_edges`` (read from their footers)."""
    settings = job.config.components
    if settings.method == "single_task":
        return False
    why = "components.method: distributed"
    if settings.method == "auto":
        edges = 0
        for path in documents.edge_files(job):
            with job.filesystem.open_input_file(path) as source:
                edges += pq.ParquetFile(source).metadata.num_rows
        if edges <= settings.distributed_above_edges:
            return False
        why = f"{edges:,} edge rows, more than components.distributed_above_edges"
    log(f"clusters found distributed, over {job.config.partitions} partitions ({why})")
    return True


def short_keepers(job: Job) -> int:
    """How many keepers of ``job.round`` paragraph dedup left too short (0 without paragraphs)."""
    if not job.config.paragraphs:
        return 0
    return sum(read_table(job.filesystem, job.path(documents.BARRED, shard)).num_rows
               for shard in range(len(job.shards)))


def _check_inputs(job: Job) -> None:
    if job.config.keep != "quality" or not job.inputs:
        return
    with job.filesystem.open_input_file(job.inputs[0]) as source:
        names = pq.read_schema(source).names
    if "quality_score" not in names:
        raise ValueError("dedup keep: quality needs a quality_score column; run the quality stage "
                         "before dedup, or choose keep: first or longest")


def decide_shard(task: tuple[Job, int]) -> None:
    """Per shard: everything ``Dedup.process`` needs, keyed by document id."""
    job, shard = task
    clusters = read_table(job.filesystem, job.path(documents.CLUSTERS, shard))
    decided = {doc: [doc_id, reason, kept_id, cluster, []] for doc, doc_id, cluster, kept_id, reason in zip(
        *(clusters[c].to_pylist() for c in ("doc", "id", "cluster", "kept_id", "reason")))}
    if job.config.paragraphs:
        # Keepers this round still found too short are the last round's (max_keeper_rounds): kept whole.
        whole = set(read_table(job.filesystem, job.path(documents.BARRED, shard))["doc"].to_pylist())
        for doc, (doc_id, lines, too_short) in paragraphs.line_drops(job, shard).items():
            if doc in whole:
                continue
            entry = decided.setdefault(doc, [doc_id, None, None, None, []])
            entry[4] = lines
            if too_short:
                entry[1] = paragraphs.REASON_SHORT
    order = sorted(decided)
    table = pa.table({name: [decided[doc][i] for doc in order]
                      for i, name in enumerate(DECISION_SCHEMA.names)}, schema=DECISION_SCHEMA)
    write_scratch(job, decisions_path(job.scratch, job.shards[shard]), table)
