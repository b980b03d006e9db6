"""Tables kept on the machine's disk, so that a process reads them instead of building them on its
first document: per-code-point tables built from Unicode definitions, and the tables a model file
is turned into before it can score.

The rules stage classifies all 1.1 million code points with Python's regular expressions and
``str`` methods (0.10 s), langid the first 262,144 with its patterns and two codecs (0.08 s). Every
worker process of every run paid that once per stage; with two workers, both paid it in each
stage's first task. ``cached_table(name, build, *modules)`` builds the table once per machine and
version of what defines it, and later processes load the ``.npy`` file (about a millisecond).
``cached_arrays(name, key, build, *modules)`` does the same for a set of named arrays (the quality
stage's language model with its hash tables, the compiled fastText predict's tables, the quality
split's character classes: 0.09 s of a quality worker's first task on corpus-dev's model), in a
directory of ``.npy`` files; ``key`` names what else defines them, such as the model file's
version (``file_entry``).

The key is a digest of the source of ``modules`` (the code that builds the table) and of this
module, the Python version (its ``re``, ``str`` methods and codecs), its Unicode database's
version and numpy's: a change to any of them builds and writes the table anew, and the older copy
of that name is removed. The directory is ``$PIPELINE_CACHE_DIR`` or ``<temp dir>/corpus-pipeline-<uid>``,
on each machine's own disk. A copy that cannot be read is rebuilt; a directory that cannot be
written leaves the table built in the process, as before.
"""
from __future__ import annotations

import glob
import hashlib
import inspect
import io
import json
import os
import shutil
import sys
import tempfile
import unicodedata
import uuid
from types import ModuleType
from typing import Callable, Collection

import numpy as np
import pyarrow.fs as pafs

from pipeline import storage

ENV = "PIPELINE_CACHE_DIR"


def cache_dir() -> str:
    return os.environ.get(ENV) or os.path.join(tempfile.gettempdir(), f"corpus-pipeline-{os.getuid()}")


