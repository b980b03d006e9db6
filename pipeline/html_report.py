"""``python -m pipeline report CONFIG --html``: one self-contained ``report.html`` per run.

The page is what a data team looks at to decide what to keep: the funnel per stage, category and
language; why documents were removed and what they look like; score histograms with the thresholds;
duplicate clusters; tokenizer compression; the mixture's composition and phases; run times; config
hashes and versions. ``run`` writes it at the end (``pipeline.steps.run_steps``).

Self-contained means: one file, CSS inline, charts as inline SVG, no script at all, no external
font, image or link to fetch, so it opens offline from disk in any browser. A Content-Security-
Policy meta tag forbids scripts and network loads as a second line of defence; the first is that
every text from the corpus or the config is HTML-escaped (``pipeline.html_util.esc``).

It reads only manifests, stats and a bounded sample of rows (``pipeline.report_data.Limits``), so
it takes seconds whatever the size of the run.
"""
from __future__ import annotations

import datetime
import time
from typing import Callable

import pyarrow.fs as pafs

from pipeline import html_stages, html_steps, storage
from pipeline.config import PipelineConfig
from pipeline.html_util import CSS, esc, mb, num, pct, section
from pipeline.report_data import Limits, collect
from pipeline.errors import PipelineError
from pipeline.planning import plan_stages
from pipeline.steps import STEP_MARKER, step_dir

REPORT_FILE = "report.html"
SECTIONS = [("summary", "Summary"), ("funnel", "Funnel"), ("reasons", "Reasons"), ("examples", "Examples"),
            ("histograms", "Scores"), ("dedup", "Dedup"), ("tokenizer", "Tokenizer"), ("mixture", "Mixture"),
            ("timing", "Run time"), ("provenance", "Hashes & versions")]
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def report_path(config: PipelineConfig) -> str:
    """``<work_dir>/report.html`` (a local path or a URI, as work_dir is)."""
    return storage.join(config.work_dir, REPORT_FILE)


def write_html_report(config: PipelineConfig, limits: Limits = Limits(),
                      log: Callable[[str], None] = print, executor=None) -> str:
    """Collect, render and atomically write ``<work_dir>/report.html``; returns its path. A write
    that cannot succeed (disk full, no permission) is a PipelineError naming the path.

    ``executor``: reads the run's files in one of its tasks (``pipeline.executor``) instead of this
    process. Reading a sample of every stage's shards is a few hundred MB of transient buffers
    that the allocator keeps (about 370 MB of driver peak at 4x corpus-dev, 573 at 30x); in a task
    the driver stays at its planning size. None: this process."""
    started = time.perf_counter()
    if executor is None:
        data = collect(config, limits)
    else:
        data = executor.map(_collect_task, [(config, limits)], label="report")[0]
    page = render(data)
    path = report_path(config)
    fs, local = storage.resolve(path)
    try:
        storage.write_bytes(fs, local, page.encode("utf-8"))
    except storage.StorageError as error:  # disk full, no permission: a one-line error, not a traceback
        raise PipelineError(f"report: {error}") from None
    log(f"report: {storage.shown(path)} ({len(page) / 1e3:,.0f} kB) in {time.perf_counter() - started:.2f} s")
    return path


def _collect_task(item: tuple[PipelineConfig, Limits]) -> dict:
    return collect(*item)


def report_is_current(config: PipelineConfig) -> bool:
    """True when ``report.html`` exists and is newer than every file it summarises (each stage's
    manifest and stage marker, the tokenizer's report and the mixture's tables), so that a rerun of
    a finished run, which writes nothing else, does not rewrite it either."""
    fs, report = storage.resolve(report_path(config))
    _, tokenizer = storage.resolve(step_dir(config, "tokenizer"))
    _, mixture = storage.resolve(storage.join(config.work_dir, "mixture"))
    sources = [storage.join(spec.directory, name) for spec in plan_stages(config, fingerprints=False)
               for name in ("_manifest.json", "_stage.json")]
    sources += [storage.join(tokenizer, name) for name in ("report.json", STEP_MARKER)]
    sources += [storage.join(mixture, f"{name}.json") for name in ("composition", "phases", "manifest")]
    infos = fs.get_file_info([report] + sources)
    if infos[0].type == pafs.FileType.NotFound:
        return False
    newest = max((info.mtime_ns for info in infos[1:] if info.type != pafs.FileType.NotFound), default=0)
    return infos[0].mtime_ns > newest


def render(data: dict) -> str:
    """The whole page from ``collect``'s data."""
    stages = data["stages"]
    mix = data.get("mixture") or {}
    body = [
        _summary(data),
        html_stages.funnel(stages),
        html_stages.reasons(stages),
        html_stages.examples(stages),
        html_stages.histograms(data["histograms"]),
        html_steps.dedup(data.get("dedup")),
        html_steps.tokenizer(data.get("tokenizer"), mix.get("composition")),
        html_steps.mixture(mix),
        html_steps.timing(stages, data.get("tokenizer")),
        html_steps.provenance(data["provenance"]),
    ]
    nav = "".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in SECTIONS)
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    title = f"Pipeline report: {data['work_dir']}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>Corpus pipeline report</h1><div class=\"sub\">{esc(data['work_dir'])} · run hash "
            f"{esc(data['provenance']['run_hash'])} · generated {esc(generated)}</div></header>"
            f"<nav>{nav}</nav><main>{''.join(body)}</main></body></html>\n")


def _summary(data: dict) -> str:
    """The headline numbers: documents and bytes in and out, tokens, stages done."""
    done = [s for s in data["stages"] if "totals" in s]
    if not done:
        return section("summary", "Summary", '<p class="missing">No stage has finished yet.</p>')
    first, last = done[0]["totals"], done[-1]["totals"]
    composition = (data.get("mixture") or {}).get("composition")
    facts = [
        ("documents in", num(first["input_rows"])),
        (f"documents after {done[-1]['stage']}", f"{num(last['kept_rows'])} ({pct(last['kept_rows'], first['input_rows'])})"),
        ("text in", mb(first["input_bytes"])),
        (f"text after {done[-1]['stage']}", f"{mb(last['kept_bytes'])} ({pct(last['kept_bytes'], first['input_bytes'])})"),
        ("stages done with this config", f"{len([s for s in data['stages'] if s['complete']])} of {len(data['stages'])}"),
    ]
    if composition:
        facts.append(("tokens in the final corpus", num(composition["total"]["tokens"])))
    cells = "".join(f'<div class="fact"><div class="v">{value}</div><div class="k">{esc(key)}</div></div>'
                    for key, value in facts)
    return section("summary", "Summary", f'<div class="facts">{cells}</div>')
