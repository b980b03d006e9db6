"""HTML bytes -> UTF-8 main text: charset resolution, then main-content extraction.

``extract(html_bytes, http_charset=None, url=None)`` returns an ``ExtractResult(text, charset,
reason, method)``; ``reason`` is None for a usable document, else ``charset_undecodable`` or
``no_text``. It never raises on bad input.

Charset, in the order a browser trusts it (WHATWG "encoding sniffing", simplified):

1. a byte-order mark;
2. the HTTP ``Content-Type`` charset (``http_charset``);
3. a ``<meta charset>`` / ``<meta http-equiv=Content-Type content=...charset=>`` in the first 4 KiB;
4. strict UTF-8 (most undeclared pages are UTF-8, and UTF-8 almost never decodes by accident);
5. detection (resiliparse's ``detect_encoding``, uchardet-based, about 0.1 ms a page).

A declared label is only believed when the bytes decode under it without error (many Chinese
pages declare ``gb2312`` and use GBK/GB18030 characters, some declare ``utf-8`` and are GBK), so a
wrong declaration falls through to the next step. Labels are widened to the superset decoders
browsers use (gb2312/gbk -> gb18030, big5 -> big5hkscs, shift_jis -> cp932, euc-kr -> cp949,
latin-1/ascii -> cp1252). When nothing decodes strictly, the best candidate is used with U+FFFD
replacements if they are under 1% of the characters; otherwise the page is ``charset_undecodable``.

Main content ("auto", the default): a fast path that narrows the page to its article container
before trafilatura sees it, with trafilatura on the whole page as the fallback:

- parse once with lxml; score each block's parent (and half to the grandparent) by the text of its
  paragraphs (``p``, ``pre``, ``blockquote``, ``h2``/``h3``, ``td`` of 25+ characters), as
  readability does; take the best container, climbing while it holds under 80% of the page's
  paragraph text;
- run ``trafilatura.extract(fast=True)`` on that subtree only (cost scales with the nodes it sees);
- fall back to ``trafilatura.extract(fast=True)`` on the whole page (whose result is dropped when
  it is short and made only of link/button labels: a menu) when the page has under 1,000
  characters of paragraph text, no container below ``<body>``, or the subtree extraction keeps under
  half of its container's paragraph text (trafilatura judged it boilerplate: a comment list, a
  newsletter box).

On the Article Extraction Benchmark this is more accurate than plain ``trafilatura.extract`` and
about twice as fast (docs/web.md, bench/bench_web.py). Other methods, for comparison and as an
escape hatch: ``trafilatura`` (plain ``trafilatura.extract``), ``trafilatura_fast``
(``fast=True``), ``resiliparse`` (``extract_plain_text(main_content=True)``: 10x faster, less
precise).
"""
from __future__ import annotations

import codecs
import re
from copy import deepcopy
from dataclasses import dataclass
from typing import Callable

import lxml.etree as etree
import lxml.html

REASONS = {
    "charset_undecodable": "the page's bytes do not decode under any declared or detected charset",
    "no_text": "no main text was found in the page (empty, all boilerplate, or not really HTML)",
}

