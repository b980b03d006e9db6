"""The HTML report (``report --html``, and the end of ``run``): self-contained, every section there,
rendered in a real headless Chromium, and corpus text escaped so that a planted ``<script>`` never runs.

The browser tests need Debian's ``chromium`` (``apt-get install -y chromium``; ``fonts-noto-cjk`` for
readable Chinese in the screenshot) and skip, saying so, where no chromium binary is found.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SAMPLE_CONFIG, sample_config
from pipeline.cli import main
from pipeline.html_report import SECTIONS, report_path, write_html_report
from pipeline.html_steps import mixture
from pipeline.report_sample import histograms, near_threshold, sample_side
from pipeline.runner import run_pipeline

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (path := shutil.which(name))), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH: the browser checks "
                                    "need headless Chromium (Debian: apt-get install -y chromium)")
SECTION_IDS = [anchor for anchor, _ in SECTIONS]
# Anything that would make the page fetch something or run code.
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|@import|url\(\s*["']?https?:""", re.I)
PLANTED = "<script>alert(1)</script>"
TITLE_SETTERS = ("<script>document.title='XSS'</script>", "<img src=x onerror=\"document.title='XSS'\">")


def _chromium(profile, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a profile of its own (two test runs never share one)."""
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def _dump_dom(path, profile) -> str:
    """The DOM after load (and after any script could have run), serialised."""
    run = _chromium(profile, "--virtual-time-budget=2000", "--dump-dom", f"file://{path}")
    assert run.returncode == 0 and "<html" in run.stdout, run.stderr[-2000:]
    return run.stdout


def _title(page: str) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", page, re.S).group(1))


@pytest.fixture(scope="module")
def sample_report(sample_run):
    """The sample run's report, rewritten here and timed."""
    work_dir, config, _ = sample_run
    started = time.perf_counter()
    path = write_html_report(config, log=lambda _: None)
    print(f"\nreport of the sample run written in {time.perf_counter() - started:.2f} s: {path}")
    return work_dir, config, path


def test_run_writes_a_self_contained_report_with_every_section(sample_run):
    work_dir, config, _ = sample_run
    page = (work_dir / "report.html").read_text(encoding="utf-8")  # written by `run` itself
    for anchor in SECTION_IDS:
        assert f'<section id="{anchor}">' in page, anchor
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<svg") >= 10  # funnel, reasons per stage, histograms, dedup, tokenizer, mixture, timing
    assert 'id="hist-lang_score"' in page and 'id="hist-quality_score"' in page
    assert 'class="threshold"' in page  # the quality (and langid) cut is marked
    for reason in ("lang_low_score", "gopher_too_few_words", "low_quality", "exact_duplicate", "near_duplicate"):
        assert f"removed: {reason}" in page, reason
    assert "Table 1: corpus composition by category" in page and "Phase pretrain" in page


def test_the_report_read_in_a_ray_task_is_the_page_read_in_process(sample_run, tmp_path):
    """``run`` collects the report's data in a task (the driver keeps none of the sample's buffers);
    the page must not depend on where it was read. A run that starts no Ray reads in process."""
    from pipeline.executor import LazyRayExecutor, RayExecutor
    from pipeline.report_step import STEP

    work_dir, config, _ = sample_run
    write_html_report(config, log=lambda _: None)
    in_process = (work_dir / "report.html").read_text(encoding="utf-8")
    write_html_report(config, log=lambda _: None, executor=RayExecutor(config.ray))
    assert (work_dir / "report.html").read_text(encoding="utf-8") == in_process

    lazy = LazyRayExecutor(config.ray)
    STEP.run(config, None, lazy, True, lambda _: None)
    assert lazy.started is None  # not worth starting Ray for
    assert (work_dir / "report.html").read_text(encoding="utf-8") == in_process


def test_report_command_writes_the_page_and_prints_where(sample_run, tmp_path, capsys):
    work_dir, _, _ = sample_run
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw["work_dir"] = str(work_dir)
    config_file = tmp_path / "sample.yaml"
    config_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    before = (work_dir / "report.html").stat().st_mtime_ns
    assert main(["report", str(config_file), "--html"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"report: .*report\.html \([\d,]+ kB\) in [\d.]+ s", out), out
    assert (work_dir / "report.html").stat().st_mtime_ns > before
    assert main(["report", str(config_file), "--json", "--html"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # --json stays parseable: the report line goes to stderr
    assert "report.html" in captured.err


@needs_chromium
def test_the_sample_report_renders_in_chromium(sample_report, tmp_path):
    _, _, path = sample_report
    screenshot = tmp_path / "report.png"
    run = _chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1400,24000", f"file://{path}")
    assert run.returncode == 0 and screenshot.stat().st_size > 50_000, run.stderr[-2000:]
    print(f"\nscreenshot: {screenshot}")
    dom = _dump_dom(path, tmp_path / "profile")
    for anchor in SECTION_IDS:
        assert re.search(rf'<section id="{anchor}"', dom), f"section #{anchor} missing from the rendered page"
    assert _title(dom).startswith("Pipeline report: ")
    assert "<script" not in dom.lower()


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """A small run of the sample config with one extra input, listed first so that its documents
    are the first examples of their reasons: `<script>` in a kept-looking document, in a duplicate
    id (quarantined by ingest), in a line that is not JSON (quarantined with its raw text) and in a
    document too short to keep; ids carry markup too."""
    root = tmp_path_factory.mktemp("planted")
    long_text = ("The village library reopened this week after a long renovation, with new shelves, a reading "
                 "room for children and longer opening hours on weekdays and Saturdays. ") * 4
    lines = [json.dumps({"id": "<b>xss-1</b>", "text": long_text + PLANTED + TITLE_SETTERS[0]}),
             json.dumps({"id": "<b>xss-1</b>", "text": PLANTED + TITLE_SETTERS[0] + " duplicate id"}),
             '{"id": "xss-2", "text": "' + PLANTED + TITLE_SETTERS[1].replace('"', "'") + '"',  # no closing brace
             json.dumps({"id": "<i>xss-3</i>", "text": PLANTED + TITLE_SETTERS[1] + " click here"})]
    (root / "planted.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    forum = next(source for source in raw["inputs"] if source["name"] == "forum")
    inputs = [{"name": "planted", "path": str(root / "planted.jsonl"), "category": "web", "id_field": "id"},
              dict(forum, path=str(REPO / forum["path"]))]
    config = sample_config(root / "work", inputs=inputs, tokenizer=None, mixture=None)
    run_pipeline(config, use_ray=False, log=lambda _: None)
    return config


def test_planted_markup_is_escaped_in_the_page(planted_run):
    page = open(report_path(planted_run), encoding="utf-8").read()
    assert html.escape(PLANTED, quote=True) in page
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<i>xss" not in page
    assert "&lt;i&gt;xss-3&lt;/i&gt;" in page  # ids are escaped too
    examples = page[page.index('<section id="examples">'):page.index('<section id="histograms">')]
    assert examples.count(html.escape(PLANTED, quote=True)) >= 3  # duplicate id, bad JSON, short document


@needs_chromium
def test_a_planted_script_shows_as_text_and_never_runs(planted_run, tmp_path):
    path = report_path(planted_run)
    dom = _dump_dom(path, tmp_path / "profile")
    assert _title(dom) == f"Pipeline report: {planted_run.work_dir}", "a planted script changed the title"
    assert "XSS" not in _title(dom)
    assert "<script" not in dom.lower() and "<img" not in dom.lower(), "planted markup became an element"
    assert dom.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # shown as text in the examples
    screenshot = tmp_path / "planted.png"
    run = _chromium(tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1400,3000", f"file://{path}")
    assert run.returncode == 0 and screenshot.exists(), run.stderr[-2000:]


def test_mixture_shortfall_is_red():
    row = {"target_weight": 0.5, "weight": 0.3, "target_tokens": 500, "tokens": 300, "documents": 3, "epochs": 1.0,
           "cumulative_epochs": 1.0, "max_epochs": 1.0, "ran_out": True, "reuses_documents": False,
           "shortfall_tokens": 200}
    fine = dict(row, weight=0.7, tokens=700, target_weight=0.5, ran_out=False, shortfall_tokens=0)
    composition = {"total": {"tokens": 1000, "documents": 6, "bytes": 3000},
                   "by_category": [{"category": "web", "label": "Web", "tokens": 1000, "share": 1.0, "documents": 6,
                                    "bytes": 3000, "bytes_per_token": 3.0}], "by_lang": [], "by_category_lang": []}
    phase = {"name": "p<1>", "tokens": 1000, "sequences": 1, "budget": 1000, "budget_from": "config",
             "categories": {"books": row, "web": fine}, "groups": []}
    page = mixture({"composition": composition, "phases": [phase]})
    assert '<td class="n short">30.0%</td>' in page and "ran out: 200 tokens short" in page
    assert '<td class="n">70.0%</td>' in page  # a category on target is not red
    off = dict(fine, weight=0.2, off_target=True, off_target_because="its sampling bins are too coarse")
    page = mixture({"composition": composition, "phases": [dict(phase, categories={"web": off})]})
    assert '<td class="n short">20.0%</td>' in page and "off target by -30.0%" in page
    assert "Phase p&lt;1&gt;" in page


def test_histograms_cover_every_quality_signal_and_mark_thresholds(tmp_path):
    """Signal columns are found by name and type; absent columns and non-float ones are skipped."""
    rows = 40
    table = pa.table({"id": [f"d{i}" for i in range(rows)], "text": ["x"] * rows,
                      "category": ["web"] * 30 + ["books"] * 10, "lang": ["en"] * 20 + ["zh"] * 20,
                      "quality_score": [i / rows for i in range(rows)],
                      "quality_stopword_ratio": pa.array([0.1] * rows, pa.float32()),
                      "quality_perplexity": [10.0 * (i + 1) for i in range(rows)],
                      "quality_label": ["a"] * rows})
    pq.write_table(table, tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["e"], "text": ["y"], "category": ["web"]}), tmp_path / "b.parquet")
    files = [{"path": "a.parquet", "rows": rows}, {"path": "b.parquet", "rows": 1}, {"path": "empty.parquet", "rows": 0}]
    fs = pafs.LocalFileSystem()
    kept = sample_side(fs, str(tmp_path), files, max_files=4, rows_per_file=1000)
    assert kept.score_columns == ["quality_score", "quality_stopword_ratio", "quality_perplexity"]
    assert len(kept.rows) == rows + 1 and "text" not in kept.rows[0]
    removed = sample_side(fs, str(tmp_path), [], max_files=4, rows_per_file=1000)
    config = {"thresholds": {"web/en": 0.4, "*/zh": 0.2, "books": None}}
    result = histograms(kept, removed, "quality_score", "quality", config)
    by_lang = {entry["lang"]: entry for entry in result["langs"]}
    assert by_lang["en"]["thresholds"] == [{"value": 0.4, "categories": ["web"], "all_categories": True}]
    assert by_lang["zh"]["thresholds"] == [{"value": 0.2, "categories": ["web"], "all_categories": False}]
    assert sum(by_lang["en"]["kept"]) == 20 and result["edges"][0] == 0.0 and result["edges"][-1] == 1.0
    perplexity = histograms(kept, removed, "quality_perplexity", "quality", config)
    assert perplexity["edges"][-1] > 1 and all(not entry["thresholds"] for entry in perplexity["langs"])
    assert histograms(kept, removed, "lang_score", "langid", {}) is None  # absent column: nothing, no error
    near = near_threshold(kept.rows, "quality", config, limit=2)
    assert [(row["id"], row["_threshold"]) for row in near] == [("d16", 0.4), ("d17", 0.4)]


def test_sampling_reads_a_bounded_spread_of_shards(tmp_path):
    """A large stage is never scanned: max_files shards, spread from first to last, first rows only."""
    files = []
    for index in range(10):
        pq.write_table(pa.table({"id": [f"s{index}-{row}" for row in range(5)], "text": ["t"] * 5,
                                 "lang_score": [0.9] * 5}), tmp_path / f"{index}.parquet")
        files.append({"path": f"{index}.parquet", "rows": 5})
    sample = sample_side(pafs.LocalFileSystem(), str(tmp_path), files, max_files=2, rows_per_file=3)
    assert sample.files_read == 2 and [row["id"] for row in sample.rows] == [
        "s0-0", "s0-1", "s0-2", "s9-0", "s9-1", "s9-2"]
    assert sample.weight == 50 / 6  # counts drawn from it are scaled to the 50 rows on this side
    assert sample_side(pafs.LocalFileSystem(), str(tmp_path), files[:4], max_files=2, rows_per_file=3).files_read == 4
