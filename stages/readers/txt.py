"""Plain text: one file is one document, its id ``<source>/<file path>``. UTF-8, less a byte order
mark before the text (Windows tools write one); a file that starts with UTF-16's mark (Notepad's
"Unicode") is read as UTF-16. Other bytes that are not UTF-8 make the file ``invalid_utf8``."""
from __future__ import annotations

from typing import Any, Iterator

from pipeline.readers import InputFile, Reader
from stages.readers.common import reject_rest, too_large, unread_limit, whole_file


def _read_txt(item: InputFile, records) -> Iterator[None]:
    meta: dict[str, Any] = {"_ingest": {"file": item.relative}}
    doc_id = f"{item.source.name}/{item.relative}"
    data, damage, size = whole_file(item, unread_limit(records.config))
    if size:
        too_large(records, data, size, meta, "file", doc_id)
        yield
        return
    if damage is not None:  # one file is one document: it is the damaged record
        reject_rest(item, records, damage, len(data), data, None)
        yield
        return
    utf16 = data[:2] in UTF16_MARKS
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")  # each drops its mark
    except UnicodeDecodeError as error:
        meta["error"] = f"invalid {'UTF-16' if utf16 else 'UTF-8'} at byte {error.start}"
        records.reject("invalid_utf8", data.decode("utf-8", "replace"), meta, "file", doc_id)
        yield
        return
    records.add(doc_id, text, meta, "file", text)
    yield


UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")  # little- and big-endian


READER = Reader(name="txt", patterns=(".txt",), read=_read_txt, options=())
