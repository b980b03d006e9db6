"""``njit`` for the stages' compiled loops, with numba imported on the first call of any of them.

Importing numba (and LLVM with it) costs a process about 110 MB and a tenth of a second. The driver
imports every stage's module to read its configuration and plan its units but never runs a loop, so
it should not pay that; a worker pays it once, when its first task calls a kernel.

``@njit(cache=True, ...)`` records the function. On the first call of any recorded function, every
one recorded so far is handed to ``numba.njit`` with its options and put back into its module in
place of the placeholder, so kernels calling one another find compiled functions (compilation itself
still happens per function, on its first call, or is loaded from numba's cache). Callers should
reach kernels as module attributes (``kernels.find_words(...)``); a function imported by name keeps
the placeholder, which forwards each call to the compiled one.
"""
from __future__ import annotations

import functools
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

    while _PENDING:
        function, options = _PENDING.pop()
        setattr(sys.modules[function.__module__], function.__name__, numba.njit(**options)(function))
