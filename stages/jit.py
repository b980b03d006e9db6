"""``njit`` for the stages' compiled loops, with numba imported on the first call of any of them.

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
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

_PENDING: list[tuple[Callable, dict[str, Any]]] = []


def njit(**options: Any) -> Callable[[Callable], Callable]:
    """``numba.njit(**options)``, applied when a recorded function is first called."""

    def record(function: Callable) -> Callable:
        _PENDING.append((function, options))

        @functools.wraps(function)
        def placeholder(*args):
            _compile_pending()
            return getattr(sys.modules[function.__module__], function.__name__)(*args)

        return placeholder

    return record


def _compile_pending() -> None:
    import numba

    modules: dict[str, Any] = {}
    while _PENDING:
        function, options = _PENDING.pop()
        compiled = numba.njit(**options)(function)
        setattr(sys.modules[function.__module__], function.__name__, compiled)
        if options.get("cache"):
            modules[function.__module__] = compiled
    first = sorted(module for module, compiled in modules.items() if not _ever_cached(module, compiled))
    if first:
        # The first run on a machine spends up to a minute compiling with nothing else to show for it.
        # Named: every module with a recorded kernel and nothing cached yet; the calls that follow
        # compile the kernels they reach, which may be fewer.
        print(f"numba: nothing of {', '.join(first)} is cached on this machine yet: the loops it runs compile "
              "on first use (up to a minute, once); later runs load the cached machine code",
              file=sys.stderr, flush=True)


def _ever_cached(module: str, compiled: Any) -> bool:
    """Whether numba's cache directory holds any function of ``module``: a module whose loops were
    compiled on this machine before (stale entries, after the code changed, recompile silently)."""
    try:
        directory = compiled._cache._cache_path
    except AttributeError:  # another numba's internals: assume cached rather than say something wrong
        return True
    stem = module.rsplit(".", 1)[-1] + "."
    return any(name.startswith(stem) and name.endswith(".nbi") for name in os.listdir(directory)) \
        if os.path.isdir(directory) else False
