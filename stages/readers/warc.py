"""WARC and WET files (``.warc``, ``.warc.gz``; ``.warc.wet``, ``.warc.wet.gz``): one WARC record at a
time, streamed (memory is bounded by one record), every record a document or a removed row.

``format: warc``: HTTP 200 HTML responses become documents, their main text extracted with the
input's ``extractor`` (``stages.web.html``); ``format: wet``: Common Crawl's text conversions, one
document per ``conversion`` record. Everything else goes to removed/ with its reason
(``stages.web.warc.REASONS``): ``skipped_request``, ``http_status``, ``not_html``, ``no_text``,
``truncated_record``... (``stages.readers.web``: ids, meta, which reasons are bad input). The
reader's own conservation (records = documents + removals) is checked per file, and its counters go
to the stage's stats as ``ingest.web``: ``records``, ``documents``, ``by_type`` (WARC record types),
``removed`` (by reason), ``by_method`` (which extractor path made each text).
"""
from __future__ import annotations

from functools import partial
from typing import Iterator

from pipeline.errors import ConservationError
from pipeline.readers import InputFile, Reader
from pipeline.storage import resolve
from stages.readers.web import add_web_item, url_filter
from stages.web import WarcReader, extract


def _read(item: InputFile, records, wet: bool) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    # compression=None: the WARC reader decompresses gzip itself, member by member, to tell where a
    # damaged file stops being readable
    with fs.open_input_stream(item.path, compression=None) as stream:
        reader = WarcReader(stream, wet=wet, extract_fn=partial(extract, method=item.source.extractor),
                            url_filter=url_filter(item.source))
        for web_item in reader:
            add_web_item(item, records, web_item)
            yield
    try:
        reader.stats.check()
    except AssertionError as error:
        raise ConservationError(f"{item.path}: WARC records not all accounted for: {error}") from None
    records.stats.merge({"web": reader.stats.as_dict()})


READER = Reader(name="warc", patterns=(".warc", ".warc.gz"), read=partial(_read, wet=False),
                options=("extractor", "url_filter"))
WET_READER = Reader(name="wet", patterns=(".warc.wet", ".warc.wet.gz", ".wet", ".wet.gz"),
                    read=partial(_read, wet=True), options=("url_filter",))
