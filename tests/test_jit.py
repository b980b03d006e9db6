"""``stages.jit``: numba loaded on a kernel's first call, and the first run on a machine says it compiles."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO


def test_the_first_run_on_a_machine_says_it_compiles_and_later_runs_do_not(tmp_path):
    (tmp_path / "tiny_kernels.py").write_text(textwrap.dedent("""
        import sys
        from stages.jit import njit

        @njit(cache=True)
        def add(a, b):
            return a + b

        assert "numba" not in sys.modules  # recording a kernel imports nothing
        print(add(1, 2))
    """), encoding="utf-8")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "import tiny_kernels"], cwd=tmp_path, capture_output=True, text=True,
                              env={"PYTHONPATH": f"{REPO}:{tmp_path}", "PATH": "/usr/bin:/bin"}, timeout=300)

    first, second = run(), run()
    assert first.returncode == 0 and first.stdout.strip() == "3", first.stderr
    assert "numba: nothing of tiny_kernels is cached on this machine yet" in first.stderr
    assert second.returncode == 0 and second.stdout.strip() == "3", second.stderr
    assert "numba:" not in second.stderr
    assert list((tmp_path / "__pycache__").glob("tiny_kernels.add-*.nbi"))  # where the machine code went
