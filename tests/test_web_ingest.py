"""Web input through ingest: WARC, WET and HTML readers, `html_field`, URL lists, config keys.

Every input is a real file written here from the hand-written pages of stages/web/fixtures.py (or
../shared/data's dev WARC files, skipped where absent), run through the real source stage in-process
(`run_pipeline(..., use_ray=False)` with `stages: {}`: ingest alone); the sample run on Ray
(tests/test_architecture.py, tests/test_runner.py) covers the crawl input of configs/sample.yaml.
"""
from __future__ import annotations

import collections
import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, parse_config
from pipeline.errors import InputError, PipelineError
from pipeline.executor import TaskFailed
from pipeline.planning import plan_stages
from pipeline.runner import run_pipeline
from stages.ingest import REASONS
from stages.web.fixtures import (ARTICLE_EN, ARTICLE_EN_2, ARTICLE_ZH, BOILERPLATE_ONLY, Page, corpus_pages,
                                 write_sample_warc, write_sample_wet)

ZH_LINE = "小站坐落在两座山之间，每天只有四趟慢车停靠，站长已经在这里工作了二十多年。"
GB2312_META = '<meta http-equiv="Content-Type" content="text/html; charset=gb2312">'
CJK_ONLY = ("<html><body><div><p>只有中文的页面。这里没有任何拉丁字母，只有中文句子和标点符号，用来检查抽取结果。</p>"
            "<p>第二段也是中文，讲的是巷子里的小书店每天几点开门。</p></div></body></html>")
EN_LINE = "purple sea urchins moved north by almost two kilometres"


def _config(tmp_path: Path, inputs: list[dict], **ingest) -> dict:
    return {"work_dir": str(tmp_path / "work"), "inputs": inputs, "ingest": ingest, "stages": {}}


def _run(tmp_path: Path, inputs: list[dict], **ingest) -> tuple[list[dict], list[dict]]:
    run_pipeline(parse_config(_config(tmp_path, inputs, **ingest)), use_ray=False, log=lambda _: None)
    return _rows(tmp_path, "kept"), _rows(tmp_path, "removed")


def _rows(tmp_path: Path, side: str) -> list[dict]:
    files = sorted((tmp_path / "work" / "01_ingest" / side).glob("*.parquet"))
    rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    for row in rows:
        row["meta"] = json.loads(row["meta"])
    return rows


def _in_file_order(kept: list[dict], removed: list[dict]) -> list[str | None]:
    """The reason of every record (None: kept), in the order of the records in their file."""
    rows = sorted(kept + removed, key=lambda r: (r["meta"]["_ingest"]["file"], r["meta"]["_ingest"]["offset"]))
    return [row.get("reason") for row in rows]


def _stage_json(tmp_path: Path, name: str) -> dict:
    return json.loads((tmp_path / "work" / "01_ingest" / name).read_text())


def _warc_input(path: Path, **options) -> dict:
    return {"name": "crawl", "path": str(path), "category": "web", **options}


# ---- WARC: every record kind, ids and meta -------------------------------------------------------

def test_every_warc_record_kind_goes_through_ingest_with_conservation(tmp_path):
    path = tmp_path / "crawl.warc.gz"
    expected = write_sample_warc(path)
    kept, removed = _run(tmp_path, [_warc_input(path)])  # format auto: told from the name
    assert _in_file_order(kept, removed) == expected
    assert len(kept) == 4 and len(kept) + len(removed) == len(expected)
    assert all(row["reason"] in REASONS for row in removed)
    totals = _stage_json(tmp_path, "_manifest.json")["totals"]
    assert totals["input_rows"] == len(expected) == totals["kept_rows"] + totals["removed_rows"]
    stats = _stage_json(tmp_path, "_stats.json")
    web = stats["ingest"]["web"]
    assert web["records"] == len(expected) and web["documents"] == 4
    assert web["by_type"] == {"warcinfo": 1, "request": 7, "response": 7, "metadata": 7, "revisit": 1}
    assert web["removed"] == dict(collections.Counter(r for r in expected if r))
    by_reason = {reason: counts["removed_docs"] for reason, counts in stats["runner"]["by_reason"].items()}
    assert by_reason == web["removed"]


