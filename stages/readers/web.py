"""What the web readers share: ``stages.web`` results -> ingest records, URL lists, ``html_field``.

- ``add_web_item(item, records, web_item)``: a ``WebDocument`` becomes a document (``records.add``),
  a ``WebRemoval`` a removed row with its ``stages.web.warc.REASONS`` reason: ``records.reject`` for
  damaged input (``BAD_INPUT``: ``on_bad_input: fail`` stops there), ``records.skip`` for a record
  that is not a document by design (a request record, a 404, a PDF, a page of menus, a blocked
  URL). Its id is ``<source>/<file>#<WARC-Record-ID>`` (the ``<...>`` around the record id dropped),
  file-scoped whatever the input's form, since record ids are unique per file only; its ``meta`` is
  the record's (``url``, ``domain``, ``date``, ``record_id``, ``content_language``,
  ``http_content_language``, ``http_status``, ``charset``, ``method``...) with
  ``_ingest: {file, offset}``; a damaged record's ``error`` names the file and the byte offset.
- ``add_record(item, records, record, where, where_key, number, raw)``: one JSONL/Parquet record,
  removed as ``url_blocked`` when the input's ``url_filter`` blocks its ``url`` field, and, with an
  ``html_field``, given the main text of that field's HTML as its text.
- ``url_filter(source)``: the input's ``UrlFilter``, read once per worker process (UT1 lists hold
  millions of lines); ``url_list_digests(source)``: the lists' sha256, for the stage hash.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable

from pipeline import storage
from pipeline.errors import InputError
from pipeline.readers import InputFile, record_id, record_meta
from stages.web import UrlFilter, WebDocument, WebRemoval, extract
from stages.web.urlfilter import parse_rules

BAD_INPUT = {"truncated_record", "charset_undecodable"}
LISTS = ("block_domains", "block_urls", "allow_domains")


def add_web_item(item: InputFile, records, web_item: WebDocument | WebRemoval) -> None:
    meta: dict[str, Any] = dict(web_item.meta)
    offset = meta.pop("offset", None)
    meta.pop("file", None)  # the reader's name for the stream; `_ingest.file` is the one that helps
    meta["_ingest"] = {"file": item.relative, "offset": offset}
    where = f"offset {offset}"
    warc_id = meta.get("record_id")
    doc_id = f"{item.source.name}/{item.relative}#{warc_id.strip('<>')}" if warc_id else None
    if isinstance(web_item, WebDocument):
        records.add(doc_id, web_item.text, meta, where, web_item.text)
        return
    if web_item.reason == "truncated_record":
        meta["error"] = _damage(item, meta, offset)
    remove = records.reject if web_item.reason in BAD_INPUT else records.skip
    remove(web_item.reason, web_item.raw.decode("utf-8", "replace"), meta, where, doc_id)


def _damage(item: InputFile, meta: dict, offset: int | None) -> str:
    if meta.get("record_type") == "unreadable_rest":
        compressed = meta.get("compressed_offset")
        member = f" (the gzip member at compressed byte {compressed})" if compressed is not None else ""
        return f"{item.relative}: unreadable from byte {offset} of the decompressed data{member}: {meta.get('error')}"
    return f"{item.relative}: the record at byte {offset} is cut short or undecodable: {meta.get('error')}"


def add_record(item: InputFile, records, record: dict, where: str, where_key: str, number: int,
               raw: str | Callable[[], str]) -> None:
    """One JSONL/Parquet record, through the input's URL lists and HTML extraction when it has them
    (``raw``: the record as read, or a function that gives it, for its removed row)."""
    source = item.source
    doc_id, meta = record_id(item, record, where), record_meta(item, record, where_key, number)
    flt = url_filter(source)
    url = record.get("url")
    if flt is not None and isinstance(url, str):
        decision = flt.decide(url)
        if not decision.allowed:
            meta.update(url_rule=decision.rule, url_list=decision.list)
            records.skip("url_blocked", raw, meta, where, doc_id)
            return
    if source.html_field is None:
        records.add(doc_id, record.get(source.text_field), meta, where, raw)
        return
    html = record.get(source.html_field)
    if not isinstance(html, (str, bytes)):  # missing or not text: the source stage names the problem
        records.add(doc_id, html, meta, where, raw)
        return
    result = extract(html, url=url if isinstance(url, str) else None, method=source.extractor)
    meta.update(charset=result.charset, method=result.method)
    if result.reason is None:
        records.add(doc_id, result.text, meta, where, raw)
    else:
        (records.reject if result.reason in BAD_INPUT else records.skip)(result.reason, raw, meta, where, doc_id)


def url_filter(source: Any) -> UrlFilter | None:
    """The input's ``UrlFilter`` (None without ``url_filter``); built once per process and config."""
    return None if source.url_filter is None else _build(source.name, source.url_filter)


@lru_cache(maxsize=8)
def _build(name: str, lists: Any) -> UrlFilter:
    rules = {key: [rule for path in getattr(lists, key) for rule in _rules(name, key, path)] for key in LISTS}
    return UrlFilter(**rules)


def _rules(name: str, key: str, path: str) -> list[str]:
    fs, resolved = storage.resolve(path)
    try:
        with fs.open_input_stream(resolved) as stream:
            return parse_rules(stream.read().decode("utf-8", "replace").splitlines())
    except FileNotFoundError:
        raise InputError(f"input {name!r}: url_filter.{key}: {path} does not exist") from None


def url_list_digests(source: Any) -> dict[str, str]:
    """sha256 of every URL list file of the input (a list edited in place reruns ingest)."""
    digests = {}
    for key in LISTS:
        for path in getattr(source.url_filter, key):
            fs, resolved = storage.resolve(path)
            if not storage.exists(fs, resolved):
                raise InputError(f"input {source.name!r}: url_filter.{key}: {path} does not exist")
            digests[path] = storage.sha256(fs, resolved)
    return digests
