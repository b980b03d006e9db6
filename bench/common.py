"""Helpers the benchmarks share: the corpus, single-core pinning, isolated timed runs, peak memory of
a process tree, interleaved repeats and medians, and running datatrove next to the pipeline.

A benchmark measures each contender in a fresh spawned process (``isolated``), so the peak resident
memory it reports belongs to that contender alone, repeats it, and reports medians. Throughput is per
core: the process pins Arrow to one thread (``single_core``) and both wall and CPU seconds are kept,
because on a shared machine CPU time is the steadier of the two.

Peak memory is the kernel's own high-water mark of each process (``VmHWM`` in /proc/PID/status),
never a sample of the current size, so a short spike is not missed; ``ProcessTreeMonitor`` reads it
for every process under this one (Ray's raylet and workers, datatrove's pool workers) and resets it
between phases (``/proc/PID/clear_refs``), so each phase reports its own peak.

datatrove is an optional extra (``pip install -e .[bench]``); nothing here imports it at module
level. ``accept_fasttext_numpy2`` lets its fastText steps run on the project's fastText package.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared" / "data"
CORPUS = SHARED / "corpus-dev"
RESULTS = BENCH / "results"

# corpus-dev predates the pipeline's category names.
CATEGORY_NAMES = {"academic": "papers"}
PROJECT_PACKAGES = ("pipeline", "stages", "tokenizer", "mixture")


def compile_bytecode() -> None:
    """Write the project's bytecode (``__pycache__``) before anything is timed, as pip did for every
    installed package, datatrove and Ray included. An editable install has none until Python first
    imports a module and writes it, which never happens where PYTHONDONTWRITEBYTECODE is set (it is,
    on the machine of docs/performance.md): every Ray worker then compiled the project's modules from
    source, 0.61-0.74 CPU-s of imports against 0.39-0.51 with bytecode."""
    import compileall

    for package in PROJECT_PACKAGES:
        compileall.compile_dir(str(REPO / package), quiet=1)


# ----------------------------------------------------------------------------------- the corpus

def corpus_shards(directory: Path = CORPUS) -> list[Path]:
    shards = sorted(Path(directory).glob("*.parquet"))
    if not shards:
        raise SystemExit(f"no Parquet shards in {directory} (the shared dev data is not here)")
    return shards


def document_table(shard: Path) -> pa.Table:
    """A corpus-dev shard in the pipeline's document schema; its source language label goes to meta."""
    from pipeline.stage import DOCUMENT_SCHEMA

    raw = pq.read_table(shard)
    categories = [CATEGORY_NAMES.get(c, c) for c in raw.column("category").to_pylist()]
    meta = [json.dumps({"lang": lang}) for lang in raw.column("lang").to_pylist()]
    columns = [raw.column("id"), raw.column("text"), raw.column("source")]
    return pa.Table.from_arrays([*columns, pa.array(categories), pa.array(meta)], schema=DOCUMENT_SCHEMA)


def source_langs(table: pa.Table, normalise: Callable[[str], str] | None = None) -> list[str]:
    """Per row of a ``document_table``: the source's language label (kept in ``meta``), ``code`` for
    code rows, as the langid stage would label them; ``normalise`` maps the label (e.g. zh-Hant -> zh)."""
    labels = [json.loads(meta)["lang"] for meta in table.column("meta").to_pylist()]
    return ["code" if category == "code" else (normalise(label) if normalise else label)
            for category, label in zip(table.column("category").to_pylist(), labels)]


def with_source_lang(table: pa.Table, normalise: Callable[[str], str] | None = None) -> pa.Table:
    """A document table plus the ``lang`` column langid would add (see ``source_langs``)."""
    return table.append_column("lang", pa.array(source_langs(table, normalise), type=pa.string()))


