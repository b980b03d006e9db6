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

The directory stays bounded (``_prune``, after each copy written): a model's copies are named after
its file's path (a quality model's take 73 MB), and a day of test runs once left 11 GB of them. A
copy whose model file is gone or changed goes, as does a temporary abandoned for an hour; past
``$PIPELINE_CACHE_MAX_MB`` (default 2048) the least recently read copies (a read touches its copy)
go first. Only names of this module's making are touched; a copy removed under a reader is rebuilt.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import unicodedata
import uuid
from types import ModuleType
from typing import Callable, Collection

import numpy as np
import pyarrow.fs as pafs

from pipeline import storage

ENV = "PIPELINE_CACHE_DIR"
MAX_MB_ENV = "PIPELINE_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
ABANDONED_S = 3600  # a temporary older than this is no writer's any more


def cache_dir() -> str:
    return os.environ.get(ENV) or os.path.join(tempfile.gettempdir(), f"corpus-pipeline-{os.getuid()}")


def cached_table(name: str, build: Callable[[], np.ndarray], *modules: ModuleType) -> np.ndarray:
    """The table ``build()`` returns, read from this machine's copy when there is one."""
    path = _path(name, "", modules, ".npy")
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError):  # none yet, or unreadable: built and written below
        pass
    else:
        _touch(path)
        return table
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
    except (OSError, ValueError, TypeError):  # a file gone or unreadable
        return None
    _touch(os.path.join(path, _INDEX))
    return arrays


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
        with open(os.path.join(temporary, _KEY), "w") as handle:
            json.dump({"key": key, "bytes": _size(temporary)}, handle)
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
    _prune(path)


_INDEX = "index.json"  # [[name, writeable], ...] in file order; written last: a copy with it is whole
_KEY = "key.json"  # {"key": what else defines the arrays, "bytes": the copy's size}


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
    real = os.path.realpath(path)
    name = f"{prefix}-{hashlib.sha1(real.encode()).hexdigest()[:12]}"
    return name, _file_stamp(real)


def _file_stamp(real: str) -> str:
    status = os.stat(real)
    return f"{real}\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ino}"


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
    _prune(path)


def _remove_older(path: str) -> None:
    """Other versions of ``path``'s name (files or directories) away: a process still reading one
    keeps its open files and maps."""
    directory, name = os.path.split(path)
    stem, suffix = name.rsplit("-", 1)[0], os.path.splitext(name)[1]
    for older in glob.glob(os.path.join(directory, f"{glob.escape(stem)}-*{suffix}")):
        if older != path and storage.TMP_PREFIX not in os.path.basename(older):
            _remove(older)


def _prune(written: str) -> None:
    """Keep the directory of ``written`` (just written, never removed here) bounded: copies of model
    files that are gone or changed and abandoned temporaries away, then the least recently read
    copies until all of them together are within ``$PIPELINE_CACHE_MAX_MB``."""
    try:
        entries = [entry for entry in os.scandir(os.path.dirname(written)) if entry.path != written]
        total = _size(written)
    except OSError:
        return
    remaining = []
    for entry in entries:
        if not _OURS.search(entry.name):  # a directory shared with other files: only copies are pruned
            continue
        try:
            if storage.TMP_PREFIX in entry.name:
                if time.time() - entry.stat().st_mtime > ABANDONED_S:
                    _remove(entry.path)
                continue
            recorded = _recorded(entry.path) if entry.is_dir() else {}
            if _stale(recorded.get("key", "")):
                _remove(entry.path)
                continue
            size = recorded.get("bytes") if isinstance(recorded.get("bytes"), int) else _size(entry.path)
        except OSError:  # removed meanwhile by another process
            continue
        remaining.append((_last_read(entry), size, entry.path))
        total += size
    try:
        limit = float(os.environ.get(MAX_MB_ENV) or DEFAULT_MAX_MB) * 1e6
    except ValueError:  # not a number: the default, rather than a worker failing over a cache
        limit = DEFAULT_MAX_MB * 1e6
    for _, size, path in sorted(remaining):
        if total <= limit:
            break
        _remove(path)
        total -= size


# A copy's name (``_path``), or a temporary of one: ``<copy>.tmp-<id>`` (``write_arrays``) or
# ``.tmp-<id>-<copy>.npy`` (``storage.write_bytes``).
_OURS = re.compile(r"-[0-9a-f]{24}(\.npy$|$|\.\.tmp-[0-9a-f]{12}$)")


def _recorded(path: str) -> dict:
    """A copy's ``_KEY`` record; {} where it has none (a copy of an older layout) or it is unreadable."""
    try:
        with open(os.path.join(path, _KEY)) as handle:
            recorded = json.load(handle)
        return recorded if isinstance(recorded, dict) else {}
    except (OSError, ValueError):
        return {}


def _stale(key: str) -> bool:
    """Whether ``key`` is a model file's stamp (``file_entry``) that the file no longer has."""
    parts = key.split("\0")
    if len(parts) != 4 or not os.path.isabs(parts[0]):
        return False
    try:
        return _file_stamp(parts[0]) != key
    except OSError:
        return True


def _last_read(entry: os.DirEntry) -> float:
    """When a copy was last read or written: its index's time (a file's own); 0 for a copy without one."""
    try:
        return os.stat(os.path.join(entry.path, _INDEX) if entry.is_dir() else entry.path).st_mtime
    except OSError:
        return 0.0


def _size(path: str) -> int:
    """Bytes in the file ``path``, or in the files of the directory ``path``."""
    if not os.path.isdir(path):
        return os.stat(path).st_size
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def _touch(path: str) -> None:
    """Mark a copy as just read (its time), for ``_prune``'s order; a read-only directory leaves it."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(path)
