"""The on-disk compile cache survives damage: a truncated, bit-flipped, empty, mislabelled or
swapped entry is detected, thrown away and compiled again, in a fresh process each time, and
processes writing one entry at the same time leave a whole, valid entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import jit, python_entry

# Compiles one of two graphs (a or b), optionally waiting until a start time so that several
# processes compile at once, and checks the result against numpy. A fresh process starts with
# an empty in-memory cache, so the compile goes to the disk cache.
SCRIPT = """
import sys, time
import numpy as np
import graphc as gc

graph, start = sys.argv[1], float(sys.argv[2])
scale = {"a": 2.0, "b": -3.0}[graph]
x = gc.input("x", ("B", 4))
while time.time() < start:
    time.sleep(0.001)
f = gc.compile([x], [(x * scale + 1.0).tanh().sum(1)], backend="llvm")
data = np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(3, 4)
np.testing.assert_allclose(f(data), np.tanh(data * scale + 1.0).sum(1), rtol=1e-5)
print("correct")
"""


def _environment(folder: Path, threads: int = 1) -> dict[str, str]:
    """One thread by default: the graph's module is then the only entry (no thread pool)."""
    environment = dict(
        os.environ, GRAPHC_CACHE_DIR=str(folder), GRAPHC_CACHE="1", GRAPHC_NUM_THREADS=str(threads)
    )
    environment.pop("GRAPHC_DUMP", None)
    return environment