def test_warc_ids_and_meta(tmp_path):
    (tmp_path / "in" / "2024").mkdir(parents=True)
    write_sample_warc(tmp_path / "in" / "2024" / "a.warc.gz")
    write_sample_warc(tmp_path / "in" / "b.warc", gzip=False)
    kept, removed = _run(tmp_path, [_warc_input(tmp_path / "in", format="warc")])
    ids = [row["id"] for row in kept + removed]
    assert len(ids) == len(set(ids)) == 2 * len(write_sample_warc(tmp_path / "x.warc"))
    en = next(row for row in kept
              if row["meta"]["url"].endswith("/tide-pools") and row["meta"]["_ingest"]["file"] == "2024/a.warc.gz")
    meta = en["meta"]
    assert en["id"] == "crawl/2024/a.warc.gz#" + meta["record_id"].strip("<>")
    assert meta["record_id"].startswith("<urn:uuid:")
    assert (en["source"], en["category"]) == ("crawl", "web")
    assert meta["domain"] == "coastal-notes.example" and meta["date"] == "2024-05-01T12:00:00Z"
    assert meta["content_language"] == "eng" and meta["http_content_language"] == "en"
    assert meta["http_status"] == 200 and meta["charset"] == "utf-8" and meta["method"]
    assert meta["_ingest"]["file"] == "2024/a.warc.gz" and meta["_ingest"]["offset"] > 0
    assert EN_LINE in en["text"] and "Accept all" not in en["text"] and "Privacy policy" not in en["text"]
    request = next(row for row in removed if row["reason"] == "skipped_request")
    assert request["id"].startswith("crawl/") and "#urn:uuid:" in request["id"]
    assert request["meta"]["record_type"] == "request" and request["meta"]["url"]
    not_found = next(row for row in removed if row["reason"] == "http_status")
    assert not_found["meta"]["http_status"] == 404 and "404 Not Found" in not_found["text"]


def test_gbk_and_gb2312_pages_come_out_as_utf8(tmp_path):
    path = tmp_path / "zh.warc.gz"
    write_sample_warc(path)
    kept, _ = _run(tmp_path, [_warc_input(path)])
    chinese = [row for row in kept if row["meta"]["domain"] == "shanjian.example.cn"]
    # declared in the HTTP header (GBK), in a <meta> tag only (gb2312), and not at all
    assert [row["meta"]["url"][-6:] for row in chinese] == ["1.html", "2.html", "3.html"]
    for row in chinese:  # read back from the Parquet shard (UTF-8): the real text, no mojibake
        assert row["meta"]["charset"] == "gb18030" and ZH_LINE in row["text"] and "\ufffd" not in row["text"]
        assert row["meta"]["content_language"] == "zho"


