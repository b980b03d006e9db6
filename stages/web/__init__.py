"""Web-crawl extraction: WARC/WET records -> documents, HTML -> main text, URL block/allow lists.

A standalone library (issue 17); ingest's ``format: warc|wet|html`` readers are built on it. See
docs/web.md for the design and the measurements.
"""
from stages.web.html import ExtractResult, decode_html, extract
from stages.web.urlfilter import UrlDecision, UrlFilter
from stages.web.warc import (REASONS, ReadStats, WarcReader, WebDocument, WebRemoval, iter_warc_records,
                             iter_wet_records)

__all__ = ["ExtractResult", "REASONS", "ReadStats", "UrlDecision", "UrlFilter", "WarcReader", "WebDocument",
           "WebRemoval", "decode_html", "extract", "iter_warc_records", "iter_wet_records"]
