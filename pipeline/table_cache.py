"""Per-code-point tables kept on the machine's disk, so that a process reads them instead of
building them from Unicode definitions on its first document.

The rules stage classifies all 1.1 million code points with Python's regular expressions and
``str`` methods (0.10 s), langid the first 262,144 with its patterns and two codecs (0.08 s). Every
worker process of every run paid that once per stage; with two workers, both paid it in each
stage's first task. ``cached_table(name, build, *modules)`` builds the table once per machine and
version of what defines it, and later processes load the ``.npy`` file (about a millisecond).

The key is a digest of the source of ``modules`` (the code that builds the table), the Python
version (its ``re``, ``str`` methods and codecs) and its Unicode database's version: a change to
any of them builds and writes the table anew, and the older file of that name is removed. The
directory is ``$PIPELINE_CACHE_DIR`` or ``<temp dir>/corpus-pipeline-<uid>``, on each machine's
own disk. A file that cannot be read is rebuilt; a directory that cannot be written leaves the
table built in the process, as before.
"""
from __future__ import annotations

import glob
import hashlib
import inspect
import io
import os
import sys
import tempfile
import unicodedata
from types import ModuleType
from typing import Callable

import numpy as np
import pyarrow.fs as pafs

from pipeline import storage

ENV = "PIPELINE_CACHE_DIR"


def cache_dir() -> str:
    return os.environ.get(ENV) or os.path.join(tempfile.gettempdir(), f"corpus-pipeline-{os.getuid()}")


def cached_table(name: str, build: Callable[[], np.ndarray], *modules: ModuleType) -> np.ndarray:
    """The table ``build()`` returns, read from this machine's copy when there is one."""
    digest = hashlib.sha256(f"{sys.version}\0{unicodedata.unidata_version}".encode())
    for module in modules:
        with open(inspect.getsourcefile(module), "rb") as source:
            digest.update(source.read())
    path = os.path.join(cache_dir(), f"{name}-{digest.hexdigest()[:24]}.npy")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # none yet, or unreadable: built and written below
        pass
    table = build()
    try:
        _write(path, table)
    except OSError:
        pass
    return table


def _write(path: str, table: np.ndarray) -> None:
    """The table to ``path`` atomically (``storage.write_bytes``), then older versions of its name away."""
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    storage.write_bytes(pafs.LocalFileSystem(), path, buffer.getvalue())
    directory, name = os.path.split(path)
    stem = name.rsplit("-", 1)[0]
    for older in glob.glob(os.path.join(directory, f"{glob.escape(stem)}-*.npy")):
        if older != path:  # another version's: a process still reading it keeps its open file
            try:
                os.remove(older)
            except OSError:
                pass