def test_a_bracketed_warc_1_0_target_uri_is_unbracketed(tmp_path):
    """WARC/1.0's grammar puts the target URI in <...> (Dolma's files do): url and domain are the bare URL's."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / "old.warc.gz"
    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=True, warc_version="1.0")
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
        writer.write_record(writer.create_warc_record("<https://www.tide-notes.example/pools>", "response",
                                                      payload=io.BytesIO(ARTICLE_EN.encode()), http_headers=http))
    assert b"WARC-Target-URI: <https://www.tide-notes.example/pools>" in gzip.decompress(path.read_bytes())
    (tmp_path / "domains.txt").write_text("tide-notes.example\n")
    kept, removed = _run(tmp_path, [_warc_input(path)])
    assert removed == [] and kept[0]["meta"]["url"] == "https://www.tide-notes.example/pools"
    assert kept[0]["meta"]["domain"] == "tide-notes.example"
    # and the URL lists match it
    lists = {"block_domains": [str(tmp_path / "domains.txt")]}
    kept, removed = _run(tmp_path / "blocked", [_warc_input(path, url_filter=lists)])
    assert kept == [] and [r["reason"] for r in removed] == ["url_blocked"]


# ---- damaged files --------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_warc_keeps_the_records_before_the_cut(tmp_path, compressed):
    whole = tmp_path / "whole.warc"
    expected = write_sample_warc(whole, gzip=compressed, with_metadata=False, with_revisit=False)
    data = whole.read_bytes()
    cut = tmp_path / "in" / ("cut.warc.gz" if compressed else "cut.warc")
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) - 60])  # inside the last record, the PDF response
    kept, removed = _run(tmp_path, [_warc_input(cut)])
    reasons = _in_file_order(kept, removed)
    assert reasons[: len(expected) - 1] == expected[:-1] and len(kept) == 4
    damaged = [row for row in removed if row["reason"] == "truncated_record"]
    assert damaged and set(reasons[len(expected) - 1:]) == {"truncated_record"}
    for row in damaged:
        assert row["meta"]["_ingest"]["file"] == cut.name
        assert row["meta"]["error"].startswith(f"{cut.name}: ") and "byte" in row["meta"]["error"]
    if compressed:  # the stream ends inside a gzip member: one more row stands for the unreadable rest
        rest = damaged[-1]["meta"]
        assert "unreadable from byte" in rest["error"] and "truncated gzip" in rest["error"]
        assert rest["compressed_offset"] is not None
    totals = _stage_json(tmp_path, "_manifest.json")["totals"]
    assert totals["input_rows"] == totals["kept_rows"] + totals["removed_rows"] == len(reasons)


def test_corrupt_warc_keeps_what_decodes_and_names_file_and_offset(tmp_path):
    path = tmp_path / "whole.warc.gz"
    expected = write_sample_warc(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 200] = b"\x00" * 200
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(bytes(data))
    kept, removed = _run(tmp_path, [_warc_input(bad)])
    reasons = _in_file_order(kept, removed)
    good = reasons[: reasons.index("truncated_record")]
    assert good == expected[: len(good)] and len(good) >= 3 and kept
    last = max(removed, key=lambda r: r["meta"]["_ingest"]["offset"])
    assert last["reason"] == "truncated_record" and last["meta"]["record_type"] == "unreadable_rest"
    assert last["meta"]["error"].startswith("bad.warc.gz: unreadable from byte ")
    assert "corrupt gzip data" in last["meta"]["error"] and "compressed byte" in last["meta"]["error"]


def test_bad_input_stops_a_fail_run_but_non_pages_do_not(tmp_path):
    path = tmp_path / "clean.warc.gz"
    write_sample_warc(path)
    # requests, a 404, a PDF, a page of menus are not bad input: they are removed, the run goes on
    kept, removed = _run(tmp_path, [_warc_input(path)], on_bad_input="fail")
    assert len(kept) == 4 and removed
    garbage = tmp_path / "garbage.warc.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    config = parse_config(_config(tmp_path / "g", [_warc_input(garbage)], on_bad_input="fail"))
    message = r"garbage.warc.gz:offset 0: .*\(truncated_record\): garbage.warc.gz: unreadable"
    with pytest.raises(TaskFailed, match=message):
        run_pipeline(config, use_ray=False, log=lambda _: None)


def test_empty_and_garbage_warc_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "in" / "garbage.warc.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    kept, removed = _run(tmp_path, [_warc_input(tmp_path / "in")])
    assert kept == [] and [(r["reason"], r["meta"]["_ingest"]["file"]) for r in removed] == [
        ("truncated_record", "garbage.warc.gz")]


# ---- WET, HTML files, html_field -----------------------------------------------------------------

def test_wet_conversion_records(tmp_path):
    path = tmp_path / "crawl.warc.wet.gz"
    expected = write_sample_wet(path)
    kept, removed = _run(tmp_path, [_warc_input(path)])  # auto: .warc.wet.gz is the wet reader's
    assert _in_file_order(kept, removed) == expected
    zh = next(row for row in kept if row["meta"]["content_language"] == "zho")
    assert zh["text"].startswith("山间小站的四季") and zh["meta"]["method"] == "wet"
    assert zh["id"] == "crawl/crawl.warc.wet.gz#" + zh["meta"]["record_id"].strip("<>")


def test_html_files_from_a_directory(tmp_path):
    pages = tmp_path / "pages"
    (pages / "zh").mkdir(parents=True)
    (pages / "tide-pools.html").write_text(ARTICLE_EN, encoding="utf-8")
    (pages / "zh" / "station.htm").write_bytes(ARTICLE_ZH.format(meta=GB2312_META).encode("gbk"))
    (pages / "cjk-only.html").write_bytes(CJK_ONLY.encode("utf-8"))
    (pages / "menu.html.gz").write_bytes(gzip.compress(BOILERPLATE_ONLY.encode("utf-8"), mtime=0))
    (pages / "empty.html").write_bytes(b"")
    (pages / "notes.txt").write_text("not a page")  # not listed: the html reader does not take .txt
    kept, removed = _run(tmp_path, [{"name": "site", "path": str(pages), "category": "web", "format": "html"}])
    by_id = {row["id"]: row for row in kept}
    assert sorted(by_id) == ["site/cjk-only.html", "site/tide-pools.html", "site/zh/station.htm"]
    tide_pools = by_id["site/tide-pools.html"]["text"]
    assert EN_LINE in tide_pools and "Accept all" not in tide_pools
    station = by_id["site/zh/station.htm"]
    assert ZH_LINE in station["text"] and station["meta"]["charset"] == "gb18030"
    assert station["meta"]["_ingest"] == {"file": "zh/station.htm"} and station["meta"]["method"]
    cjk = by_id["site/cjk-only.html"]["text"]
    assert "只有中文的页面" in cjk and "第二段也是中文" in cjk
    assert sorted((r["id"], r["reason"]) for r in removed) == [("site/empty.html", "no_text"),
                                                                ("site/menu.html.gz", "no_text")]
    assert _stage_json(tmp_path, "_stats.json")["ingest"]["web"]["removed"] == {"no_text": 2}


def test_html_field_in_jsonl_and_parquet(tmp_path):
    records = [
        {"id": "p1", "url": "https://coastal-notes.example/2024/tide-pools", "html": ARTICLE_EN, "lang": "en"},
        {"id": "p2", "url": "https://shop.example/menu", "html": BOILERPLATE_ONLY},
        {"id": "p3", "url": "https://shop.example/none"},
        {"id": "p4", "html": CJK_ONLY},
    ]
    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    gbk = ARTICLE_ZH.format(meta=GB2312_META).encode("gbk")
    pq.write_table(pa.table({"key": ["z1"], "body": pa.array([gbk], pa.binary())}), tmp_path / "pages.parquet")
    kept, removed = _run(tmp_path, [
        {"name": "dump", "path": str(tmp_path / "pages.jsonl"), "category": "web", "id_field": "id",
         "html_field": "html"},
        {"name": "table", "path": str(tmp_path / "pages.parquet"), "category": "web", "id_field": "key",
         "html_field": "body", "extractor": "trafilatura"}])
    by_id = {row["id"]: row for row in kept}
    assert sorted(by_id) == ["dump/p1", "dump/p4", "table/z1"]
    p1 = by_id["dump/p1"]
    assert EN_LINE in p1["text"] and "Accept all" not in p1["text"]
    assert "html" not in p1["meta"] and p1["meta"]["url"].endswith("tide-pools") and p1["meta"]["lang"] == "en"
    assert p1["meta"]["_ingest"] == {"file": "pages.jsonl", "line": 1} and p1["meta"]["method"]
    assert "只有中文的页面" in by_id["dump/p4"]["text"]
    z1 = by_id["table/z1"]
    assert ZH_LINE in z1["text"] and z1["meta"]["charset"] == "gb18030" and z1["meta"]["method"] == "trafilatura"
    assert sorted((r["id"], r["reason"]) for r in removed) == [("dump/p2", "no_text"), ("dump/p3", "missing_text")]
    assert json.loads(next(r for r in removed if r["id"] == "dump/p2")["text"])["html"] == BOILERPLATE_ONLY  # as read


# ---- URL lists ------------------------------------------------------------------------------------

def test_url_block_and_allow_lists(tmp_path):
    (tmp_path / "domains.txt").write_text("# blocked domains\nshanjian.example.cn\n")
    (tmp_path / "urls.txt").write_text("coastal-notes.example/2024/\n")
    (tmp_path / "allow.txt").write_text("news.shanjian.example.cn\n")
    zh = ARTICLE_ZH.format(meta="").encode("gbk")
    pages = [Page("https://coastal-notes.example/2024/tide-pools", ARTICLE_EN.encode(), lang="en"),
             Page("http://shanjian.example.cn/a/1.html", zh, "text/html; charset=GBK", lang="zh"),
             Page("http://news.shanjian.example.cn/a/2.html", zh, "text/html; charset=GBK", lang="zh"),
             Page("https://harbour-street.example/food/bakery-at-four", ARTICLE_EN_2.encode())]
    write_sample_warc(tmp_path / "crawl.warc.gz", pages=pages)
    (tmp_path / "dump.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"url": "http://www.shanjian.example.cn/b", "text": "a page on a blocked domain"},
        {"url": "https://harbour-street.example/c", "text": "a page on no list"},
        {"text": "no url at all"}]))
    lists = {"block_domains": [str(tmp_path / "domains.txt")], "block_urls": [str(tmp_path / "urls.txt")],
             "allow_domains": [str(tmp_path / "allow.txt")]}
    kept, removed = _run(tmp_path, [_warc_input(tmp_path / "crawl.warc.gz", url_filter=lists),
                                    {"name": "dump", "path": str(tmp_path / "dump.jsonl"), "category": "web",
                                     "url_filter": lists}])
    assert sorted(row["meta"].get("url", row["text"]) for row in kept) == [
        "http://news.shanjian.example.cn/a/2.html", "https://harbour-street.example/c",
        "https://harbour-street.example/food/bakery-at-four", "no url at all"]
    blocked = sorted((r["meta"]["url"], r["meta"]["url_rule"], r["meta"]["url_list"]) for r in removed
                     if r["reason"] == "url_blocked")
    assert blocked == [("http://shanjian.example.cn/a/1.html", "shanjian.example.cn", "block_domain"),
                       ("http://www.shanjian.example.cn/b", "shanjian.example.cn", "block_domain"),
                       ("https://coastal-notes.example/2024/tide-pools", "coastal-notes.example/2024/", "block_url")]
    # the lists' content is part of ingest's hash: an edited list reruns ingest
    config = parse_config(_config(tmp_path, [_warc_input(tmp_path / "crawl.warc.gz", url_filter=lists)]))
    before = plan_stages(config)[0].hash
    (tmp_path / "domains.txt").write_text("shanjian.example.cn\nharbour-street.example\n")
    assert plan_stages(config)[0].hash != before


def test_the_sample_crawl_file_is_the_fixture_and_its_block_list_applies(tmp_path):
    from conftest import REPO

    sample = REPO / "sample_data" / "web" / "crawl.warc.gz"
    write_sample_warc(tmp_path / sample.name, pages=corpus_pages())
    assert (tmp_path / sample.name).read_bytes() == sample.read_bytes()  # byte-identical rebuild
    lists = {"block_domains": [str(REPO / "sample_data" / "web" / "blocked_domains.txt")]}
    kept, removed = _run(tmp_path, [_warc_input(sample, url_filter=lists)])
    assert _in_file_order(kept, removed) == write_sample_warc(tmp_path / "again.warc.gz", pages=corpus_pages())


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ({"format": "warc", "html_field": "html"}, "inputs.0.html_field: not read by the warc reader"),
    ({"format": "wet", "extractor": "resiliparse"}, "inputs.0.extractor: not read by the wet reader"),
    ({"format": "html", "id_field": "id"}, "inputs.0.id_field: not read by the html reader"),
    ({"format": "txt", "url_filter": {}}, "inputs.0.url_filter: not read by the txt reader"),
    ({"format": "jsonl", "extractor": "resiliparse"},
     "inputs.0.extractor: the jsonl reader extracts only an html_field"),
    ({"format": "warc", "extractor": "fast"}, "inputs.0.extractor: Input should be 'auto', 'trafilatura'"),
    ({"format": "warc", "url_filter": {"block_domain": ["x"]}}, "inputs.0.url_filter.block_domain: unknown key"),
    ({"format": "warc", "url_filter": {"block_domains": "x"}}, "inputs.0.url_filter.block_domains: Input should be"),
])
def test_web_config_errors_name_the_key(tmp_path, source, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_config(_config(tmp_path, [{"name": "w", "path": "x", "category": "web", **source}]))


def test_an_option_the_auto_detected_reader_does_not_read_is_an_error(tmp_path):
    write_sample_warc(tmp_path / "a.warc.gz")
    config = parse_config(_config(tmp_path, [_warc_input(tmp_path, html_field="html")]))
    with pytest.raises(PipelineError, match=r"input 'crawl', a.warc.gz: html_field: not read by the warc reader"):
        run_pipeline(config, use_ray=False, log=lambda _: None)


def test_a_missing_url_list_is_a_clear_error(tmp_path):
    write_sample_warc(tmp_path / "a.warc.gz")
    lists = {"block_urls": [str(tmp_path / "absent.txt")]}
    config = parse_config(_config(tmp_path, [_warc_input(tmp_path / "a.warc.gz", url_filter=lists)]))
    with pytest.raises(InputError, match=r"input 'crawl': url_filter.block_urls: .*absent.txt does not exist"):
        run_pipeline(config, use_ray=False, log=lambda _: None)


def test_extractor_choices_are_the_extraction_methods():
    from typing import get_args

    from pipeline.config import InputSource
    from stages.web.html import METHODS

    assert set(get_args(InputSource.model_fields["extractor"].annotation)) == set(METHODS)


@pytest.mark.parametrize("stages", [{}, None])
def test_a_config_without_stages_runs_ingest_alone(tmp_path, stages):
    path = tmp_path / "crawl.warc.gz"
    write_sample_warc(path)
    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": stages, "inputs": [_warc_input(path)]})
    results = run_pipeline(config, use_ray=False, log=lambda _: None)
    assert [r.spec.name for r in results] == ["ingest"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir() if p.is_dir()) == ["01_ingest"]


# ---- the shared dev WARC files -------------------------------------------------------------------

def test_dev_crawl_files_through_ingest(shared_data, tmp_path):
    """Real Common Crawl, Dolma and resiliparse excerpts: every record kept or removed with a reason,
    per file as the library's own reader counts them; the .wat file is no reader's and not listed."""
    from stages.web import iter_warc_records, iter_wet_records

    directory = shared_data / "warc-dev"
    kept, removed = _run(tmp_path, [_warc_input(directory)])
    per_file = collections.Counter(row["meta"]["_ingest"]["file"] for row in kept + removed)
    expected = {}
    for path in sorted(directory.glob("*.gz")):
        if ".wat." in path.name:
            continue
        reader = iter_wet_records(path) if ".wet." in path.name else iter_warc_records(path)
        expected[path.name] = sum(1 for _ in reader)
    assert per_file == expected
    assert all(row["reason"] in REASONS for row in removed)
    web = _stage_json(tmp_path, "_stats.json")["ingest"]["web"]
    assert web["records"] == sum(expected.values()) == len(kept) + len(removed)
    assert web["documents"] == len(kept) > 40
    # WARC/1.0 files (Dolma's) bracket the target URI: the url is the bare URL, so the domain is known
    assert all(row["meta"]["domain"] and not row["meta"]["url"].startswith("<") for row in kept)
