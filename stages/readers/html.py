"""HTML pages (``.html``, ``.htm``, plain or ``.gz``): one file is one document, its id
``<source>/<file path>``, its text the page's main text (``stages.web.html.extract`` with the input's
``extractor``: charset from a BOM, ``<meta>`` or detection; navigation, banners and footers removed).

A page with no main text (all boilerplate, empty) is removed as ``no_text``, one whose bytes decode
under no charset as ``charset_undecodable``; a damaged ``.gz`` as ``corrupt_file``. ``meta``:
``_ingest: {file}``, ``charset``, ``method``.
"""
from __future__ import annotations

from typing import Any, Iterator

from pipeline.readers import InputFile, Reader
from stages.readers.common import reject_rest, too_large, unread_limit, whole_file
from stages.readers.web import BAD_INPUT
from stages.web import extract


def _read_html(item: InputFile, records) -> Iterator[None]:
    data, damage, size = whole_file(item, unread_limit(records.config))
    doc_id = f"{item.source.name}/{item.relative}"
    if size:
        too_large(records, data, size, {"_ingest": {"file": item.relative}}, "file", doc_id)
        yield
        return
    if damage is not None:  # one file is one document: it is the damaged record
        reject_rest(item, records, damage, len(data), data, None)
        yield
        return
    result = extract(data, method=item.source.extractor)
    meta: dict[str, Any] = {"_ingest": {"file": item.relative}, "charset": result.charset, "method": result.method}
    records.stats.add("web", "records", 1)
    if result.reason is None:
        records.stats.add("web", "by_method", result.method, 1)
        records.add(doc_id, result.text, meta, "file", result.text)
    else:
        records.stats.add("web", "removed", result.reason, 1)
        remove = records.reject if result.reason in BAD_INPUT else records.skip
        remove(result.reason, data.decode("utf-8", "replace"), meta, "file", doc_id)
    yield


READER = Reader(name="html", patterns=(".html", ".htm", ".html.gz", ".htm.gz"), read=_read_html,
                options=("extractor",))
