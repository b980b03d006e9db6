"""``pipeline.jit``: numba loaded on a kernel's first call, and the first run on a machine says it compiles;
``pipeline.warmup``: what that first run compiles ahead."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO


def test_the_first_run_on_a_machine_says_it_compiles_and_later_runs_do_not(tmp_path):
    (tmp_path / "tiny_kernels.py").write_text(textwrap.dedent("""
        import sys
        from pipeline.jit import njit

        @njit(cache=True)
        def add(a, b):
            return a + b

        from pipeline.jit import uncached_modules
        assert "numba" not in sys.modules  # recording a kernel imports nothing
        print(uncached_modules())  # nor does looking for it in numba's cache
        assert "numba" not in sys.modules
        print(add(1, 2))
    """), encoding="utf-8")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "import tiny_kernels"], cwd=tmp_path, capture_output=True, text=True,
                              env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=300)

    first, second = run(), run()
    assert first.returncode == 0 and first.stdout.split() == ["['tiny_kernels']", "3"], first.stderr
    assert "numba: nothing of tiny_kernels is cached on this machine yet" in first.stderr
    assert second.returncode == 0 and second.stdout.split() == ["[]", "3"], second.stderr
    assert "numba:" not in second.stderr
    assert list((tmp_path / "__pycache__").glob("tiny_kernels.add-*.nbi"))  # where the machine code went


def test_loading_numba_leaves_scipy_linalg_unimported_and_blas_still_works(tmp_path):
    """numba's BLAS check would import scipy.linalg with the first kernel; a kernel that uses BLAS
    (np.dot) still compiles, and imports it then. The import is refused to the loading thread only."""
    (tmp_path / "blas_kernels.py").write_text(textwrap.dedent("""
        import sys, threading
        import numpy as np
        from pipeline import jit
        from pipeline.jit import njit

        @njit()
        def total(a):
            return a.sum()

        @njit()
        def dot(a):
            return np.dot(a, a)

        print(total(np.ones(3)), "scipy.linalg" in sys.modules, jit._NoScipyLinalg in map(type, sys.meta_path))
        print(dot(np.ones(3)), "scipy.linalg" in sys.modules)
        finder = jit._NoScipyLinalg(threading.get_ident())
        try:
            finder.find_spec("scipy.linalg")
        except ModuleNotFoundError:
            print("refused here")
        other = []
        thread = threading.Thread(target=lambda: other.append(finder.find_spec("scipy.linalg")))
        thread.start(); thread.join()
        print(other, finder.find_spec("numpy"))
    """), encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", "import blas_kernels"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["3.0 False False", "3.0 True", "refused here", "[None] None"]


def test_every_kernel_compiles_for_one_argument_type_in_a_run_of_the_sample(tmp_path):
    """Each signature numba meets is another compile, about a second or more per kernel on a
    machine's first run (and another copy of the machine code to load on later ones). A whole run of
    the sample (stages, tokenizer, mixture) in one process calls each kernel with one set of argument
    types only: read-only byte arrays wherever the bytes come from, int64 where a literal would be its
    own type."""
    script = textwrap.dedent(f"""
        import sys
        import yaml
        sys.path.insert(0, {str(REPO / "tests")!r})
        from conftest import SAMPLE_CONFIG
        from pipeline.config import parse_config
        from pipeline.runner import run_pipeline

        from pipeline.planning import plan_stages
        from pipeline.warmup import warm_stage

        raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
        raw["work_dir"] = {str(tmp_path / "work")!r}
        config = parse_config(raw, source=str(SAMPLE_CONFIG))

        from numba.core.registry import CPUDispatcher

        def used():
            found = 0
            for name, module in sorted(sys.modules.items()):
                if name.split(".")[0] in ("stages", "pipeline", "tokenizer", "mixture"):
                    for attribute, value in sorted(vars(module).items()):
                        if isinstance(value, CPUDispatcher) and value.signatures:
                            found += 1
                            if len(value.signatures) > 1:
                                print("twice", name, attribute, *value.signatures, sep="\\n    ")
            return found

        # first what a machine's first run compiles ahead (pipeline.warmup), then the run itself
        for spec in plan_stages(config):
            if not hasattr(spec.stage_type, "run_unit"):
                print("warm-up", spec.name, warm_stage(spec))
        print("kernels warmed", used())
        run_pipeline(config, use_ray=False, log=lambda _: None)
        print("kernels used", used())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "twice" not in done.stdout, done.stdout
    assert [line for line in done.stdout.splitlines() if line.startswith("warm-up")] == [
        "warm-up langid None", "warm-up rules None", "warm-up quality None", "warm-up dedup None"], done.stdout
    warmed, used = (int(done.stdout.split(label)[-1].split()[0]) for label in ("kernels warmed", "kernels used"))
    assert used >= 20, done.stdout  # the kernels did run here
    # the warm-up reaches the stages' kernels, not the tokenizer's four (segments, their ids, BPE's two)
    assert warmed >= used - 4, done.stdout


