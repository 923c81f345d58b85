"""compile(): turn tensors into a callable Function on a backend.

A Function validates what it is fed (count, dtype, shape, symbolic dims bound consistently)
and the out= arrays it writes to (dtype, shape, and memory shared with an input, another out=
array or a Variable), runs the backend's executable once per call, and applies Variable
updates only after every output was computed, so a failed call leaves all state as it was.

What the checks decide depends only on the arrays' types, dtypes, shapes and layouts, so a
Function remembers it for the kinds of call it saw last (the backend's runner bound to the
call's symbol sizes, keyed by those properties) and a call of a known kind runs with only the
checks that depend on the arrays' memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from graphc.dims import Sym, evaluate_dim, format_shape, is_static, static_shape
from graphc.errors import GraphError, InputError, located, user_location
from graphc.graph import Graph, Node
from graphc.kernel_info import KernelInfo
from graphc.ops import get_op
from graphc.overlap import VariableMemory
from graphc.passes import optimize as optimize_graph
from graphc.recent import RecentValues
from graphc.tensor import Tensor
from graphc.types import TensorType

if TYPE_CHECKING:
    from graphc.backends.calls import Runner

# The kinds of call (dtypes, shapes and layouts of the arrays) a Function remembers.
CALLS_KEPT = 16


class Executable(Protocol):
    """What a backend returns for a graph. run(feeds, bindings) returns the outputs and applies
    the updates to the variables, all of them or (on an error) none.

    A backend may also give its executable `bind(bindings, steps=None) -> Runner`: run with
    what the sizes decide worked out once, and with `steps`, that many steps per call over
    arrays stacked along a leading dim (needed by Function.repeat)."""

    def run(
        self,
        feeds: Sequence[np.ndarray],
        bindings: Mapping[str, int],
        out: Sequence[np.ndarray] | None = None,
    ) -> list[np.ndarray]: ...


BackendFactory = Callable[[Graph], Executable]
_BACKENDS: dict[str, BackendFactory] = {}
_DEFAULT_BACKEND = ["llvm"]


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make a backend available to compile() under a name."""
    _BACKENDS[name] = factory


def available_backends() -> tuple[str, ...]:
    """Return the names of the registered backends."""
    _load_builtin_backends()
    return tuple(_BACKENDS)


def default_backend() -> str:
    """Return the backend used when compile() is given none."""
    return _DEFAULT_BACKEND[0]


def set_default_backend(name: str) -> None:
    """Choose the backend used by compile() and by .numpy()/.item()/.eval()."""
    _load_builtin_backends()
    if name not in _BACKENDS:
        raise GraphError(f"unknown backend {name!r}; available: {', '.join(_BACKENDS)}")
    _DEFAULT_BACKEND[0] = name


def set_flush_denormal(mode: bool) -> bool:
    """Flush denormal floats to zero (results and inputs) on the calling thread when mode is
    True, as torch.set_flush_denormal does; return whether the CPU supports it (x86 only).

    Training long on data a model already fits makes denormals, which x86 computes ~100x
    slower: an MLP Adam step went from 0.35 to 1.2-1.8 ms. The mode is the thread's (numpy
    on this thread follows it too); the LLVM backend's pool threads follow the calling one."""
    from graphc.backends.llvm.runtime_library import flush_denormals

    return flush_denormals(bool(mode))


def _cpu_vector_bits(backend: str) -> int | None:
    """Return the width of the vectors of the CPU target the LLVM backend compiles for (the
    host's, or GRAPHC_CPU's), which some rewrites follow; None for any other backend."""
    if backend != "llvm":
        return None
    from graphc.backends.llvm.target import selected_target

    return selected_target().vector_bits


def _load_builtin_backends() -> None:
    # Loaded on first use, so `import graphc` does not load LLVM; a backend registered by the
    # user under a built-in name keeps its place.
    from graphc.backends import BACKENDS

    for name, factory in BACKENDS.items():
        _BACKENDS.setdefault(name, factory)


def _as_node(t: Any, role: str) -> Node:
    if not isinstance(t, Tensor):
        raise GraphError(
            located(f"{role} must be a graphc Tensor, got {type(t).__name__}", user_location())
        )
    return t.node


