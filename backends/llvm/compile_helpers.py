"""Compile modules in helper processes while this process compiles another one.

A cold compile of a program compiles the GEMM library and the thread pool besides the
program's own module, and llvmlite holds one process-wide lock for every call, so threads
cannot overlap them. Helper processes can: each runs codegen.py on its own (it imports only
llvmlite, so a helper is ready in well under a tenth of a second) and hands back object code
and optimised IR exactly as this process would have made them. A helper that fails for any
reason only costs time: its modules are compiled here after all.

GRAPHC_COMPILE_HELPERS sets the most helper processes (0 turns them off); by default one per
core beyond the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import llvmlite

from graphc.backends.llvm import codegen
from graphc.errors import CompileError

# Long enough for any module graphc makes; a helper that takes longer is given up on, and its
# modules compile in this process.
HELPER_TIMEOUT_SECONDS = 300
# Loads codegen.py by path, so the helper imports neither graphc nor anything beside that
# file; -I keeps the user's environment and working folder out of the import path, and the
# caller's llvmlite is put back in front.
_LAUNCH = """
import importlib.util, sys
sys.path.insert(0, sys.argv[2])
spec = importlib.util.spec_from_file_location("graphc_codegen", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
module.serve(sys.stdin.buffer, sys.stdout.buffer)
"""


def helper_count(modules: int) -> int:
    """Return how many helper processes to start for modules to compile: one per spare core
    (or GRAPHC_COMPILE_HELPERS), at most one per module beyond the one compiled here."""
    configured = os.environ.get("GRAPHC_COMPILE_HELPERS")
    if configured is not None:
        if not configured.strip().isdigit():
            raise CompileError(
                f"GRAPHC_COMPILE_HELPERS must be a whole number of processes, got {configured!r}"
            )
        limit = int(configured)
    elif hasattr(os, "sched_getaffinity"):
        limit = len(os.sched_getaffinity(0)) - 1
    else:
        limit = (os.cpu_count() or 1) - 1
    if not _runs_python():
        return 0
    return max(0, min(limit, modules - 1))


def _runs_python() -> bool:
    """Return whether sys.executable starts a Python interpreter: not in a frozen application
    or a program that embeds Python (there it names the program itself, which must not be
    started again)."""
    if getattr(sys, "frozen", False) or not sys.executable:
        return False
    return Path(sys.executable).name.lower().startswith("python")


class HelperBatch:
    """Requests being compiled by helper processes, each helper taking every n-th one."""

    def __init__(self, requests: list[bytes], helpers: int) -> None:
        self._results: list[tuple[bytes, str] | None] = [None] * len(requests)
        self._threads = []
        for first in range(min(helpers, len(requests))):
            share = list(range(first, len(requests), helpers))
            thread = threading.Thread(
                target=self._run, args=(share, [requests[i] for i in share]), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def results(self) -> list[tuple[bytes, str] | None]:
        """Wait for the helpers; return each request's (object code, optimised IR), or None
        where its helper failed."""
        for thread in self._threads:
            thread.join()
        return self._results

    def _run(self, share: list[int], requests: list[bytes]) -> None:
        command = [sys.executable, "-I", "-c", _LAUNCH, codegen.__file__, _llvmlite_folder()]
        try:
            done = subprocess.run(
                command,
                input=b"".join(requests),
                capture_output=True,
                timeout=HELPER_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return
        for index, result in zip(share, codegen.replies(done.stdout, len(share)), strict=True):
            self._results[index] = result


def _llvmlite_folder() -> str:
    """Return the folder this process imported llvmlite from."""
    return str(Path(llvmlite.__file__).resolve().parent.parent)
