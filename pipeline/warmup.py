"""A machine's first run: each stage's compiled loops built once, the stages split across the workers.

numba compiles a kernel on its first call and caches the machine code on disk (``pipeline.jit``); later
runs load it in a fraction of a second. On a machine's first run, though, every Ray worker meets every
kernel in its own first task of each stage: with two workers both compile the same code at the same
time, and the run waits for each stage's compiling in turn (about 35 s of the sample's first run on
2 cores, most of it dedup's and the per-document stages' kernels one after the other).

So before the first stage, when the driver finds stage kernel modules with nothing cached
(``jit.uncached_modules``, which does not import numba) and the run has two workers or more, it runs
one task per stage (``warm_stage``): the stage on a small built-in sample, in process, which compiles
what the sample reaches and writes it to the cache. The tasks run at once on different workers,
dedup's first (it compiles the most), so each stage's loops are compiled once and the stages' own
tasks load them. Later runs find the cache and skip all of this. When the driver must first train
a model (the quality stage's, on a fresh checkout; ``Stage.assets_missing``), which compiles that
stage's loops in the driver, the other stages' warm-up starts before the training, on a thread
(``start_warm_up``), so that the workers compile while the driver trains.

The sample is written to a temporary Parquet file and read back, as shards are, so that the kernels
meet the argument types of a real run (``tests/test_jit.py`` runs the warm-up and then the sample
corpus in one process and checks that each kernel met one signature). A stage with a global pass
(``Stage.prepare``: dedup) runs it first, in process. Nothing is written outside a temporary
directory, and a warm-up that fails only logs a line: the stage's tasks compile what it did not.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import jit
from pipeline.planning import StageSpec
from pipeline.stage import PrepareContext, Stage

_PROSE = (
    "The river rises in the northern hills and runs south through a wide valley of farms and small "
    "towns. In spring the water is high and fast, and the old stone bridges are closed for a few weeks. "
    "Most of the people who live along its banks work on the land, as their parents did before them."
)
_SHARED = ("The museum is open every day except Monday. Tickets can be bought at the door or online, "
           "and children under twelve enter free of charge.")
_ZH = ("长江是中国最长的河流，全长六千三百多公里。它发源于青藏高原，向东流经十一个省份，最后注入东海。"
       "长江流域人口众多，经济发达，是中国重要的农业和工业地区。沿岸有许多著名的城市，例如重庆、武汉和上海。")
_WRAPPED = "\n".join([
    "It was the best of times, it was the worst of times, it was the age of",
    "wisdom, it was the age of foolishness, it was the epoch of belief, it",
    "was the epoch of incredulity, it was the season of Light, it was the",
    "season of Darkness, it was the spring of hope, it was the winter of despair.",
])
# (text, category, lang): prose in several scripts, near and exact duplicates, a shared paragraph,
# hard-wrapped lines, code and boilerplate, so that each stage's main paths run.
SAMPLE = [
    ("\n\n".join([_PROSE, _SHARED, _PROSE.replace("river", "stream")]), "web", "en"),
    ("\n\n".join([_PROSE, _SHARED, _PROSE.replace("river", "stream")]), "web", "en"),
    ("\n\n".join([_PROSE.replace("farms", "fields"), _SHARED, _PROSE.replace("river", "stream")]), "web", "en"),
    ("\n\n".join([_SHARED, _WRAPPED, _PROSE.upper()]), "books", "en"),
    (_ZH + "\n" + _ZH[::-1], "encyclopedia", "zh"),
    (_ZH.replace("长江", "黄河") + "\n" + _ZH[::-1], "encyclopedia", "zh"),
    ("東京は日本の首都であり、世界で最も人口の多い都市の一つです。多くの人々が電車で通勤しています。", "web", "ja"),
    ("Der Fluss entspringt in den nördlichen Hügeln und fließt durch ein weites Tal nach Süden. "
     "Im Frühling ist das Wasser hoch und schnell.", "papers", "de"),
    ("Река берёт начало в северных холмах и течёт на юг через широкую долину.", "others", "ru"),
    ("def add(a, b):\n    return a + b\n\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n"
     "        self.y = y\n", "code", "code"),
    ("Click here to accept cookies.\nLorem ipsum dolor sit amet.\nPlease enable JavaScript {to continue}\n"
     "Home | About | Contact\n" + _SHARED, "web", "en"),
    ("Buy cheap shoes online today. " * 40, "web", "en"),
    ("", "others", "und"),
]


def sample_table() -> pa.Table:
    """``SAMPLE`` with every column the stages read after ingest, langid and quality."""
    texts, categories, langs = zip(*SAMPLE)
    rows = len(texts)
    return pa.table({
        "id": [f"warm-up-{i}" for i in range(rows)],
        "text": list(texts),
        "source": ["warm-up"] * rows,
        "category": list(categories),
        "meta": ["{}"] * rows,
        "lang": list(langs),
        "lang_score": pa.array([0.9] * rows, pa.float32()),
        "script": [None] * rows,
        "quality_score": pa.array([0.5 + i / 100 for i in range(rows)], pa.float32()),
    })


def start_warm_up(specs: list[StageSpec], executor, log: Callable[[str], None]) -> Callable[[], None]:
    """Before the driver builds the stages' assets: when one of ``specs`` has some to build (a model
    to train, which compiles its own loops in the driver: ``Stage.assets_missing``), ``warm_up`` of
    the others starts now, on a thread, so that the workers compile while the driver trains. Returns
    the call that waits for it (at once when nothing started). Only then: a run whose assets are
    there may have nothing to do, and must not start Ray for the warm-up before it knows."""
    if not jit.uncached_modules(STAGES):  # the usual run: no model report read, nothing started
        return lambda: None
    building = [spec for spec in specs if spec.stage_type.assets_missing(spec.config)]
    others = [spec for spec in specs if spec not in building]
    if not building or not _uncached(others, executor):
        return lambda: None
    thread = threading.Thread(target=warm_up, args=(others, executor, log), name="warm-up", daemon=True)
    thread.start()
    return thread.join


def warm_up(specs: list[StageSpec], executor, log: Callable[[str], None]) -> None:
    """On a machine with uncached kernels and a run with two workers or more: ``warm_stage`` for each
    of ``specs`` that processes shards (not the source stage), a task each, at once."""
    specs = [spec for spec in specs if not hasattr(spec.stage_type, "run_unit")]
    uncached = _uncached(specs, executor)
    if not uncached:
        return
    started = time.perf_counter()
    log(f"numba: {len(uncached)} modules of compiled loops are not cached on this machine "
        f"yet: compiling them once, a stage per worker ({', '.join(spec.name for spec in specs)})")
    # dedup's (a global pass) first: it compiles the most
    sizes = [2.0 if spec.stage_type.prepare is not Stage.prepare else 1.0 for spec in specs]
    try:
        errors = executor.map(warm_stage, specs, "compile ahead", sizes=sizes)
    except Exception as error:  # a lost worker, Ray shut down by a failing driver: the run decides
        log(f"numba: compiling ahead stopped ({type(error).__name__}: {error})")
        return
    for spec, error in zip(specs, errors):
        if error:
            log(f"numba: compiling ahead for {spec.name} stopped ({error}); its tasks compile the rest")
    log(f"numba: compiled ahead in {time.perf_counter() - started:.1f} s")


# The stages' kernel modules only: the driver imports the tokenizer's too, which only its step
# compiles, and a run without that step would otherwise warm up every time.
STAGES = "stages."


def _uncached(specs: list[StageSpec], executor) -> list[str]:
    """The stage kernel modules with nothing cached, when ``specs`` are to be warmed up (any of them,
    two workers or more: looked at last, since it starts Ray); else none."""
    uncached = jit.uncached_modules(STAGES) if specs else []
    return uncached if uncached and executor.workers >= 2 else []


def warm_stage(spec: StageSpec) -> str | None:
    """Run ``spec``'s stage on ``sample_table`` in this process (its global pass first, if any), in a
    temporary directory; None, or what went wrong (the stage's tasks then compile what is left)."""
    try:
        with tempfile.TemporaryDirectory(prefix="corpus-pipeline-warm-up-") as directory:
            path, scratch = os.path.join(directory, "part-00000.parquet"), os.path.join(directory, "scratch")
            pq.write_table(sample_table(), path)
            filesystem = pafs.LocalFileSystem()
            stage = spec.stage_type(spec.config)
            if spec.stage_type.prepare is not Stage.prepare:
                stage.prepare(PrepareContext(inputs={"part-00000": path}, scratch=scratch, filesystem=filesystem,
                                             map=lambda fn, items: [fn(item) for item in items], log=lambda _: None))
            stage.begin_shard("part-00000", scratch, filesystem)
            stage.process(pq.read_table(path))
    except Exception as error:  # an optimisation only: the run goes on without it
        return f"{type(error).__name__}: {error}"
    return None