def build_graph(
    inputs: Iterable[Tensor],
    outputs: Iterable[Tensor],
    updates: Mapping[Tensor, Any] | Iterable[tuple[Tensor, Any]] | None = None,
) -> Graph:
    """Return the Graph computing outputs from inputs, checking inputs and updates."""
    from graphc.math_ops import as_tensor, cast

    input_nodes = tuple(_as_node(t, "each input") for t in inputs)
    for node in input_nodes:
        if node.op != "input":
            raise GraphError(
                located(
                    f"inputs must be placeholders made by gc.input(), got {Tensor(node)!r}",
                    user_location(),
                )
            )
    names = [n.name for n in input_nodes]
    if len(set(names)) != len(names):
        raise GraphError(located(f"inputs have repeated names: {names}", user_location()))
    output_nodes = tuple(_as_node(as_tensor(t), "each output") for t in outputs)
    pairs = list(updates.items() if isinstance(updates, Mapping) else updates or [])
    update_nodes = []
    for variable, value in pairs:
        var_node = _as_node(variable, "each updated variable")
        if var_node.op != "variable":
            raise GraphError(
                located(f"only Variables can be updated, got {variable!r}", user_location())
            )
        value = cast(as_tensor(value), var_node.type.dtype)
        _check_update_shape(var_node, value.node)
        update_nodes.append((var_node, value.node))
    if len({v.id for v, _ in update_nodes}) != len(update_nodes):
        raise GraphError(located("a variable is updated twice", user_location()))
    graph = Graph(input_nodes, output_nodes, tuple(update_nodes))
    fed = {n.id for n in input_nodes}
    for node in graph.nodes:
        if node.op == "input" and node.id not in fed:
            raise GraphError(
                located(
                    f"the outputs depend on input {node.name!r} {node.type}, which is not fed; "
                    "add it to inputs (or to the feed dict of .eval())",
                    user_location(),
                )
            )
    return graph


def _check_update_shape(var_node: Node, value: Node) -> None:
    from graphc.dims import dims_equal

    want, got = var_node.type.shape, value.type.shape
    if len(want) != len(got) or not all(map(dims_equal, want, got)):
        raise GraphError(
            located(
                f"update of variable {var_node.name!r} {var_node.type} has shape "
                f"{format_shape(got)}",
                user_location(),
            )
        )


def compile(  # noqa: A001 - the user-facing name, as in the design
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor] | Tensor,
    updates: Mapping[Tensor, Any] | None = None,
    backend: str | None = None,
    *,
    optimize: bool = True,
) -> Function:
    """Return a Function computing outputs from fed inputs and applying updates after each call."""
    single = isinstance(outputs, Tensor)
    output_list = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    graph = build_graph(inputs, output_list, updates)
    name = backend or default_backend()
    _load_builtin_backends()
    if name not in _BACKENDS:
        raise GraphError(f"unknown backend {name!r}; available: {', '.join(_BACKENDS)}")
    if optimize:
        graph = optimize_graph(graph, vector_bits=_cpu_vector_bits(name))
    return Function(graph, _BACKENDS[name](graph), name, single or len(output_list) == 1)