def write_tables(tables: Iterable[tuple[str, pa.Table]], directory: Path) -> list[Path]:
    """Write (name, table) pairs as zstd Parquet, row groups of 2,000 rows, as the pipeline writes."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables:
        path = directory / name
        pq.write_table(table, path, compression="zstd", row_group_size=2000)
        paths.append(path)
    return paths


def write_document_shards(shards: list[Path], directory: Path) -> list[Path]:
    """Convert shards to document-schema Parquet (zstd, as the pipeline writes them) under ``directory``."""
    return write_tables(((shard.name, document_table(shard)) for shard in shards), directory)


def text_megabytes(table: pa.Table) -> float:
    """UTF-8 size of the text column in MB (10^6 bytes), the unit every throughput here uses."""
    if table.num_rows == 0:
        return 0.0
    return (pc.sum(pc.binary_length(table.column("text").cast(pa.binary()))).as_py() or 0) / 1e6


def parquet_texts(paths: Iterable[Path | str]) -> tuple[int, float]:
    """Documents and text MB in Parquet files (their ``text`` column)."""
    docs, megabytes = 0, 0.0
    for path in paths:
        table = pq.read_table(path, columns=["text"])
        docs += table.num_rows
        megabytes += text_megabytes(table)
    return docs, megabytes


# ----------------------------------------------------------------------------------- timing

def single_core() -> None:
    """Keep Arrow's decoding and compression on this process's one thread, so docs/s is per core."""
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


class Timer:
    """``with Timer() as t: ...`` then ``t.wall`` and ``t.cpu`` in seconds."""

    def __enter__(self) -> "Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def medians(runs: list[dict]) -> dict:
    """Median of every numeric field over repeated runs; other fields from the first run."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(run[key] for run in runs)
    merged["repeats"] = len(runs)
    return merged


def throughput(docs: int, megabytes: float, seconds: float) -> dict:
    if not seconds:
        return {"docs_per_s": None, "mb_per_s": None}
    return {"docs_per_s": round(docs / seconds, 1), "mb_per_s": round(megabytes / seconds, 3)}


def interleaved(contenders: dict[str, Callable[[Path], dict]], repeats: int, tmp: Path) -> dict[str, list[dict]]:
    """Every contender ``repeats`` times, round-robin (so drifting machine load hits each alike);
    contender ``name`` gets its own output directory ``tmp/<name>-<repeat>``."""
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for repeat in range(repeats):
        for name, contender in contenders.items():
            runs[name].append(contender(tmp / f"{name}-{repeat}"))
    return runs