# label -> the superset decoder browsers use for it
_WIDER = {
    "gb2312": "gb18030", "gbk": "gb18030", "gb18030": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030",
    "euc-cn": "gb18030", "hz-gb-2312": "hz",
    "big5": "big5hkscs", "big5-hkscs": "big5hkscs", "cp950": "big5hkscs",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "windows-31j": "cp932",
    "ms_kanji": "cp932",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "windows-949": "cp949",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "utf8": "utf-8", "unicode": "utf-8",
}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.+-]+)""", re.I)
_MAX_REPLACEMENT_SHARE = 0.01


def normalize_charset(label: str | None) -> str | None:
    """A charset label -> a Python codec name (widened to the browser's superset), or None if unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _WIDER.get(label, label)
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    # utf-16/32 declared in a meta tag is always a lie (the tag itself was read as ASCII)
    return _WIDER.get(name, name)


def meta_charset(head: bytes) -> str | None:
    """The charset named by a ``<meta>`` tag in the first bytes of a page, if any."""
    match = _META_CHARSET.search(head[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


def _strict(data: bytes, codec: str | None) -> str | None:
    if codec is None:
        return None
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(data: bytes, http_charset: str | None = None) -> tuple[str | None, str | None]:
    """Bytes of an HTML page -> (text, charset used); (None, None) when no charset fits."""
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            text = _strict(data[len(bom):], codec)
            if text is not None:
                return text, codec
    candidates: list[str] = []
    for label in (http_charset, meta_charset(data)):
        codec = normalize_charset(label)
        if codec and codec not in candidates and not codec.startswith(("utf-16", "utf-32")):
            candidates.append(codec)
    if "utf-8" not in candidates:
        candidates.append("utf-8")
    for codec in candidates:
        text = _strict(data, codec)
        if text is not None:
            return text, codec
    detected = normalize_charset(_detect(data))
    if detected and detected not in candidates:
        text = _strict(data, detected)
        if text is not None:
            return text, detected
        candidates.append(detected)
    # nothing decodes strictly: accept the candidate with the fewest replacements if they are rare
    best: tuple[int, str, str] | None = None
    for codec in candidates:
        text = data.decode(codec, errors="replace")
        bad = text.count("\ufffd")
        if best is None or bad < best[0]:
            best = (bad, text, codec)
    if best is not None and best[0] <= _MAX_REPLACEMENT_SHARE * max(1, len(best[1])):
        return best[1], best[2]
    return None, None


def _detect(data: bytes) -> str | None:
    from resiliparse.parse.encoding import detect_encoding

    try:
        return detect_encoding(data)
    except Exception:  # noqa: BLE001 - a detector failure is "no guess", never a crash
        return None


@dataclass(frozen=True)
class ExtractResult:
    """``text``: the main text (paragraphs one per line), ``charset``: the codec the bytes were read
    with, ``reason``: None when usable else a key of ``REASONS``, ``method``: which extractor made
    the text (``subtree``, ``page``, or the forced method's name)."""

    text: str
    charset: str | None
    reason: str | None
    method: str = ""


# ---- main content ---------------------------------------------------------------------------------

_PARAGRAPH_TAGS = ("p", "pre", "blockquote", "h2", "h3", "td")
_MIN_PARAGRAPH = 25  # characters: shorter blocks (captions, buttons, bylines) do not vote
_CONTAINER_SHARE = 0.8  # the chosen container must hold this share of the page's paragraph text
_MIN_PAGE_PARAGRAPHS = 1000  # characters of paragraph text below which the whole page is extracted
_KEEP_SHARE = 0.5  # subtree extraction must keep this share of its container's paragraph text
_SHORT_RESULT = 300  # characters: a fallback result this short is checked for being only link labels
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True, recover=True, collect_ids=False)
_PARSER.set_element_class_lookup(lxml.html.HtmlElementClassLookup())


def _parse(text: str):
    try:
        return lxml.html.document_fromstring(text, parser=_PARSER)
    except (etree.ParserError, ValueError):
        return None


def _normalized_length(element) -> int:
    return len(" ".join(element.text_content().split()))


def main_container(tree) -> tuple[object | None, int, int]:
    """The element that holds the article (readability-style paragraph scoring), the page's
    paragraph text length, and the container's. None when nothing scores."""
    lengths: dict = {}
    scores: dict = {}
    for block in tree.iter(_PARAGRAPH_TAGS):
        n = _normalized_length(block)
        if n < _MIN_PARAGRAPH:
            continue
        lengths[block] = n
        parent = block.getparent()
        if parent is None:
            continue
        scores[parent] = scores.get(parent, 0) + n
        grandparent = parent.getparent()
        if grandparent is not None:
            scores[grandparent] = scores.get(grandparent, 0) + n / 2
    if not scores:
        return None, 0, 0
    total = sum(lengths.values())
    node = max(scores, key=scores.get)
    while True:
        inside = sum(lengths.get(e, 0) for e in node.iter(_PARAGRAPH_TAGS))
        if inside >= _CONTAINER_SHARE * total or node.getparent() is None or node.tag in ("body", "html"):
            return node, total, inside
        node = node.getparent()


def _trafilatura(tree_or_html, url: str | None, fast: bool) -> str:
    import trafilatura

    return trafilatura.extract(tree_or_html, url=url, include_comments=False, fast=fast) or ""


def _extract_auto(text: str, url: str | None) -> tuple[str, str]:
    tree = _parse(text)
    if tree is None:
        return "", "page"
    node, total, inside = main_container(tree)
    if node is not None and node.tag not in ("body", "html") and total >= _MIN_PAGE_PARAGRAPHS:
        doc = lxml.html.Element("html")
        etree.SubElement(doc, "body").append(deepcopy(node))
        out = _trafilatura(doc, url, fast=True)
        if len(out) >= _KEEP_SHARE * inside:
            return out, "subtree"
    # trafilatura's baseline rescue turns a page of menus into its link texts: a short result made
    # only of link and button labels is boilerplate, not a document
    labels = {" ".join(e.text_content().split()) for e in tree.iter("a", "button", "label", "option")}
    out = _trafilatura(tree, url, fast=True)
    if len(out) < _SHORT_RESULT and all(" ".join(line.split()) in labels for line in out.splitlines() if line.strip()):
        return "", "page"
    return out, "page"


def _extract_resiliparse(text: str, url: str | None) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse(text), main_content=True) or ""


METHODS: dict[str, Callable[[str, str | None], tuple[str, str]]] = {
    "auto": _extract_auto,
    "trafilatura": lambda text, url: (_trafilatura(text, url, fast=False), "trafilatura"),
    "trafilatura_fast": lambda text, url: (_trafilatura(text, url, fast=True), "trafilatura_fast"),
    "resiliparse": lambda text, url: (_extract_resiliparse(text, url), "resiliparse"),
}


def extract_text(html: str, url: str | None = None, method: str = "auto") -> tuple[str, str]:
    """Decoded HTML -> (main text, method that produced it). Never raises on bad HTML."""
    try:
        text, used = METHODS[method](html, url)
    except KeyError:
        raise ValueError(f"unknown extraction method {method!r}; one of {sorted(METHODS)}") from None
    except Exception:  # noqa: BLE001 - a parser failure on one page is that page's "no_text"
        return "", method
    return _clean_lines(text), used


def _clean_lines(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def extract(html_bytes: bytes | str, http_charset: str | None = None, url: str | None = None,
            method: str = "auto") -> ExtractResult:
    """One page's bytes (or already decoded text) -> its main text as UTF-8-clean ``str``."""
    if isinstance(html_bytes, str):
        html, charset = html_bytes, None
    else:
        html, charset = decode_html(bytes(html_bytes), http_charset)
        if html is None:
            return ExtractResult("", None, "charset_undecodable", "")
    html = html.replace("\x00", "")
    if not html.strip():
        return ExtractResult("", charset, "no_text", "")
    text, used = extract_text(html, url, method)
    return ExtractResult(text, charset, None if text else "no_text", used)