class Function:
    """A compiled graph: call it with one array per input; returns the outputs as arrays."""

    def __init__(
        self,
        graph: Graph,
        executable: Executable,
        backend: str,
        single: bool,
        steps: int | None = None,
    ) -> None:
        program = getattr(executable, "program", None)
        if program is not None:
            graph = graph.with_kernels(
                {node_id: kernel.name for kernel in program.kernels for node_id in kernel.covers}
            )
        self.graph = graph
        self.steps = steps
        self._guards = run_time_bounds(graph)
        self.backend = backend
        self._executable = executable
        self._single = single
        self._inputs = tuple(_stacked_input(node, steps) for node in graph.inputs)
        self._out_specs = [_ArraySpec(_stacked(node.type, steps)) for node in graph.outputs]
        self._quick_inputs = _quick_input_checks(self._inputs)
        self._memory = VariableMemory(graph)
        # The backend's runners screen a call's memory natively when called with screen=True
        # and return None, having run nothing, where arrays may share it (see calls.Runner):
        # a call that shares none skips the checks of _run.
        self._screened = getattr(executable, "screens_memory", False)
        self._calls: RecentValues[Runner] = RecentValues(CALLS_KEPT)
        # The kind of the latest call and its runner: a run of calls of one kind, the usual
        # case, finds it without touching the recent-calls order.
        self._last: tuple[tuple | None, Runner | None] = (None, None)

    def __repr__(self) -> str:
        names = ", ".join(str(n.name) for n in self.graph.inputs)
        steps = "" if self.steps is None else f", {self.steps} steps per call"
        return f"Function({names}) -> {len(self.graph.outputs)} outputs on {self.backend!r}{steps}"

    def __call__(self, *arrays: Any, out: Any = None) -> Any:
        """Run the graph on arrays (one per input); return the output, or a tuple of them.

        `out` may give preallocated arrays that receive the results: one array, or a tuple
        with one per output, each writeable, C-contiguous, of the output's dtype and shape.
        The call then returns those arrays, holding what it would have returned without
        `out`. Memory shared between an `out` array and something else is handled as a
        user of numpy and PyTorch would expect:

        - an `out` array that overlaps a fed array (`f(x, out=x)`) is computed into a
          temporary and copied in after the call, as numpy does, so every input is read
          before it is overwritten;
        - an `out` array that overlaps another `out` array, or the memory of a Variable the
          Function reads or updates, raises InputError naming both before anything runs:
          two results cannot land in one place, and Variables change only through updates.

        A fed array that shares memory with a Variable the call updates is read as it was
        when the call began. A call that raises changes no Variable.
        """
        key = _call_kind(arrays, out)
        last_key, run = self._last
        if run is None or key != last_key or key is None:
            run = self._calls.recall(key)
            if run is None:
                return self._checked_call(arrays, out, key)
            self._last = (key, run)
        targets = None if out is None else [out] if type(out) is np.ndarray else list(out)
        if self._screened:
            outputs = run(arrays, targets, True)  # type: ignore[call-arg]
            if outputs is not None:
                return self._results(outputs)
        return self._run(run, arrays, targets)

    def repeat(self, steps: int) -> Function:
        """Return a Function that runs `steps` calls of this one per call: one native call on
        the LLVM backend, which loops in its entry point.

        Every input and output gets a leading dim of `steps`: step i reads `x[i]` of each fed
        `x`, sees the Variables as step i-1 left them, and its outputs are `output[i]`. So
        `f.repeat(k)(xs, ys)` returns the k results of `f(xs[i], ys[i])` stacked, and leaves
        the Variables as those k calls would. Symbolic dims bind as in one step (every step
        of a call has the same sizes), out= arrays are stacked likewise, and a call that
        fails at any step changes no Variable.
        """
        if self.steps is not None:
            raise GraphError(
                f"this Function already runs {self.steps} steps per call; call repeat() on the "
                "Function of one step"
            )
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise GraphError(f"repeat() needs a positive int number of steps, got {steps!r}")
        if getattr(self._executable, "bind", None) is None:
            raise GraphError(f"the {self.backend!r} backend cannot run several steps per call")
        return Function(self.graph, self._executable, self.backend, self._single, int(steps))

    def _checked_call(self, arrays: tuple, out: Any, key: tuple | None) -> Any:
        """Run a call of a kind not seen lately: every check, then remember the runner."""
        feeds, bindings = self.validate(arrays)
        targets = None if out is None else self._output_targets(out, bindings)
        run = self._runner(bindings)
        if key is not None:
            self._last = (key, self._calls.remember(key, run))
        return self._run(run, feeds, targets)

    def _runner(self, bindings: dict[str, int]) -> Runner:
        bind = getattr(self._executable, "bind", None)
        if bind is not None:
            return bind(bindings, self.steps)
        run = self._executable.run
        return lambda feeds, out: run(feeds, bindings, out)

    def _run(self, run: Runner, feeds: Sequence[np.ndarray], targets: list | None) -> Any:
        """Check the arrays' memory against the Variables' and each other, then run."""
        memory = self._memory
        if memory.updated:
            feeds = memory.detached(feeds)
        if targets is None:
            outputs = run(feeds, None)
        else:
            staged = memory.check_outputs(targets, feeds)
            outputs = (
                self._run_staged(run, targets, feeds, staged) if staged else run(feeds, targets)
            )
        return self._results(outputs)

    def _results(self, outputs: Sequence[np.ndarray] | None) -> Any:
        """Return what a call returns: None, its one output or a tuple of outputs."""
        if not outputs:
            return None
        return outputs[0] if self._single else tuple(outputs)

    @staticmethod
    def _run_staged(
        run: Runner, targets: list[np.ndarray], feeds: Sequence[np.ndarray], staged: list[int]
    ) -> list[np.ndarray]:
        """Run with targets as the output arrays, those that overlap an input staged through
        a temporary."""
        temporaries = list(targets)
        for position in staged:
            temporaries[position] = np.empty(targets[position].shape, targets[position].dtype)
        run(feeds, temporaries)
        for position in staged:
            np.copyto(targets[position], temporaries[position])
        return targets

    def _output_targets(self, out: Any, bindings: dict[str, int]) -> list[np.ndarray]:
        arrays = list(out) if isinstance(out, (tuple, list)) else [out]
        if len(arrays) != len(self._out_specs):
            raise InputError(f"out= needs {len(self._out_specs)} arrays, got {len(arrays)}")
        for position, (spec, array) in enumerate(zip(self._out_specs, arrays, strict=True)):
            if not spec.accepts(array, bindings):
                got = (
                    f"a {array.dtype} array of shape {format_shape(array.shape)}"
                    if isinstance(array, np.ndarray)
                    else f"a {type(array).__name__}"
                )
                raise InputError(
                    f"out[{position}] must be a writeable C-contiguous {spec.dtype_name} "
                    f"array of shape {format_shape(spec.shape(bindings))}, got {got}"
                )
        return arrays

    def memory_stats(self) -> dict[str, int]:
        """Return the backend's memory figures (the LLVM backend: arena bytes)."""
        stats = getattr(self._executable, "memory_stats", None)
        return stats() if stats else {}

    def kernels(self) -> list[KernelInfo]:
        """Return each kernel's name and the graph nodes it computes (backends that fuse), and
        on the CUDA backend its launch geometry; each unpacks as (name, nodes)."""
        program = getattr(self._executable, "program", None)
        if program is None:
            return [KernelInfo(node.op, [node]) for node in self.graph.nodes if node.op != "input"]
        nodes = {n.id: n for n in self.graph.nodes}
        geometry: Mapping[str, Any] = getattr(self._executable, "launch_geometry", dict)()
        return [
            KernelInfo(
                kernel.name, [nodes[i] for i in kernel.covers], geometry.get(kernel.name, ())
            )
            for kernel in program.kernels
        ]

    def llvm_ir(self) -> str:
        """Return the optimised LLVM IR (LLVM backend only)."""
        return self._compiled_module().optimized_ir

    def asm(self) -> str:
        """Return the generated assembly (LLVM backend only)."""
        return self._compiled_module().assembly()

    def ptx(self, arch: str | None = None) -> str:
        """Return the PTX of the kernels for a GPU architecture such as "sm_90" (default: the
        device's, or sm_80 under the emulator); CUDA backend only."""
        ptx = getattr(self._executable, "ptx", None)
        if ptx is None:
            raise GraphError(
                f"this Function runs on the {self.backend!r} backend, which has no PTX"
            )
        return ptx(arch)

    def _compiled_module(self) -> Any:
        compiled = getattr(self._executable, "compiled", None)
        if compiled is None:
            raise GraphError(
                f"this Function runs on the {self.backend!r} backend, which has no LLVM IR"
            )
        return compiled

    def validate(self, arrays: Sequence[Any]) -> tuple[list[np.ndarray], dict[str, int]]:
        """Return the fed arrays as checked contiguous arrays and the symbol bindings."""
        inputs = self._inputs
        if len(arrays) != len(inputs):
            names = ", ".join(str(n.name) for n in inputs)
            raise InputError(f"expected {len(inputs)} arrays ({names}), got {len(arrays)}")
        bindings = self._quick_bindings(arrays)
        if bindings is not None:
            check_run_time_bounds(self._guards, bindings)
            return list(arrays), bindings
        feeds = [_checked_array(node, value) for node, value in zip(inputs, arrays, strict=True)]
        if self.steps is not None:
            _check_steps(inputs, feeds, self.steps)
        bindings = bind_symbols(inputs, feeds)
        check_run_time_bounds(self._guards, bindings)
        return feeds, bindings

    def _quick_bindings(self, arrays: Sequence[Any]) -> dict[str, int] | None:
        """Return the symbol bindings when every array is a plain C-contiguous ndarray of its
        input's dtype and shape (the common call), else None for the general checks, which
        also word the error."""
        if self._quick_inputs is None:
            return None
        bindings: dict[str, int] = {}
        for (dtype, dims), value in zip(self._quick_inputs, arrays, strict=True):
            if not (
                type(value) is np.ndarray
                and value.dtype == dtype
                and value.ndim == len(dims)
                and value.flags.c_contiguous
            ):
                return None
            for dim, size in zip(dims, value.shape, strict=True):
                if type(dim) is int:
                    if dim != size:
                        return None
                elif bindings.setdefault(dim, size) != size:
                    return None
        return bindings