def cached_table(name: str, build: Callable[[], np.ndarray], *modules: ModuleType) -> np.ndarray:
    """The table ``build()`` returns, read from this machine's copy when there is one."""
    path = _path(name, "", modules, ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # none yet, or unreadable: built and written below
        pass
    table = build()
    _write(path, table)
    return table


def cached_arrays(name: str, key: str, build: Callable[[], dict[str, np.ndarray]], *modules: ModuleType,
                  mapped: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``build()`` returns (by name), read from this machine's copy when there is one
    (``read_arrays``; else built and written, ``write_arrays``)."""
    arrays = read_arrays(name, key, *modules, mapped=mapped)
    if arrays is None:
        arrays = build()
        write_arrays(name, key, arrays, *modules)
    return arrays


def read_arrays(name: str, key: str, *modules: ModuleType, mapped: Callable[[str], bool] | None = None,
                only: Collection[str] | None = None) -> dict[str, np.ndarray] | None:
    """The arrays ``write_arrays`` wrote under ``name``, ``key`` and ``modules`` (``only`` those names,
    when given), as they were (dtype, shape, read-only or not), or None when there are none (or they
    cannot be read). Those ``mapped`` names are mapped from the file rather than read (copy on
    write), for arrays a process seldom reads: a mapped array costs nothing until read, but its
    pages are the page cache's small ones, and with all its large tables mapped the quality stage
    ran about 5% slower than with them in memory, which numpy gives huge pages."""
    path = _path(name, key, modules, "")
    index = _index(path)
    if index is None:
        return None
    try:
        arrays = {}
        for i, (field, writeable) in enumerate(index):
            if only is not None and field not in only:
                continue
            mode = "c" if mapped is not None and mapped(field) else None
            array = np.asarray(np.load(os.path.join(path, f"{i}.npy"), allow_pickle=False, mmap_mode=mode))
            array.flags.writeable = writeable  # as built: a compiled loop's types tell the two apart
            arrays[field] = array
        return arrays
    except (OSError, ValueError, TypeError):  # a file gone or unreadable
        return None


def write_arrays(name: str, key: str, arrays: dict[str, np.ndarray], *modules: ModuleType) -> None:
    """``arrays`` (by name) as this machine's copy for ``read_arrays``: a directory of ``.npy`` files,
    made beside its place and renamed to it, then older versions of ``name`` removed. A directory that
    cannot be written, or another process's copy that got there first, leaves this one unwritten."""
    path = _path(name, key, modules, "")
    temporary = f"{path}.{storage.TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        os.makedirs(temporary)
        for i, array in enumerate(arrays.values()):
            np.save(os.path.join(temporary, f"{i}.npy"), array, allow_pickle=False)
        with open(os.path.join(temporary, _INDEX), "w") as handle:
            json.dump([[field, bool(array.flags.writeable)] for field, array in arrays.items()], handle)
        try:
            os.rename(temporary, path)
        except OSError:  # a copy is there already: another process's, kept, or one that cannot be read
            if _index(path) is not None:
                shutil.rmtree(temporary, ignore_errors=True)
                return
            stale = f"{path}.{storage.TMP_PREFIX}{uuid.uuid4().hex[:12]}"
            os.rename(path, stale)
            os.rename(temporary, path)
            shutil.rmtree(stale, ignore_errors=True)
    except OSError:
        shutil.rmtree(temporary, ignore_errors=True)
        return
    _remove_older(path)


_INDEX = "index.json"  # [[name, writeable], ...] in file order; written last: a copy with it is whole


def _index(path: str) -> list | None:
    """The index of the copy at ``path``, None where there is none or it cannot be read."""
    try:
        with open(os.path.join(path, _INDEX)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def file_entry(prefix: str, path: str) -> tuple[str, str]:
    """``cached_arrays``' name and key for the tables a local file is turned into: a name per path,
    so that two models' copies do not replace each other, and a key that tells the file's versions
    apart by its size, modification time and inode (a model rewritten in place or replaced by
    rename gets a new one)."""
    real, status = os.path.realpath(path), os.stat(path)
    name = f"{prefix}-{hashlib.sha1(real.encode()).hexdigest()[:12]}"
    return name, f"{real}\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ino}"


def _path(name: str, key: str, modules: tuple[ModuleType, ...], suffix: str) -> str:
    """``<cache_dir>/<name>-<digest of the Python, Unicode and numpy versions, key, and the source of this
    module and of modules><suffix>``."""
    digest = hashlib.sha256(f"{sys.version}\0{unicodedata.unidata_version}\0{np.__version__}\0{key}".encode())
    for module in (sys.modules[__name__], *modules):  # this one: how the copies are laid out
        with open(inspect.getsourcefile(module), "rb") as source:
            digest.update(source.read())
    return os.path.join(cache_dir(), f"{name}-{digest.hexdigest()[:24]}{suffix}")


def _write(path: str, table: np.ndarray) -> None:
    """The table to ``path`` atomically (``storage.write_bytes``), then older versions of its name
    away; a directory that cannot be written leaves nothing behind."""
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    try:
        storage.write_bytes(pafs.LocalFileSystem(), path, buffer.getvalue())
    except OSError:
        return
    _remove_older(path)


def _remove_older(path: str) -> None:
    """Other versions of ``path``'s name (files or directories) away: a process still reading one
    keeps its open files and maps."""
    directory, name = os.path.split(path)
    stem, suffix = name.rsplit("-", 1)[0], os.path.splitext(name)[1]
    for older in glob.glob(os.path.join(directory, f"{glob.escape(stem)}-*{suffix}")):
        if older == path or storage.TMP_PREFIX in os.path.basename(older):
            continue
        if os.path.isdir(older):
            shutil.rmtree(older, ignore_errors=True)
        else:
            try:
                os.remove(older)
            except OSError:
                pass
