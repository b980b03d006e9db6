"""A small WARC built from hand-written pages (none copied from a crawl), for tests and sample data.

``write_sample_warc(path)`` writes one record of every kind the reader handles: warcinfo, a
request/response/metadata triple for an English article with navigation, cookie banner and footer,
a GBK Chinese page declared in the HTTP header, one declared only in a ``<meta>`` tag, one not
declared at all, a page of boilerplate only, a 404, a PDF, and a revisit. ``gzip=True`` writes
one gzip member per record (``.warc.gz``), as crawlers do. ``corpus_pages()`` adds an English and a
UTF-8 Chinese article and a spam page on a domain of the sample's block list: the pages of
``sample_data/web/crawl.warc.gz`` (``sample_data/build.py``).

The files are byte-identical on every run (record ids derived from the file name and a counter,
one fixed WARC-Date, gzip headers without a time), so the sample's outputs can be checksummed.
"""
from __future__ import annotations

import io
import os
import uuid
from typing import NamedTuple

ARTICLE_EN = """<!DOCTYPE html><html><head><title>Tide pools of the northern coast</title></head><body>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience. <button>Accept all</button></div>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/about">About us</a></li>
<li><a href="/contact">Contact</a></li></ul></nav></header>
<main><article><h1>Tide pools of the northern coast</h1>
<p>At low tide the flat rocks below the lighthouse turn into a chain of small pools, each one a world of its own with anemones, limpets and the occasional startled crab.</p>
<p>Volunteers from the field station count the animals in twelve marked pools every month, a survey that has now run for nine years without a break.</p>
<p>Their notebooks show that the purple sea urchins moved north by almost two kilometres over that time, which the station links to warmer winter water.</p>
<p>Visitors are welcome on the rocks, but the station asks them to put every stone back the way they found it, because the underside is where most of the life is.</p>
</article></main>
<aside class="related"><h3>Related stories</h3><ul><li><a href="/a">Ten beaches to visit</a></li><li><a href="/b">Lighthouse open day</a></li></ul></aside>
<footer><p>Copyright 2024 Coastal Notes. All rights reserved.</p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></footer>
</body></html>"""

ARTICLE_ZH = """<html><head>{meta}<title>山间小站的四季</title></head><body>
<div class="nav"><a href="/">首页</a> | <a href="/news">新闻</a> | <a href="/about">关于我们</a></div>
<div class="content"><h1>山间小站的四季</h1>
<p>小站坐落在两座山之间，每天只有四趟慢车停靠，站长已经在这里工作了二十多年。</p>
<p>春天的时候，站台边的桃花开得正盛，附近村子的孩子们常常跑来看火车进站。</p>
<p>到了冬天，大雪封山，慢车成了村民们进城买年货的唯一交通工具，车厢里总是挤满了人。</p>
<p>站长说，他最大的心愿是等到退休那天，亲手把信号灯交给下一位年轻的站长。</p>
</div><div class="footer">版权所有 2024 山间日报</div></body></html>"""

BOILERPLATE_ONLY = """<html><head><title>Menu</title></head><body>
<nav><a href="/">Home</a> <a href="/shop">Shop</a> <a href="/cart">Cart</a> <a href="/login">Log in</a></nav>
<div class="cookie-banner">This site uses cookies. <a href="/cookies">Learn more</a> <button>OK</button></div>
<footer><a href="/privacy">Privacy</a> <a href="/terms">Terms</a> &copy; 2024</footer></body></html>"""