def _quick_input_checks(inputs: Sequence[Node]) -> list[tuple[np.dtype, tuple]] | None:
    """Return each input's dtype and dims (sizes, and symbol names where a dim is exactly one
    symbol) for Function._quick_bindings, or None when a dim is an expression of symbols,
    which only bind_symbols evaluates."""
    checks = []
    for node in inputs:
        dims: list[int | str] = []
        for dim in node.type.shape:
            if isinstance(dim, int):
                dims.append(dim)
                continue
            symbol = dim.single_symbol
            if symbol is None:
                return None
            dims.append(symbol)
        checks.append((np.dtype(node.type.dtype.numpy), tuple(dims)))
    return checks


def _call_kind(arrays: tuple, out: Any) -> tuple | None:
    """Return what every check of a call depends on: each fed array's dtype and shape, then
    (after a None) each out= array's; or None unless every fed array is a plain C-contiguous
    ndarray and every out= array also writeable and aligned, the calls whose checks are
    reused."""
    kind: tuple = ()
    for array in arrays:
        if type(array) is not np.ndarray or not array.flags.c_contiguous:
            return None
        kind += (array.dtype, array.shape)
    if out is None:
        return kind
    if type(out) is np.ndarray:
        return (*kind, None, out.dtype, out.shape) if out.flags.carray else None
    kind += (None,)
    for target in out if type(out) in (tuple, list) else (out,):
        # carray: C-contiguous, aligned and writeable (an unaligned one takes the full checks)
        if type(target) is not np.ndarray or not target.flags.carray:
            return None
        kind += (target.dtype, target.shape)
    return kind


