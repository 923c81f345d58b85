"""Imports flow one way: errors -> dtypes, dims -> types -> graph -> ops -> passes -> backends,
with the Tensor API, then nn, optim and the `graphc` namespace, on top.

Two checks. A static one reads every import statement of the package, those inside functions
included, and fails on any that reaches a higher layer, or that closes a circle among the
modules below the Tensor API. A run-time one imports each layer below the Tensor API in a fresh
interpreter where every higher layer is blocked (and `graphc/__init__.py`, which loads them
all, does not run), then differentiates and runs a graph there with the IR, the ops, the
autodiff pass and the reference backend alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

import graphc
import graphc.backends
import graphc.passes

# Each layer may import its own layer and the ones before it. A module belongs to the first
# layer with a prefix of its name; every other graphc module is in the Tensor API.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("graphc.errors", "graphc.version", "graphc.recent")),
    ("dtypes, dims", ("graphc.dtypes", "graphc.dims")),
    ("types", ("graphc.types",)),
    ("graph", ("graphc.graph",)),
    ("ops", ("graphc.ops",)),
    ("passes", ("graphc.passes",)),
    ("backends", ("graphc.backends",)),
    ("Tensor API", ()),
    ("nn, optim, onnx and the graphc namespace", ("graphc.nn", "graphc.optim", "graphc.onnx")),
]
TENSOR_API = [name for name, _ in LAYERS].index("Tensor API")
TOP = len(LAYERS) - 1


def layer_of(module: str) -> int:
    """Return the index in LAYERS of a graphc module's layer."""
    if module == "graphc":
        return TOP
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return TENSOR_API


def package_modules() -> dict[str, Path]:
    """Return every module of the package by name (graphc.passes and graphc.backends live in
    passes/ and backends/, so their folders come from the installed package)."""
    roots = {
        "graphc": Path(graphc.__path__[0]),
        "graphc.passes": Path(graphc.passes.__path__[0]),
        "graphc.backends": Path(graphc.backends.__path__[0]),
    }
    modules: dict[str, Path] = {}
    for package, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            modules.setdefault(name, path)
    return modules


MODULES = package_modules()


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """Return (line, imported graphc module) for every import statement in a module, at any
    depth (lazy imports in functions count). `from p import n` names module p.n where one
    exists, else p itself."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "graphc"]


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for line, imported in imports_of(module, path):
            graph.add_edge(module, imported, line=line)
    return graph


def _layer_name(module: str) -> str:
    return LAYERS[layer_of(module)][0]


def test_every_import_points_down_the_layers():
    graph = import_graph()
    upward = [
        f"{module}:{data['line']} imports {imported} ({_layer_name(imported)}) from the "
        f"{_layer_name(module)} layer"
        for module, imported, data in graph.edges(data=True)
        if layer_of(imported) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_nn_optim_and_onnx_use_the_public_api_only():
    # They are written like user code: no pass or backend is theirs to call.
    graph = import_graph()
    internal = [
        f"{module}:{data['line']} imports {imported}"
        for module, imported, data in graph.edges(data=True)
        if module.startswith(("graphc.nn", "graphc.optim", "graphc.onnx"))
        and imported.startswith(("graphc.passes", "graphc.backends"))
    ]
    assert not internal, "\n".join(internal)


def test_the_layers_below_the_tensor_api_import_no_circle():
    graph = import_graph()
    core = graph.subgraph(m for m in graph if layer_of(m) < TENSOR_API)
    cycles = [" -> ".join([*cycle, cycle[0]]) for cycle in nx.simple_cycles(core)]
    assert not cycles, "\n".join(cycles)


def _called_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def test_the_static_view_sees_every_import():
    # The checks above read import statements, so the package must not import by other means.
    dynamic = [
        f"{module}:{node.lineno}"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, (ast.Name, ast.Attribute))
        and getattr(node.func, "id", getattr(node.func, "attr", ""))
        in ("__import__", "import_module")
    ]
    assert not dynamic, dynamic
    assert {"graphc.ops.operand", "graphc.passes.autodiff", "graphc.backends.llvm.jit"} <= set(
        MODULES
    )


# Run in a fresh interpreter: graphc/__init__.py is replaced by a bare package (it would load
# every layer), every module of a higher layer refuses to load, then the layer's modules are
# imported. For the backends layer, a graph is also built, differentiated and run.
_ISOLATED = textwrap.dedent(
    """
    import importlib
    import importlib.abc
    import importlib.util
    import sys

    blocked, wanted, exercise = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]

    class HigherLayers(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in blocked:
                raise ImportError(f"{name} belongs to a higher layer")
            return None

    spec = importlib.util.find_spec("graphc")
    sys.modules["graphc"] = importlib.util.module_from_spec(spec)
    sys.meta_path.insert(0, HigherLayers())
    for name in wanted:
        importlib.import_module(name)

    if exercise == "yes":
        import numpy as np

        from graphc.backends.reference import ReferenceExecutable
        from graphc.dtypes import float64
        from graphc.graph import Graph
        from graphc.ops.operand import Value
        from graphc.ops.registry import make_node
        from graphc.passes import optimize
        from graphc.passes.autodiff import gradients

        x = Value(make_node("input", [], {"name": "x", "shape": (3,), "dtype": float64}))
        y = ((x * x).exp() + x.maximum(0.5)).sum((0,))
        one = make_node("constant", [], {"value": np.array(1.0)})
        (dx,) = gradients([y.node], [one], [x.node])
        graph = optimize(Graph((x.node,), (y.node, dx)))
        value = np.array([0.0, 1.0, -2.0])
        got_y, got_dx = ReferenceExecutable(graph).run([value], {})
        assert np.allclose(got_y, (np.exp(value**2) + np.maximum(value, 0.5)).sum())
        assert np.allclose(got_dx, 2 * value * np.exp(value**2) + (value > 0.5))
    print("ok")
    """
)


@pytest.mark.parametrize("layer", range(TENSOR_API), ids=lambda i: LAYERS[i][0])
def test_each_layer_below_the_tensor_api_loads_and_runs_without_the_ones_above(layer):
    wanted = [m for m in MODULES if layer_of(m) == layer]
    blocked = [m for m in MODULES if layer_of(m) > layer]
    exercise = "yes" if LAYERS[layer][0] == "backends" else "no"
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATED, ",".join(blocked), ",".join(wanted), exercise],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