def _start(folder: Path, graph: str, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, graph, str(start)],
        env=_environment(folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, f"exit status {process.returncode}:\n{output}"
    assert "correct" in output, output


def _python(
    script: str, environment: dict[str, str], *arguments: str
) -> subprocess.CompletedProcess:
    """Run script in a fresh interpreter and return what it did."""
    return subprocess.run(
        [sys.executable, "-c", script, *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _assert_correct(process: subprocess.CompletedProcess) -> None:
    assert process.returncode == 0, process.stdout + process.stderr
    assert "correct" in process.stdout, process.stdout


def _compile_in_fresh_process(folder: Path, graph: str) -> None:
    _finish(_start(folder, graph))


def _entries(folder: Path) -> list[Path]:
    """Return the folder's entries but the Python entry's, which every process loads."""
    builtin = python_entry.NAMES[True].encode()
    return sorted(path for path in folder.glob("*.o") if builtin not in path.read_bytes())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Return the cache entry of graph a and of graph b, each written by a fresh process."""
    entries = {}
    for graph in ("a", "b"):
        folder = tmp_path_factory.mktemp(f"cache_{graph}")
        _compile_in_fresh_process(folder, graph)
        (entries[graph],) = _entries(folder)
    return entries


def _copy_cache(entry: Path, folder: Path) -> Path:
    """Copy the cache folder holding entry into folder; return the entry's copy."""
    shutil.copytree(entry.parent, folder, dirs_exist_ok=True)
    return folder / entry.name


def _assert_intact(entry: Path) -> None:
    """The entry holds its own key, and its object code and IR match their checksums."""
    assert jit._parse_entry(entry.stem, entry.read_bytes()) is not None


def _header_end(data: bytes) -> int:
    return data.index(b"\n", data.index(b"\n") + 1) + 1


def _truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _drop_last_byte(data: bytes) -> bytes:
    return data[:-1]


def _flip_object_bytes(data: bytes) -> bytes:
    damaged = bytearray(data)
    start = _header_end(data)
    for position in (start + 16, start + 200, (start + len(data)) // 2):
        damaged[position] ^= 0xFF
    return bytes(damaged)


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


def _empty(data: bytes) -> bytes:
    return b""


def _garbage_header(data: bytes) -> bytes:
    return b"\x7fELF garbage {not json\n" + data[_header_end(data) :]


def _no_header(data: bytes) -> bytes:
    return data[_header_end(data) :]


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_half,
        _drop_last_byte,
        _flip_object_bytes,
        _flip_last_byte,
        _empty,
        _garbage_header,
        _no_header,
    ],
    ids=lambda damage: damage.__name__.strip("_"),
)
def test_a_damaged_entry_is_recompiled(tmp_path, pristine, damage):
    entry = _copy_cache(pristine["a"], tmp_path)
    entry.write_bytes(damage(entry.read_bytes()))
    _compile_in_fresh_process(tmp_path, "a")
    assert _entries(tmp_path) == [entry]
    _assert_intact(entry)


def test_swapped_entries_are_not_loaded_for_the_wrong_graph(tmp_path, pristine):
    entry_a, entry_b = (_copy_cache(pristine[graph], tmp_path) for graph in ("a", "b"))
    data_a, data_b = entry_a.read_bytes(), entry_b.read_bytes()
    entry_a.write_bytes(data_b)
    entry_b.write_bytes(data_a)
    _compile_in_fresh_process(tmp_path, "a")
    _compile_in_fresh_process(tmp_path, "b")
    for entry in (entry_a, entry_b):
        _assert_intact(entry)


def test_processes_compiling_one_graph_at_once_leave_a_valid_entry(tmp_path):
    start = time.time() + 3.0  # after every process has imported graphc
    processes = [_start(tmp_path, "a", start) for _ in range(3)]
    for process in processes:
        _finish(process)
    (entry,) = _entries(tmp_path)
    _assert_intact(entry)
    assert not list(tmp_path.glob("tmp*")), "a temporary file was left behind"
    _compile_in_fresh_process(tmp_path, "a")


def test_stale_temporary_files_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_CACHE", "1")
    monkeypatch.setenv("GRAPHC_NUM_THREADS", "1")  # the graph's module is the only entry
    monkeypatch.setattr(jit, "_cleaned_folders", set())
    stale, recent = tmp_path / "tmpk3x9.part", tmp_path / "tmpq1w2.part"
    foreign = tmp_path / "notes.txt"  # not ours, however old
    for path in (stale, recent, foreign):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    for path in (stale, foreign):
        os.utime(path, (hour_ago, hour_ago))
    x = gc.input("x", (5,))
    offset = float(time.time_ns() % 1_000_003)  # a graph no cache holds yet
    f = gc.compile([x], [x * 0.5 + offset], backend="llvm")
    data = np.arange(5, dtype=np.float32)
    np.testing.assert_allclose(f(data), data * 0.5 + np.float32(offset))
    assert not stale.exists()
    assert recent.exists() and foreign.exists()
    (entry,) = _entries(tmp_path)
    _assert_intact(entry)


def test_a_second_process_takes_the_module_from_the_disk_cache(tmp_path):
    _finish(_start(tmp_path, "a"))
    # The second process may not optimise anything: each module must come from the disk.
    no_optimising = (
        "import llvmlite.binding as llvm\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('optimised a module the disk cache holds')\n"
        "llvm.create_pass_builder = refuse\n"
    )
    _assert_correct(_python(no_optimising + SCRIPT, _environment(tmp_path), "a", "0"))


MATMUL_SCRIPT = """
import numpy as np
import graphc as gc

x = gc.input("x", ("B", 8))
w = gc.Variable(np.linspace(-1.0, 1.0, 24, dtype=np.float32).reshape(8, 3))
big = gc.input("big", (2048, 1024))  # large enough to be split over the thread pool
f = gc.compile([x, big], [(x @ w).relu().sum(0), (big * 2.0).sum(1)], backend="llvm")
data = np.linspace(-2.0, 2.0, 40, dtype=np.float32).reshape(5, 8)
large = np.linspace(-1.0, 1.0, 2048 * 1024, dtype=np.float32).reshape(2048, 1024)
relu_sums, doubled = f(data, large)
np.testing.assert_allclose(relu_sums, np.maximum(data @ w.numpy(), 0).sum(0), rtol=1e-5)
np.testing.assert_allclose(doubled, (large * 2.0).sum(1), rtol=1e-4, atol=1e-4)
print("correct")
"""


def test_a_second_process_builds_no_ir_for_cached_modules(tmp_path):
    """With every module on disk, no IR is built or parsed (the graph's, the GEMM's, the
    thread pool's): the described modules load as object code."""
    _assert_correct(_python(MATMUL_SCRIPT, _environment(tmp_path, threads=2)))
    no_building = (
        "import llvmlite.binding as llvm\n"
        "from llvmlite import ir\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('built IR for a module the disk cache holds')\n"
        "parse = llvm.parse_assembly\n"
        "def parse_nothing(text, *args):\n"
        "    assert text == '', 'parsed IR for a module the disk cache holds'\n"
        "    return parse(text, *args)\n"
        "ir.Module.__init__ = refuse\n"
        "llvm.parse_assembly = parse_nothing\n"
    )
    assert len(_entries(tmp_path)) == 3
    _assert_correct(_python(no_building + MATMUL_SCRIPT, _environment(tmp_path, threads=2)))


@pytest.mark.parametrize("scale", [2.0, -3.0, 2.0000002])
def test_described_modules_differ_with_any_constant(tmp_path, monkeypatch, scale):
    """Graphs that differ only in a constant get their own entries, never another's code."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GRAPHC_CACHE", "1")
    data = np.linspace(-2.0, 2.0, 8, dtype=np.float32)
    for value in (2.0, -3.0, 2.0000002):
        x = gc.input("x", (8,))
        gc.compile([x], [x * value], backend="llvm")(data)
    jit.clear_memory_cache()
    x = gc.input("x", (8,))
    f = gc.compile([x], [x * scale], backend="llvm")
    np.testing.assert_array_equal(f(data), data * np.float32(scale))
    assert "define" in f.llvm_ir() and f.asm()


def test_a_description_key_changes_with_graphcs_sources(monkeypatch):
    key = jit.module_key("description", described=True)
    assert key != jit.module_key("description")
    monkeypatch.setattr(jit, "source_fingerprint", lambda: "other sources")
    assert jit.module_key("description", described=True) != key