ARTICLE_EN_2 = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>The bakery that opens at four</title></head>
<body><header><a href="/">Harbour Street Journal</a> <a href="/food">Food</a> <a href="/people">People</a> <a href="/subscribe">Subscribe</a></header>
<div class="story"><h1>The bakery that opens at four</h1>
<p>Long before the first ferry leaves, the windows of the small bakery on Harbour Street are already fogged with steam, and a line of fishermen waits by the door.</p>
<p>The owner learned to bake from her grandfather, who kept the same brick oven going through two floods and a fire that took half of the street in the winter of 1962.</p>
<p>She still shapes every loaf by hand, and she refuses to sell bread that is more than a day old; whatever is left at closing time goes to the shelter behind the church.</p>
<p>Asked why she keeps such hours, she laughs and says that the town wakes up early, and somebody has to be awake before it.</p>
</div>
<div class="share">Share this story: <a href="#">Facebook</a> <a href="#">Email</a></div>
<footer>Harbour Street Journal &middot; <a href="/privacy">Privacy</a> &middot; <a href="/advertise">Advertise with us</a></footer>
</body></html>"""

ARTICLE_ZH_UTF8 = """<html><head><meta charset="utf-8"><title>巷口的旧书店</title></head><body>
<div class="menu"><a href="/">首页</a> <a href="/city">城市</a> <a href="/culture">文化</a> <a href="/login">登录</a></div>
<div class="article"><h1>巷口的旧书店</h1>
<p>老城区的巷口有一家开了三十年的旧书店，门面不大，书架却一直顶到天花板，空气里总有一股纸张和樟木混在一起的味道。</p>
<p>店主每天早上七点开门，先把门口那一排特价书摆好，再泡一壶茶，坐在柜台后面修补那些封皮脱落的旧书。</p>
<p>常来的客人大多是附近的退休教师和大学生，他们有时一坐就是一个下午，店主从来不催，只在傍晚提醒大家记得关灯。</p>
<p>有人问他为什么不把书店搬到租金更便宜的地方，他说这条巷子里的人认得这家店，搬走了，书就找不到读它们的人了。</p>
</div><div class="footer">本站所有文章版权归原作者所有 联系我们</div></body></html>"""

SPAM = """<html><head><title>Lucky Casino bonus</title></head><body><div><p>Claim your welcome bonus today and spin
the wheel for free: every new player at Lucky Casino gets two hundred free spins and a guaranteed jackpot chance.</p>
<p>Sign up in thirty seconds, deposit with any card and double your money instantly, no questions asked.</p></div></body></html>"""

NOT_FOUND = "<html><body><h1>404 Not Found</h1><p>The page you asked for is not here.</p></body></html>"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


class Page(NamedTuple):
    url: str
    body: bytes
    content_type: str = "text/html"
    status: str = "200 OK"
    expect: str | None = None  # the reason the reader should give, None for a document
    lang: str = "en"  # the text's language (WARC-Identified-Content-Language: eng, zho)
    http_language: str | None = None  # an HTTP Content-Language header, when the site sends one


def sample_pages() -> list[Page]:
    meta_tag = '<meta http-equiv="Content-Type" content="text/html; charset=gb2312">'
    return [
        Page("https://coastal-notes.example/2024/tide-pools", ARTICLE_EN.encode("utf-8"), "text/html; charset=utf-8",
             http_language="en"),
        Page("http://shanjian.example.cn/a/1.html", ARTICLE_ZH.format(meta="").encode("gbk"), "text/html; charset=GBK",
             lang="zh"),
        Page("http://shanjian.example.cn/a/2.html", ARTICLE_ZH.format(meta=meta_tag).encode("gbk"), "text/html",
             lang="zh"),
        Page("http://shanjian.example.cn/a/3.html", ARTICLE_ZH.format(meta="").encode("gbk"), "text/html", lang="zh"),
        Page("https://shop.example/menu", BOILERPLATE_ONLY.encode("utf-8"), "text/html", expect="no_text"),
        Page("https://coastal-notes.example/missing", NOT_FOUND.encode("utf-8"), "text/html", "404 Not Found",
             expect="http_status"),
        Page("https://coastal-notes.example/report.pdf", PDF, "application/pdf", expect="not_html"),
    ]


BLOCKED_DOMAIN = "lucky-casino.example"  # on the sample's block list (sample_data/web/blocked_domains.txt)


def corpus_pages() -> list[Page]:
    """The pages of the sample corpus's WARC: ``sample_pages()`` plus two more articles and a spam
    page whose domain the sample's block list names (``expect`` as read with that list)."""
    return [
        *sample_pages(),
        Page("https://harbour-street.example/food/bakery-at-four", ARTICLE_EN_2.encode("utf-8"), "text/html"),
        Page("https://xiangkou.example.cn/culture/old-bookshop", ARTICLE_ZH_UTF8.encode("utf-8"),
             "text/html; charset=utf-8", lang="zh", http_language="zh-CN"),
        Page(f"https://www.{BLOCKED_DOMAIN}/bonus", SPAM.encode("utf-8"), "text/html", expect="url_blocked"),
    ]


