"""How the kernels load their machine code from numba's cache: two costs of numba's loader that a
worker paid for nothing, 0.3-0.5 s of its first tasks.

1. **The target's refresh.** numba's ``Cache.load_overload`` refreshes the CPU target before every
   load. The first refresh of a process imports numba's whole library of implementations (typed
   containers, random generators, linear algebra, jitclass, datetimes...) and installs it for the
   compiler: 0.15-0.25 s, though loading compiled code uses none of it. What the code needs at run
   time is the symbols it links against: numba's C helpers and exception objects (placed when the
   target context is made), the hash secret (``numba.cpython.hashing``, imported with numba) and
   NRT's, which ``rtsys.initialize`` places, as the refresh itself does first. A cache miss
   compiles, and numba's compiler refreshes the target before it compiles, as before.
2. **The linking module.** A cached kernel is its object code and the LLVM bitcode of its module,
   kept so that code compiled later can link against it. numba parses that bitcode at every load
   and lists every symbol it defines (one call into LLVM per function and global): two thirds of a
   load, 0.2 s for a worker's 40 kernels. Here the bitcode is parsed, and its symbols listed, when
   something first needs them: code compiled later that links against the kernel, or a question
   about a symbol numba has not been told of (``is_symbol_defined``). The one symbol a load itself
   asks for, the kernel's entry point, is known from the cache entry and is what its object defines.

Only the kernels' own loaders change (``load_quickly``, per dispatcher), so numba's caching of
anything else in the process is untouched; where numba's internals differ (another version), the
loader is left as it is.
"""
from __future__ import annotations

from typing import Any

_PENDING: list[Any] = []  # libraries whose linking module is not parsed yet


def load_quickly(compiled: Any) -> None:
    """Have the dispatcher ``compiled`` load from numba's cache without the two costs above."""
    cache = getattr(compiled, "_cache", None)
    impl = getattr(cache, "_impl", None)
    if not all(hasattr(cache, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")) \
            or not hasattr(impl, "rebuild"):
        return
    from numba.core.runtime import rtsys

    def load_overload(sig: Any, target_context: Any) -> Any:
        rtsys.initialize(target_context)
        with cache._guard_against_spurious_io_errors():
            return cache._load_overload(sig, target_context)
        return None  # the guard swallowed a spurious I/O error: numba then compiles

    numba_rebuild = impl.rebuild

    def rebuild(target_context: Any, payload: tuple) -> Any:
        codegen = target_context.codegen()
        engine = getattr(codegen, "_engine", None)
        if not hasattr(engine, "_defined_symbols"):
            return numba_rebuild(target_context, payload)
        _answer_from_pending(engine)
        entry = payload[1].llvm_cpython_wrapper_name  # payload: (library, fndesc, ...)
        codegen.unserialize_library = lambda state: _unserialize(codegen, state, entry)
        try:
            return numba_rebuild(target_context, payload)
        finally:
            del codegen.unserialize_library

    cache.load_overload = load_overload
    impl.rebuild = rebuild


def _unserialize(codegen: Any, state: tuple, entry: str) -> Any:
    """numba's ``CPUCodeLibrary._unserialize`` of object code, the linking module left unparsed;
    ``entry``, the kernel's entry point, is the symbol of it that numba is told of at once."""
    name, kind, data = state
    if kind != "object":
        return type(codegen).unserialize_library(codegen, state)
    object_code, shared_bitcode = data
    library = codegen.create_library(name)
    library.__dict__.pop("_shared_module", None)
    library.__class__ = _lazy_class(type(library))
    library.__dict__["_pipeline_bitcode"] = shared_bitcode
    library.enable_object_caching()
    library._set_compiled_object(object_code)
    library._finalize_final_module()
    codegen._engine._defined_symbols.add(entry)
    _PENDING.append(library)
    return library


_CLASSES: dict[type, type] = {}


def _lazy_class(base: type) -> type:
    """``base`` (numba's JIT code library) with its linking module parsed on first use."""
    if base not in _CLASSES:
        def shared_module(library: Any) -> Any:
            if "_pipeline_bitcode" in library.__dict__:
                _parse(library)
            return library.__dict__.get("_pipeline_parsed")

        def set_shared_module(library: Any, module: Any) -> None:
            library.__dict__["_pipeline_parsed"] = module

        _CLASSES[base] = type(f"Lazy{base.__name__}", (base,),
                              {"_shared_module": property(shared_module, set_shared_module)})
    return _CLASSES[base]


def _parse(library: Any) -> None:
    """Parse ``library``'s linking module and tell numba's engine the symbols it defines."""
    import llvmlite.binding as ll

    module = ll.parse_bitcode(library.__dict__.pop("_pipeline_bitcode"))
    library.__dict__["_pipeline_parsed"] = module
    library._codegen._engine._load_defined_symbols(module)
    if library in _PENDING:
        _PENDING.remove(library)


def _answer_from_pending(engine: Any) -> None:
    """Make ``engine.is_symbol_defined`` parse the pending linking modules before it answers no."""
    if getattr(engine, "_answers_from_pending", False):
        return
    defined = engine.is_symbol_defined

    def is_symbol_defined(name: str) -> bool:
        if not defined(name):
            for library in [library for library in _PENDING if library._codegen._engine is engine]:
                _parse(library)
        return defined(name)

    engine.is_symbol_defined = is_symbol_defined
    engine._answers_from_pending = True