def _stacked(declared: TensorType, steps: int | None) -> TensorType:
    """Return the type of `steps` values of a type stacked along a new leading dim (the type
    itself when steps is None)."""
    return declared if steps is None else TensorType((steps, *declared.shape), declared.dtype)


def _stacked_input(node: Node, steps: int | None) -> Node:
    """Return the input node a Function of `steps` steps per call checks its feed against."""
    if steps is None:
        return node
    stacked = _stacked(node.type, steps)
    return Node(node.op, node.inputs, node.attrs, stacked, node.location, node.name)


def _check_steps(inputs: Sequence[Node], feeds: Sequence[np.ndarray], steps: int) -> None:
    """Raise InputError for a fed array whose leading dim is not the number of steps."""
    for node, array in zip(inputs, feeds, strict=True):
        if array.shape[0] != steps:
            raise InputError(
                f"input {node.name!r} is {node.type}: a Function made by repeat({steps}) takes "
                f"each input's {steps} steps stacked along a new leading dim, got an array of "
                f"shape {format_shape(array.shape)}"
            )


class _ArraySpec:
    """What an out= array must be for one output: its dtype and (maybe symbolic) shape."""

    __slots__ = ("dtype", "dtype_name", "dims", "static_shape")

    def __init__(self, declared: TensorType) -> None:
        self.dtype = np.dtype(declared.dtype.numpy)
        self.dtype_name = declared.dtype.name
        self.dims = declared.shape
        self.static_shape = static_shape(self.dims) if is_static(self.dims) else None

    def shape(self, bindings: Mapping[str, int]) -> tuple[int, ...]:
        """Return the output's shape for these symbol sizes."""
        if self.static_shape is not None:
            return self.static_shape
        return tuple(evaluate_dim(d, bindings) for d in self.dims)

    def accepts(self, array: Any, bindings: Mapping[str, int]) -> bool:
        """Return whether array can receive the output."""
        if not isinstance(array, np.ndarray) or array.dtype != self.dtype:
            return False
        flags = array.flags
        return flags.c_contiguous and flags.writeable and array.shape == self.shape(bindings)