DATE = "2024-05-01T12:00:00Z"
LANGUAGES = {"en": "eng", "zh": "zho"}


def _writer(handle, path: str | os.PathLike, gzip: bool):
    """A warcio writer whose record ids and dates are a function of the file name, not of the clock."""
    from warcio.warcwriter import WARCWriter

    name = os.path.basename(os.fspath(path))

    class Deterministic(WARCWriter):
        count = 0

        def _make_warc_id(self, id_=None):
            self.count += 1
            return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{name}#{self.count}')}>"

        def curr_warc_date(self):
            return DATE

    return Deterministic(handle, gzip=gzip)


def write_sample_warc(path: str | os.PathLike, pages: list[Page] | None = None, gzip: bool = True,
                      with_request: bool = True, with_metadata: bool = True, with_revisit: bool = True) -> list[str | None]:
    """Write the pages as a WARC; return the reason expected for each record, in file order
    (None: a document)."""
    from warcio.statusandheaders import StatusAndHeaders

    expected: list[str | None] = []
    with open(path, "wb") as handle:
        writer = _writer(handle, path, gzip)
        info = writer.create_warcinfo_record(os.path.basename(os.fspath(path)),
                                             {"software": "corpus-pipeline stages.web.fixtures", "format": "WARC/1.1"})
        writer.write_record(info)
        expected.append("skipped_warcinfo")
        for page in pages or sample_pages():
            if with_request:
                request = StatusAndHeaders(f"GET {page.url.split('/', 3)[-1]} HTTP/1.1", [("Host", page.url.split('/')[2])],
                                           is_http_request=True)
                writer.write_record(writer.create_warc_record(page.url, "request", http_headers=request))
                expected.append("skipped_request")
            headers = [("Content-Type", page.content_type), ("Content-Length", str(len(page.body)))]
            if page.http_language:
                headers.append(("Content-Language", page.http_language))
            http = StatusAndHeaders(page.status, headers, protocol="HTTP/1.1")
            response = writer.create_warc_record(page.url, "response", payload=io.BytesIO(page.body), http_headers=http)
            response.rec_headers.add_header("WARC-Identified-Content-Language", LANGUAGES[page.lang])
            writer.write_record(response)
            expected.append(page.expect)
            if with_metadata:
                meta = writer.create_warc_record(page.url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 120\r\n"),
                                                 warc_content_type="application/warc-fields")
                writer.write_record(meta)
                expected.append("skipped_metadata")
        if with_revisit:
            first = (pages or sample_pages())[0]
            revisit = writer.create_revisit_record(first.url, digest="sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                   refers_to_uri=first.url, refers_to_date="2024-01-01T00:00:00Z")
            writer.write_record(revisit)
            expected.append("skipped_revisit")
    return expected


def write_sample_wet(path: str | os.PathLike, texts: list[tuple[str, str]] | None = None, gzip: bool = True) -> list[str | None]:
    """A WET file: warcinfo plus one conversion record per (url, text); an empty text is ``no_text``."""
    texts = texts if texts is not None else [
        ("https://coastal-notes.example/2024/tide-pools", "Tide pools of the northern coast\nAt low tide the flat rocks turn into pools."),
        ("http://shanjian.example.cn/a/1.html", "山间小站的四季\n小站坐落在两座山之间。"),
        ("https://shop.example/empty", ""),
    ]
    expected: list[str | None] = ["skipped_warcinfo"]
    with open(path, "wb") as handle:
        writer = _writer(handle, path, gzip)
        writer.write_record(writer.create_warcinfo_record(os.path.basename(os.fspath(path)), {"format": "WET"}))
        for url, text in texts:
            record = writer.create_warc_record(url, "conversion", payload=io.BytesIO(text.encode("utf-8")),
                                               warc_content_type="text/plain")
            record.rec_headers.add_header("WARC-Identified-Content-Language", "zho" if ".cn/" in url else "eng")
            writer.write_record(record)
            expected.append(None if text.strip() else "no_text")
    return expected
