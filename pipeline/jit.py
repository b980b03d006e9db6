"""``njit`` for the compiled loops of the stages and the tokenizer, with numba imported on the first
call of any of them.

Importing numba (and LLVM with it) costs a process about 110 MB and a tenth of a second. The driver
imports every stage's module to read its configuration and plan its units but runs no loop (unless it
trains the quality model), so it should not pay that; a worker pays it once, when its first task
calls a kernel.

``@njit(cache=True, ...)`` records the function. On the first call of any recorded function, every
one recorded so far is handed to ``numba.njit`` with its options and put back into its module in
place of the placeholder, so kernels calling one another find compiled functions (compilation itself
still happens per function, on its first call, or is loaded from numba's cache). Callers should
reach kernels as module attributes (``kernels.find_words(...)``); a function imported by name keeps
the placeholder, which forwards each call to the compiled one.

``prefetch_row`` is the one intrinsic (LLVM code of our own) the kernels call; it becomes numba's at
the same moment, and kernels reach it as ``jit.prefetch_row``.

numba is imported without its check for BLAS (``_import_numba``): when its CPU target loads, numba
imports ``scipy.linalg`` only to learn whether BLAS exists (0.22-0.25 s alone, in a process with
numpy; 0.12 s of langid's first unit in a worker, median of 8 alternating pairs: scipy's import
clones numpy's namespace and imports ``numpy.testing`` and ``numpy.f2py`` with it). No kernel here
calls BLAS.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import importlib
import os
import sys
import threading
from typing import Any, Callable

from pipeline import jit_cache

_PENDING: list[tuple[Callable, dict[str, Any]]] = []
_CACHED_MODULES: set[str] = set()  # of every kernel recorded with cache=True, compiled yet or not


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)``, applied when a recorded function is first called."""

    def record(function: Callable) -> Callable:
        _PENDING.append((function, options))
        if options.get("cache"):
            _CACHED_MODULES.add(function.__module__)

        @functools.wraps(function)
        def placeholder(*args):
            _compile_pending()
            return getattr(sys.modules[function.__module__], function.__name__)(*args)

        return placeholder

    return record


def prefetch_row(matrix, row):
    """Start reading row ``row`` (an integer) of the C-contiguous 2-D ``matrix`` into the cache (``llvm.prefetch``:
    a read, to be kept close). For a loop that gathers row numbers first and sums the rows after:
    rows scattered over a table larger than the cache then arrive while the gathering goes on instead
    of one after another in the sum. A hint only: it changes no value. Compiled code only."""
    raise TypeError("prefetch_row is called from compiled kernels only")


_PYTHON_PREFETCH_ROW = prefetch_row


def _prefetch_intrinsic() -> Callable:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, matrix, row):
        if not isinstance(matrix, types.Array) or matrix.ndim != 2 or not isinstance(row, types.Integer):
            return None  # numba then reports the call as not typable, naming the argument types
        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            row_index = context.cast(builder, args[1], signature.args[1], types.intp)
            address = cgutils.get_item_pointer(context, builder, signature.args[0], array,
                                               [row_index, context.get_constant(types.intp, 0)])
            byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
            # read (0), highest locality (3), data cache (1)
            builder.call(function, [builder.bitcast(address, byte_pointer), ir.Constant(i32, 0),
                                    ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()

        return types.void(matrix, row), codegen

    return prefetch


def _compile_pending() -> None:
    _import_numba()
    import numba

    global prefetch_row
    if prefetch_row is _PYTHON_PREFETCH_ROW:
        prefetch_row = _prefetch_intrinsic()
    modules: dict[str, Any] = {}
    while _PENDING:
        function, options = _PENDING.pop()
        compiled = numba.njit(**options)(function)
        setattr(sys.modules[function.__module__], function.__name__, compiled)
        if options.get("cache"):
            modules[function.__module__] = compiled
            jit_cache.load_quickly(compiled)
    gc.freeze()  # numba's objects live as long as the process: out of the collector's scans (``worker.stage_instance``)
    first = sorted(module for module, compiled in modules.items() if not _ever_cached(module, compiled))
    if first:
        # The first run on a machine spends up to a minute compiling with nothing else to show for it.
        # Named: every module with a recorded kernel and nothing cached yet; the calls that follow
        # compile the kernels they reach, which may be fewer.
        print(f"numba: nothing of {', '.join(first)} is cached on this machine yet: the loops it runs compile "
              "on first use (up to a minute, once); later runs load the cached machine code",
              file=sys.stderr, flush=True)


def _import_numba() -> None:
    """Import numba and its array functions (``numba.np.arraymath``) while ``scipy.linalg`` cannot be
    imported by this thread (other threads import as usual). That module's import sets
    ``_HAVE_BLAS`` by trying ``scipy.linalg``; without it, ``np.convolve`` and ``np.correlate`` of
    floats in compiled code use a loop instead of BLAS's dot, and nothing else changes (``np.dot``
    imports scipy.linalg when a kernel using it compiles). Where scipy.linalg is already imported,
    numba finds it as before."""
    if "numba.np.arraymath" in sys.modules:
        return
    finder = _NoScipyLinalg(threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        sys.meta_path.remove(finder)


class _NoScipyLinalg:
    """An import finder that refuses ``scipy.linalg`` to one thread and answers nothing else."""

    def __init__(self, thread: int):
        self.thread = thread

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "scipy.linalg" and threading.get_ident() == self.thread:
            raise ModuleNotFoundError("scipy.linalg is not imported while numba loads (pipeline.jit)", name=name)
        return None


def _ever_cached(module: str, compiled: Any) -> bool:
    """Whether numba's cache directory holds any function of ``module``: a module whose loops were
    compiled on this machine before (stale entries, after the code changed, recompile silently)."""
    try:
        directory = compiled._cache._cache_path
    except AttributeError:  # another numba's internals: assume cached rather than say something wrong
        return True
    return _has_index(directory, module)


def uncached_modules(prefix: str = "") -> list[str]:
    """The modules (named ``prefix...``) of the recorded kernels (``cache=True``) that have nothing
    in numba's cache on this machine: a first run, which compiles them on first use. Found without
    importing numba, for the driver (``pipeline.warmup``): it looks where numba's cache locators
    look, in their order, for any index file of the module (``<module>.*.nbi``): NUMBA_CACHE_DIR
    when set, else the module's own ``__pycache__`` and numba's user-wide directory
    (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``, used where ``__pycache__`` is not writable)."""
    return [module for module in sorted(_CACHED_MODULES) if module.startswith(prefix)
            and not any(_has_index(directory, module) for directory in _cache_dirs(module))]


def _cache_dirs(module: str) -> list[str]:
    source = os.path.abspath(sys.modules[module].__file__)
    parent = os.path.dirname(source)
    # numba's ``_CacheLocator.get_suitable_cache_subpath``: the parent's name and its path's SHA-1
    subpath = f"{os.path.basename(parent)}_{hashlib.sha1(parent.encode()).hexdigest()}"
    user_wide = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "numba")
    provided = os.environ.get("NUMBA_CACHE_DIR")
    if provided:
        return [os.path.join(provided, subpath)]
    return [os.path.join(parent, "__pycache__"), os.path.join(user_wide, subpath)]


def _has_index(directory: str, module: str) -> bool:
    stem = module.rsplit(".", 1)[-1] + "."
    try:
        return any(name.startswith(stem) and name.endswith(".nbi") for name in os.listdir(directory))
    except OSError:  # no such directory
        return False
