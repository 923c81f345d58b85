"""The installed package: what `import graphc` provides and where its version comes from."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import graphc as gc


def test_testing_helpers_come_with_import_graphc():
    script = (
        "import graphc as gc\n"
        "import numpy as np\n"
        "error = gc.testing.check_grad(lambda x: (x * x).sum(), [np.arange(3.0)])\n"
        "print(error < 1e-6)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "True"


def test_the_version_has_one_source():
    assert version("graphc") == gc.__version__


def test_import_graphc_loads_no_backend():
    # Backends are pulled by compile(), not pushed: a script that only builds graphs never
    # pays for importing llvmlite (about 0.1 s) or the CUDA driver code.
    script = (
        "import sys, graphc\n"
        "loaded = [m for m in ('llvmlite', 'graphc.backends.llvm', 'graphc.backends.cuda')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
