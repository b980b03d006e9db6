"""Plain text: one file is one document, its id ``<source>/<file path>``."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline.readers import InputFile, Reader
from pipeline.storage import resolve
from stages.readers.common import CorruptFile, decompressed, reject_rest


def _read_txt(item: InputFile, records) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    parts: list[bytes] = []
    meta: dict[str, Any] = {"_ingest": {"file": item.relative}}
    doc_id = f"{item.source.name}/{item.relative}"
    with decompressed(fs, item.path) as chunks:
        try:
            for chunk in chunks:
                parts.append(chunk)
        except CorruptFile as damage:  # one file is one document: it is the damaged record
            data = b"".join(parts)
            reject_rest(item, records, damage, len(data), data, None)
            yield
            return
    data = b"".join(parts)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        meta["error"] = f"invalid UTF-8 at byte {error.start}"
        records.reject("invalid_utf8", data.decode("utf-8", "replace"), meta, "file", doc_id)
        return
    records.add(doc_id, text, meta, "file", text)
    yield


READER = Reader(name="txt", patterns=(".txt",), read=_read_txt, options=())