def _checked_array(node: Node, value: Any) -> np.ndarray:
    declared: TensorType = node.type
    hint = ""
    if isinstance(value, Tensor):
        raise InputError(f"input {node.name!r} must be fed a numpy array, got {value!r}")
    if isinstance(value, np.ma.MaskedArray):
        raise InputError(
            f"input {node.name!r} {declared} was fed a masked array; a graph has no masked "
            "values, so feed .filled(value) (masked entries replaced) or .data (ignoring the mask)"
        )
    if isinstance(value, np.ndarray):
        if type(value) is not np.ndarray:
            # A subclass (np.matrix, np.memmap) would bring its own operators into the
            # reference backend; a plain view of its memory is what every backend reads.
            hint = " (an np.matrix is always 2-d)" if isinstance(value, np.matrix) else ""
            value = np.asarray(value)
        if value.dtype != declared.dtype.numpy:
            raise InputError(
                f"input {node.name!r} is {declared}, got an array of dtype {value.dtype}; "
                f"convert it with .astype(np.{declared.dtype.numpy})"
            )
        array = value
    else:
        if isinstance(value, np.generic):
            # The Python number it holds is range-checked by the conversion below, where
            # numpy would wrap an np.int64 into int32 silently.
            value = value.item()
        try:
            array = np.asarray(value, dtype=declared.dtype.numpy)
        except OverflowError as error:
            raise InputError(
                f"input {node.name!r} {declared}: the value does not fit in "
                f"{declared.dtype.name} ({error})"
            ) from None
        except (TypeError, ValueError) as error:
            raise InputError(
                f"input {node.name!r} {declared}: cannot convert value: {error}"
            ) from None
    if array.ndim != declared.ndim:
        raise InputError(
            f"input {node.name!r} is {declared} ({declared.ndim}-d), got an array of shape "
            f"{format_shape(array.shape)}{hint}"
        )
    return array if array.flags.c_contiguous else np.array(array, order="C")


def bind_symbols(inputs: Sequence[Node], feeds: Sequence[np.ndarray]) -> dict[str, int]:
    """Return symbol -> size from the fed shapes, raising InputError on any inconsistency."""
    bindings: dict[str, int] = {}
    bound_by: dict[str, str] = {}
    for node, array in zip(inputs, feeds, strict=True):
        for axis, (dim, size) in enumerate(zip(node.type.shape, array.shape, strict=True)):
            symbol = dim.single_symbol if isinstance(dim, Sym) else None
            if symbol is not None and symbol not in bindings:
                bindings[symbol] = size
                bound_by[symbol] = f"input {node.name!r} dim {axis}"
    for node, array in zip(inputs, feeds, strict=True):
        for axis, (dim, size) in enumerate(zip(node.type.shape, array.shape, strict=True)):
            expected = evaluate_dim(dim, bindings)
            if expected != size:
                source = ""
                if isinstance(dim, Sym):
                    source = "; " + ", ".join(
                        f"{s}={bindings[s]} from {bound_by[s]}" for s in sorted(dim.symbols)
                    )
                wanted = f"{dim} = {expected}" if isinstance(dim, Sym) else str(dim)
                raise InputError(
                    f"input {node.name!r} {node.type}: dim {axis} should be {wanted}, "
                    f"got {size} (array shape {format_shape(array.shape)}){source}"
                )
    return bindings


def run_time_bounds(graph: Graph) -> list[Callable[[Mapping[str, int]], None]]:
    """Return the checks that depend on the symbol sizes of a call (`OpDef.call_check`):
    slices and pads whose bounds are symbolic, and reductions that need an element (max,
    argmax) over a symbolic dim."""
    checks = []
    for node in graph.nodes:
        rule = get_op(node.op).call_check
        check = rule(node) if rule is not None else None
        if check is not None:
            checks.append(check)
    return checks


def check_run_time_bounds(
    checks: Sequence[Callable[[Mapping[str, int]], None]], bindings: Mapping[str, int]
) -> None:
    """Raise IndexingError if a symbolic slice or pad falls outside its input, or a max or
    argmax reduces an empty dim, for these sizes."""
    for check in checks:
        check(bindings)
