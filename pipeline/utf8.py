"""The UTF-8 bytes of an Arrow string array as numpy arrays, for loops that work on bytes (the
compiled loops of rules, quality and dedup; the tokenizer's word segments), and back."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def string_array(offsets: np.ndarray, data: np.ndarray, large: bool = False) -> pa.Array:
    """The string array of ``len(offsets) - 1`` strings over UTF-8 ``data`` (``utf8_buffers``' inverse):
    ``large_string`` when ``large`` or when the bytes need 64-bit offsets."""
    large = large or offsets[-1] > np.iinfo(np.int32).max
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(offsets) - 1, [
        None, pa.py_buffer(offsets.astype(np.int64 if large else np.int32)), pa.py_buffer(data)])


def utf8_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Where each string of a null-free string array starts in the UTF-8 bytes of them all (``len + 1``
    int64 offsets, the first 0), and those bytes (uint8, read-only), read from the array's buffers."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    width = np.int64 if pa.types.is_large_string(strings.type) or pa.types.is_large_binary(strings.type) \
        else np.int32
    _, offset_buffer, data_buffer = strings.buffers()
    if not len(strings):
        return np.zeros(1, dtype=np.int64), _NO_BYTES
    offsets = np.frombuffer(offset_buffer, width)[strings.offset:strings.offset + len(strings) + 1].astype(np.int64)
    if data_buffer is None:
        return offsets - offsets[0], _NO_BYTES
    data = np.frombuffer(data_buffer, np.uint8)[offsets[0]:offsets[-1]]
    # Read-only whatever the buffer (Arrow's own are; one made from numpy is not): numba compiles a
    # kernel once per argument type, and a writable array is another type than a read-only one.
    data.setflags(write=False)
    return offsets - offsets[0], data


_NO_BYTES = np.zeros(0, dtype=np.uint8)
_NO_BYTES.setflags(write=False)
