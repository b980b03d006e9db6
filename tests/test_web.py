"""stages.web: WARC/WET reading, charset resolution, main-content extraction, URL lists.

Fixtures are hand-written pages written as WARC files with warcio in a tmp dir
(stages/web/fixtures.py); tests on ../shared/data skip where it is absent.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from stages.web import UrlFilter, decode_html, extract, iter_warc_records, iter_wet_records
from stages.web.fixtures import ARTICLE_EN, ARTICLE_ZH, BOILERPLATE_ONLY, sample_pages, write_sample_warc, write_sample_wet
from stages.web.warc import REASONS, WebDocument, WebRemoval

ZH_LINE = "小站坐落在两座山之间，每天只有四趟慢车停靠，站长已经在这里工作了二十多年。"


def _reasons(items):
    return [None if isinstance(i, WebDocument) else i.reason for i in items]


@pytest.mark.parametrize("compressed", [True, False])
def test_every_record_kind_is_accounted_for(tmp_path, compressed):
    path = tmp_path / ("sample.warc.gz" if compressed else "sample.warc")
    expected = write_sample_warc(path, gzip=compressed)
    reader = iter_warc_records(path)
    items = list(reader)
    assert _reasons(items) == expected
    reader.stats.check()
    assert reader.stats.records == len(expected) == reader.stats.documents + sum(reader.stats.removed.values())
    assert set(reader.stats.by_type) == {"warcinfo", "request", "response", "metadata", "revisit"}
    assert all(r in REASONS for r in reader.stats.removed)
    docs = [i for i in items if isinstance(i, WebDocument)]
    assert len(docs) == 4
    en = docs[0]
    assert en.meta["url"] == "https://coastal-notes.example/2024/tide-pools"
    assert en.meta["domain"] == "coastal-notes.example"
    assert en.meta["record_id"].startswith("<urn:uuid:")
    assert en.meta["date"] and en.meta["http_status"] == 200
    assert en.meta["content_language"] == "eng"
    # main content kept with its paragraph structure, boilerplate gone
    assert "purple sea urchins moved north" in en.text
    assert len(en.text.splitlines()) >= 4
    for junk in ("cookies", "Accept all", "About us", "Related stories", "All rights reserved", "Privacy policy"):
        assert junk not in en.text


def test_stream_input_and_wet(tmp_path):
    path = tmp_path / "s.warc.gz"
    expected = write_sample_warc(path)
    with open(path, "rb") as handle:  # a binary stream, not a path
        assert _reasons(iter_warc_records(handle)) == expected
    # a non-seekable stream too
    assert _reasons(iter_warc_records(io.BufferedReader(io.BytesIO(path.read_bytes())))) == expected
    wet = tmp_path / "s.wet.gz"
    expected = write_sample_wet(wet)
    reader = iter_wet_records(wet)
    items = list(reader)
    assert _reasons(items) == expected
    assert items[2].text.startswith("山间小站的四季") and items[2].meta["content_language"] == "zho"
    reader.stats.check()


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_keeps_every_record_before_the_cut(tmp_path, compressed):
    path = tmp_path / "s.warc"
    expected = write_sample_warc(path, gzip=compressed, with_revisit=False, with_metadata=False)
    data = path.read_bytes()
    # cut inside the last record (the PDF response)
    cut = tmp_path / "cut.warc"
    cut.write_bytes(data[: len(data) - 60])
    reader = iter_warc_records(cut)
    items = list(reader)
    reader.stats.check()
    reasons = _reasons(items)
    assert reasons[: len(expected) - 1] == expected[:-1]
    assert "truncated_record" in reasons[len(expected) - 1:]
    assert all(r == "truncated_record" for r in reasons[len(expected) - 1:])
    truncated = [i for i in items if isinstance(i, WebRemoval) and i.reason == "truncated_record"]
    if compressed:
        assert any("truncated gzip" in (i.meta.get("error") or "") for i in truncated)


def test_corrupt_gzip_member_reports_the_rest(tmp_path):
    path = tmp_path / "s.warc.gz"
    expected = write_sample_warc(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 200] = b"\x00" * 200
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(bytes(data))
    reader = iter_warc_records(bad)
    items = list(reader)
    reader.stats.check()
    reasons = _reasons(items)
    assert reasons[-1] == "truncated_record"
    assert items[-1].meta["compressed_offset"] is not None and "gzip" in items[-1].meta["error"]
    good = reasons[:-1]
    while good and good[-1] == "truncated_record":
        good.pop()
    assert good == expected[: len(good)] and len(good) >= 3


def test_empty_and_garbage_files(tmp_path):
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    reader = iter_warc_records(empty)
    assert list(reader) == [] and reader.stats.records == 0
    garbage = tmp_path / "garbage.warc.gz"
    garbage.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    reader = iter_warc_records(garbage)
    items = list(reader)
    assert _reasons(items) == ["truncated_record"]
    reader.stats.check()


@pytest.mark.parametrize("compressed", [True, False])
def test_bytes_that_are_no_warc_record_end_the_file_with_a_removal_not_an_exception(tmp_path, compressed):
    """FastWARC raises OSError where a record should start and none does: a file that is no WARC at
    all, or one with something else after its last record."""
    text = tmp_path / "text.warc"
    text.write_bytes(b"just some text, not a WARC file\n" * 20)
    items = list(iter_warc_records(text))
    assert _reasons(items) == ["truncated_record"] and "not a WARC record" in items[0].meta["error"]
    path = tmp_path / "s.warc"
    expected = write_sample_warc(path, gzip=compressed)
    tail = b"trailing bytes that are no record\r\n" * 20
    (tmp_path / "tail.warc").write_bytes(path.read_bytes() + (gzip.compress(tail) if compressed else tail))
    reader = iter_warc_records(tmp_path / "tail.warc")
    items = list(reader)
    reader.stats.check()
    assert _reasons(items) == expected + ["truncated_record"]
    assert items[-1].meta["record_type"] == "unreadable_rest" and items[-1].meta["offset"] > 0


# ---- charsets ---------------------------------------------------------------------------------------

def test_charset_from_http_header():
    result = extract(ARTICLE_ZH.format(meta="").encode("gbk"), http_charset="GBK")
    assert result.reason is None and result.charset == "gb18030" and ZH_LINE in result.text


def test_charset_from_meta_tag():
    meta = '<meta http-equiv="Content-Type" content="text/html; charset=gb2312">'
    result = extract(ARTICLE_ZH.format(meta=meta).encode("gbk"))
    assert result.charset == "gb18030" and ZH_LINE in result.text
    big5 = ('<html><head><meta charset="big5"></head><body><div><p>' + "小站坐落在兩座山之間，每天只有四趟慢車停靠。" * 4
            + "</p><p>" + "站長已經在這裡工作了二十多年，冬天大雪封山。" * 4 + "</p></div></body></html>")
    result = extract(big5.encode("big5"))
    assert result.charset == "big5hkscs" and "站長已經在這裡工作了二十多年" in result.text
    assert result.reason is None


def test_charset_undeclared_gbk_and_shift_jis_are_detected():
    result = extract(ARTICLE_ZH.format(meta="").encode("gbk"))
    assert result.charset == "gb18030" and ZH_LINE in result.text
    ja = ("<html><body><p>" + "これは日本語のテストページです。山の小さな駅には一日に四本の列車が止まります。" * 3
          + "</p><p>" + "駅長は二十年以上ここで働いています。冬には雪が深く積もります。" * 3 + "</p></body></html>")
    result = extract(ja.encode("shift_jis"))
    assert result.charset == "cp932" and "駅長は二十年以上ここで働いています" in result.text


def test_wrong_declaration_falls_through():
    # declared utf-8, really GBK: the declaration is not believed
    result = extract(ARTICLE_ZH.format(meta="").encode("gbk"), http_charset="utf-8")
    assert result.charset == "gb18030" and ZH_LINE in result.text


def test_undecodable_bytes():
    noise = bytes(range(128, 256)) * 40
    text, charset = decode_html(b"<html><body>" + noise + b"</body></html>", "utf-8")
    # either some single-byte charset reads it, or it is reported, never an exception
    result = extract(b"<html><body>" + noise + b"</body></html>", http_charset="utf-8")
    assert result.reason in (None, "no_text", "charset_undecodable")
    assert (text is None) == (charset is None)


def test_all_boilerplate_page_is_no_text():
    result = extract(BOILERPLATE_ONLY.encode("utf-8"))
    assert result.reason == "no_text" and result.text == ""
    assert extract(b"").reason == "no_text"
    assert extract(b"   \n ").reason == "no_text"


def test_cjk_only_page():
    page = "<html><body><div><p>只有中文的页面。这里没有任何拉丁字母，只有中文句子和标点符号。</p><p>第二段也是中文。</p></div></body></html>"
    result = extract(page.encode("utf-8"))
    assert result.reason is None and "只有中文的页面" in result.text and "第二段也是中文" in result.text


def test_extraction_methods_agree_on_a_simple_article():
    for method in ("auto", "trafilatura", "trafilatura_fast", "resiliparse"):
        result = extract(ARTICLE_EN.encode("utf-8"), method=method)
        assert "purple sea urchins moved north" in result.text, method
    with pytest.raises(ValueError):
        extract(ARTICLE_EN.encode("utf-8"), method="nope")


# ---- URL lists --------------------------------------------------------------------------------------

def test_url_block_and_allow_lists(tmp_path):
    (tmp_path / "domains").write_text("# UT1 style\ncasino.example\n*.ads.example\nwww.spam.example\n\n")
    (tmp_path / "urls").write_text("news.example/sponsored/\nbad-path\n")
    (tmp_path / "allow").write_text("good.casino.example\n")
    flt = UrlFilter.from_files(tmp_path / "domains", tmp_path / "urls", tmp_path / "allow")
    d = flt.decide("https://www.casino.example/play")
    assert not d.allowed and d.rule == "casino.example" and d.list == "block_domain"
    assert not flt.decide("http://a.b.casino.example/").allowed
    assert flt.decide("http://notcasino.example/").allowed  # a suffix, not a parent domain
    assert not flt.decide("http://x.ads.example/").allowed
    assert not flt.decide("http://spam.example/").allowed
    d = flt.decide("https://NEWS.example/Sponsored/story-1")
    assert not d.allowed and d.rule == "news.example/sponsored/" and d.list == "block_url"
    assert flt.decide("https://news.example/world/story-2") == flt.decide("https://news.example/")
    d = flt.decide("https://good.casino.example/page")
    assert d.allowed and d.list == "allow" and d.rule == "good.casino.example"
    assert flt.decide("not a url").allowed


def test_url_filter_in_the_reader(tmp_path):
    path = tmp_path / "s.warc.gz"
    write_sample_warc(path)
    reader = iter_warc_records(path, url_filter=UrlFilter(block_domains=["shanjian.example.cn"]))
    items = list(reader)
    reader.stats.check()
    blocked = [i for i in items if isinstance(i, WebRemoval) and i.reason == "url_blocked"]
    assert len(blocked) == 3 and all(i.meta["url_rule"] == "shanjian.example.cn" for i in blocked)


def test_fixture_pages_are_hand_written():
    pages = sample_pages()
    assert {p.expect for p in pages} == {None, "no_text", "http_status", "not_html"}


# ---- shared dev data --------------------------------------------------------------------------------

def test_dev_warc_files(shared_data):
    directory = shared_data / "warc-dev"
    for path in sorted(directory.glob("*.gz")):
        reader = iter_wet_records(path) if ".wet." in path.name or ".wat." in path.name else iter_warc_records(path)
        items = list(reader)
        reader.stats.check()
        assert reader.stats.records == len(items) > 0
    reader = iter_warc_records(directory / "resiliparse_CC-MAIN-2020-34_excerpt.warc.gz")
    docs = [i for i in reader if isinstance(i, WebDocument)]
    assert reader.stats.by_type["response"] == 16 and reader.stats.by_type["request"] == 17
    chinese = [d for d in docs if d.meta["charset"] == "gb18030"]
    assert len(chinese) >= 4
    # gb2312 pages come out as real Chinese, not mojibake (one of them is an English page)
    han_pages = [d for d in chinese if sum("\u4e00" <= ch <= "\u9fff" for ch in d.text) > 0.2 * len(d.text)]
    assert len(han_pages) >= len(chinese) - 1
    assert all("\ufffd" not in d.text for d in chinese)


def test_aeb_sample_accuracy(shared_data):
    """A quick look at 20 AEB pages: the main text of each is found (the full table: bench_web.py)."""
    import json

    import zstandard

    archive = shared_data / "web-html-dev" / "scrapinghub_aeb.tar.zst"
    with open(archive, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        members = {}
        for member in tar:
            if member.isfile() and (member.name.endswith(".html.gz") or member.name.endswith("ground-truth.json")):
                members[member.name] = tar.extractfile(member).read()
    truth = json.loads(next(v for k, v in members.items() if k.endswith("ground-truth.json")))
    from stages.web.evaluate import aeb_scores

    pages = {Path(k).name.split(".")[0]: gzip.decompress(v) for k, v in sorted(members.items()) if k.endswith(".html.gz")}
    keys = sorted(pages)[:20]
    predictions = {k: extract(pages[k]).text for k in keys}
    f1, precision, recall = aeb_scores({k: truth[k]["articleBody"] for k in keys}, predictions)
    assert f1 > 0.9