def test_cached_kernels_load_without_numbas_refresh_or_linking_module_and_later_compiles_still_link(tmp_path):
    """A cached kernel loads without numba importing its library of implementations (the target's
    refresh: typed containers, random generators...) and without parsing the module kept for linking,
    and its machine code still finds what it links against: NRT (an allocated array), the hash
    secret (str's hash, as CPython's). A kernel compiled after that gets the library it needs (a
    typed dict) and links against a loaded one (``callee``)."""
    (tmp_path / "light_kernels.py").write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from pipeline import jit_cache
        from pipeline.jit import njit

        @njit(cache=True)
        def cached(text, n):
            return hash(text), np.arange(n).sum()

        @njit(cache=True)
        def callee(n):
            return np.arange(n).sum() * 2

        @njit(cache=True)
        def compiled_later(n):
            counts = {0: 0}
            for i in range(n):
                counts[i % 3] = counts.get(i % 3, 0) + 1
            return len(counts) + callee(n)

        print(cached("pipeline", 5) == (hash("pipeline"), 10), callee(4))
        print("numba.typed.typeddict" in sys.modules, "numba.np.random.generator_core" in sys.modules,
              len(jit_cache._PENDING))
        if sys.argv[1:] == ["link"]:  # what a compile linking against callee asks of its library
            [loaded] = callee.overloads.values()
            print(loaded.library._get_module_for_linking() is not None, len(jit_cache._PENDING))
        if sys.argv[1:] == ["later"]:
            print(compiled_later(10), len(jit_cache._PENDING))
    """), encoding="utf-8")

    def run(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", "import light_kernels", *args], cwd=tmp_path, capture_output=True,
                              text=True, env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert run() == ["True", "12", "True", "True", "0"]  # compiled: numba's compiler refreshes the target
    assert run() == ["True", "12", "False", "False", "2"]  # loaded, nothing of the library imported or parsed
    assert run("link") == ["True", "12", "False", "False", "2", "True", "1"]  # parsed when first needed
    # A compile asks numba's engine about symbols it was not told of: the pending modules are parsed first.
    assert run("later") == ["True", "12", "False", "False", "2", "93", "0"]
    assert run("later") == ["True", "12", "False", "False", "2", "93", "3"]  # all three loaded from the cache


def test_a_workers_stages_and_numba_are_kept_out_of_the_garbage_collectors_scans():
    """What lives as long as a worker process (a stage built with its models, numba's objects once
    a kernel is first called) is frozen (``gc.freeze``), so a full collection does not rescan it;
    a frozen object is still freed by reference counting."""
    script = textwrap.dedent(f"""
        import gc, sys, weakref
        import numpy as np
        import yaml
        sys.path.insert(0, {str(REPO / "tests")!r})
        from conftest import SAMPLE_CONFIG
        from pipeline.config import parse_config
        from pipeline.planning import plan_stages
        from pipeline import worker
        from pipeline.jit import njit

        raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
        raw["work_dir"] = "unused"
        spec = next(s for s in plan_stages(parse_config(raw)) if s.name == "langid")
        frozen = gc.get_freeze_count()
        stage = worker.stage_instance(spec)
        print(gc.get_freeze_count() > frozen, any(o is stage for o in gc.get_objects()))

        @njit()
        def add_one(a):
            return a + 1

        frozen = gc.get_freeze_count()
        print(add_one(np.int64(1)), gc.get_freeze_count() > frozen)
        from numba.core import types
        print(any(o is types.int64 for o in gc.get_objects()))
        class Box: pass
        box = Box(); gone = weakref.ref(box); gc.freeze(); del box
        print(gone() is None)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "False", "2", "True", "False", "True"], done.stdout