def summarise(runs: dict[str, list[dict]], docs: int, megabytes: float) -> dict[str, dict]:
    """Per contender: medians of its runs plus docs/s and MB/s by wall and by CPU seconds."""
    rows = {}
    for name, measured in runs.items():
        row = medians(measured)
        row.update({f"wall_{k}": v for k, v in throughput(docs, megabytes, row["wall_s"]).items()})
        row.update({f"cpu_{k}": v for k, v in throughput(docs, megabytes, row["cpu_s"]).items()})
        rows[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    return rows


def repeat_line(runs: dict[str, list[dict]], repeat: int) -> str:
    """The progress line after a repeat: each run's wall seconds in it."""
    return f"repeat {repeat + 1}: " + ", ".join(f"{name} {r[-1]['wall_s']:.2f} s" for name, r in runs.items()
                                               if len(r) == repeat + 1)


def worker_rows(runs: dict[str, list[dict]], text_mb: float, pairs: Iterable[tuple[str, str]] = ()) -> dict[str, dict]:
    """Per run named ``<...>_<workers>``: the median wall and CPU seconds (CPU of every process),
    every repeat's wall, the documents out and MB/s of text per core (wall x workers); and for each
    (ours, datatrove) pair of names that both ran, ``datatrove_over_ours`` on the datatrove row."""
    rows = {}
    for name, measured in runs.items():
        wall = statistics.median(r["wall_s"] for r in measured)
        rows[name] = {"wall_s": round(wall, 3), "wall_s_all": [round(r["wall_s"], 3) for r in measured],
                      "cpu_s": round(statistics.median(r["cpu_s"] for r in measured), 3), "docs": measured[0]["docs"],
                      "mb_per_s_per_core": round(text_mb / (wall * int(name.rsplit("_", 1)[1])), 3)}
    for ours, theirs in pairs:
        if ours in rows and theirs in rows:
            rows[theirs]["datatrove_over_ours"] = round(rows[theirs]["wall_s"] / rows[ours]["wall_s"], 2)
    return rows


def save_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
    return path


# ----------------------------------------------------------------------------------- memory

def _status_kb(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory in MiB. VmHWM, not ru_maxrss: Linux carries ru_maxrss across
    exec, so a spawned child would report its parent's peak at fork time."""
    kib = _status_kb(pid, "VmHWM:")
    if kib is not None:
        return kib / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


_peak_rss_mb = peak_rss_mb  # the name the stage benchmarks used


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset a process's VmHWM to its current size (Linux >= 4.0, same user); False where refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


def process_role(pid: int, cmdline: list[str], me: int) -> str:
    """What a process in a benchmark's tree is: this process (the driver), a Ray worker, Ray's own
    daemons, or another child (datatrove's pool workers, multiprocessing's manager)."""
    if pid == me:
        return "driver"
    line = " ".join(cmdline)
    if line.startswith("ray::") or "default_worker.py" in line:
        return "ray_worker"
    if "raylet" in line or "gcs_server" in line:
        return "ray_daemon"
    if "ray" in line and ("dashboard" in line or "agent" in line or "monitor" in line or "ray/_private" in line):
        return "ray_daemon"
    return "child"


class ProcessTreeMonitor:
    """Peak memory and CPU seconds of this process and every descendant, per process, per phase.

    A thread polls every ``interval`` seconds; each process's peak is its kernel high-water mark
    (VmHWM), so sampling only matters for a process that grows and exits between two polls. ``mark()``
    closes a phase and returns, per process, its role, peak MiB and CPU seconds within the phase, then
    resets every high-water mark so the next phase starts from each process's current size.
    """

    def __init__(self, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.me = os.getpid()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._procs: dict[int, Any] = {}
        self._phase: dict[int, dict] = {}
        self.reset_ok = True
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ProcessTreeMonitor":
        self._poll(start=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _tree(self) -> list:
        root = self._procs.get(self.me) or self._psutil.Process(self.me)
        try:
            return [root, *root.children(recursive=True)]
        except self._psutil.Error:
            return [root]

    def _poll(self, start: bool = False) -> None:
        for proc in self._tree():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu = times.user + times.system
                    peak = peak_rss_mb(proc.pid)
                    key = proc.pid
                    cmdline = proc.cmdline()
                    with self._lock:
                        if key not in self._phase:
                            self._procs[key] = proc
                            self._phase[key] = {"role": process_role(proc.pid, cmdline, self.me), "cmdline": cmdline,
                                                "cpu_start": cpu if start else 0.0, "cpu": cpu, "peak_mb": 0.0}
                        entry = self._phase[key]
                        if entry["cmdline"] != cmdline:
                            # first seen between fork and exec: the peak so far was its parent's image
                            entry.update(role=process_role(proc.pid, cmdline, self.me), cmdline=cmdline, peak_mb=0.0)
                        entry["cpu"] = cpu
                        entry["peak_mb"] = max(entry["peak_mb"], peak)
            except (self._psutil.Error, OSError):
                continue

    def mark(self) -> dict[int, dict]:
        """Close the current phase: ``{pid: {role, peak_mb, cpu_s}}``; reset the peaks for the next."""
        self._poll()
        with self._lock:
            phase = {pid: {"role": e["role"], "peak_mb": round(e["peak_mb"], 1),
                           "cpu_s": round(e["cpu"] - e["cpu_start"], 3)} for pid, e in self._phase.items()}
            alive = {}
            for pid, entry in self._phase.items():
                if self._procs[pid].is_running():
                    self.reset_ok &= reset_peak_rss(pid)
                    alive[pid] = {**entry, "cpu_start": entry["cpu"], "peak_mb": 0.0}
            self._phase = alive
        self._poll()
        return phase


def by_role(phase: dict[int, dict]) -> dict[str, dict]:
    """A phase of ``ProcessTreeMonitor.mark`` per role: processes, largest peak, CPU seconds summed."""
    roles: dict[str, dict] = {}
    for entry in phase.values():
        row = roles.setdefault(entry["role"], {"processes": 0, "peak_mb": 0.0, "cpu_s": 0.0})
        row["processes"] += 1
        row["peak_mb"] = max(row["peak_mb"], entry["peak_mb"])
        row["cpu_s"] = round(row["cpu_s"] + entry["cpu_s"], 3)
    return roles


def _measured(fn: Callable[..., dict], args: tuple, pin: bool) -> dict:
    if pin:
        single_core()
    baseline = peak_rss_mb()  # the interpreter and the imports the benchmark module made
    result = fn(*args)
    result.update(peak_rss_mb=peak_rss_mb(), baseline_rss_mb=baseline)
    return result


def isolated(fn: Callable[..., dict], *args: Any, pin: bool = True) -> dict:
    """Run ``fn(*args)`` (a module-level function returning a dict) in a fresh spawned process and
    return its dict plus ``peak_rss_mb``, that process's peak resident memory, and ``baseline_rss_mb``,
    its peak before ``fn`` ran (so ``peak - baseline`` is what ``fn`` itself needed). ``pin``: Arrow
    on one thread (``single_core``); off for contenders that manage their own processes."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measured, fn, args, pin).result()


# ----------------------------------------------------------------------------------- datatrove

def accept_fasttext_numpy2() -> None:
    """Let datatrove's fastText steps (LanguageFilter, FastTextClassifierFilter, the lid model) run
    on the project's fastText.

    datatrove checks for the *distribution* ``fasttext-numpy2-wheel``; the project installs
    ``fasttext-numpy2``, which provides the same ``fasttext`` module (and can also train, which the
    quality stage needs). The two cannot be installed side by side: both own ``fasttext/``, and the
    one installed last silently replaces the other's files. So the benchmark does not install
    datatrove's ``processing`` extra and instead answers datatrove's distribution check with
    fasttext-numpy2. The patch is process-wide; processes forked afterwards inherit it.
    """
    import datatrove.utils._import_utils as import_utils

    if getattr(import_utils, "_accepts_fasttext_numpy2", False):
        return
    check = import_utils._is_distribution_available

    def available(name: str):
        if name == "fasttext-numpy2-wheel":
            return check(name) or check("fasttext-numpy2")
        return check(name)

    import_utils._is_distribution_available = available
    import_utils._accepts_fasttext_numpy2 = True


def quiet_datatrove() -> None:
    """Drop datatrove's loguru sinks: per-file progress lines would land inside the timings."""
    from loguru import logger

    logger.remove()


def run_datatrove_filters(shard_dir: Path, filters: list, out: Path) -> dict:
    """datatrove's ParquetReader over ``shard_dir``, then ``filters`` (each with its own exclusion
    writer), then a zstd ParquetWriter to ``out/kept``: timed, with the number of documents kept."""
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    steps = [
        ParquetReader(str(shard_dir), glob_pattern="*.parquet"),
        *filters,
        ParquetWriter(str(out / "kept"), compression="zstd"),
    ]
    with Timer() as run:
        run_datatrove_steps(steps)
    kept = sum(pq.read_metadata(p).num_rows for p in (out / "kept").glob("*.parquet"))
    return {"wall_s": run.wall, "cpu_s": run.cpu, "kept": kept}


def run_datatrove_steps(steps: list) -> None:
    """Pipe data through datatrove steps for one rank of one task, in this process: what
    LocalPipelineExecutor does per task, without its logging and bookkeeping."""
    data = None
    for step in steps:
        data = step(data, 0, 1)
    deque(data or [], maxlen=0)
