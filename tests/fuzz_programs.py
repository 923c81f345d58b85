"""Random well-typed graphc programs for the differential fuzzer (test_fuzz.py).

A program comes from one seed: the same seed always gives the same program, input values and
batch sizes. It is a list of steps `vK = <expression>`, each written twice, with graphc's API
and with PyTorch's, so one program runs on every graphc backend and in PyTorch. The generator
builds each step's graphc tensor as it goes and reads its shape and dtype back, so graphc's own
type rules decide what a step is; the generator's shape choices only have to be valid.

Every value carries two facts that keep the answers of correct backends comparable:

- `bound`, a rough upper bound of |value|: ops that grow values (exp, square, prod, matmul,
  pow) only apply while the result stays moderate, and log, sqrt and division get safe
  operands (`log(|x| + 1)`, `sqrt(|x| + 0.25)`, `x / (|y| + 1)`), so results are finite;
- `exact`, whether every backend computes the value bit for bit (small integers and multiples
  of 0.5 under +, -, *, max/min and movement ops). Only exact values feed discontinuous ops
  (floor, round, sign, ==, float-to-int casts, floordiv, mod, argmax), so a last-bit difference
  cannot flip their result.

`python tests/fuzz_programs.py SEED` prints a program as a standalone graphc script.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import graphc as gc

FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
NUMERIC = FLOATS + INTS
SYMBOL = "B"
SMALL_BATCHES = (2, 3, 4, 5, 6)  # the second size of a symbolic program's batch (the first is 1)
# A third, large run feeds this many elements to the largest batched input, so that big kernels
# are split across threads (the LLVM backend's threshold is 2**20 elements times a cost).
LARGE_RUN_ELEMENTS = 1 << 18
# Sizes of static dims, and the largest static size of a value. Some programs take wide sizes,
# so that vectorised loops run full vectors and remainders.
DIMS = (1, 2, 2, 3, 3, 4, 4, 5, 6)
MAX_ELEMENTS = 144
WIDE_DIMS = (1, 3, 7, 8, 9, 16, 17, 33)
WIDE_MAX_ELEMENTS = 1200
MAX_BOUND = 1e4  # growing ops stop here
EXACT_BOUND = 1024.0  # integral and half-integral values stay exact below this
FRACTIONS = {"symbolic": 0.3, "grad": 0.3, "wide": 0.2, "float64": 0.25, "large_run": 0.35}

# Relative weights of the step kinds.
KIND_WEIGHTS = {
    "unary": 14,
    "binary": 16,
    "compare_where": 8,
    "cast": 5,
    "reduce": 12,
    "softmax": 4,
    "matmul": 7,
    "movement": 10,
    "index": 9,
    "element_read": 8,
    "concat": 4,
    "gather": 3,
    "pad": 3,
    "expand": 3,
}
# Finer constructs than the step kinds, which KNOWN_FAILURES in test_fuzz.py may exclude.
CONSTRUCTS = {
    "output_element_read": "an output next to a function of one of its elements: [y, y - y[3]]",
}

Dim = int | str  # a static size, or the text of a symbolic one ("B", "B*4", "B+2")


@dataclass(frozen=True)
class Input:
    """A program input: a gc.input placeholder, or a gc.Variable when `variable` is set."""

    name: str
    shape: tuple[Dim, ...]  # only "B" as a symbolic dim
    dtype: str
    domain: str  # "real" | "halves" | "grid" | "bool" | "index" (integers in [low, high))
    low: int = 0
    high: int = 0
    variable: bool = False

    def make_array(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """Return random values for this input, with the symbolic dim bound to batch."""
        shape = tuple(batch if isinstance(d, str) else d for d in self.shape)
        if self.domain == "bool":
            values = rng.random(shape) < 0.5
        elif self.domain == "index":
            values = rng.integers(self.low, self.high, shape)
        elif self.domain == "grid":
            values = rng.integers(-5, 6, shape)
        elif self.domain == "halves":
            values = rng.integers(-8, 9, shape) / 2
        else:
            values = rng.standard_normal(shape)
        return np.asarray(values, dtype=np.dtype(self.dtype))

    def random_text(self) -> str:
        """Return numpy code that draws values like make_array's (for big inputs in scripts)."""
        shape = _tuple_text([f"{SYMBOL}_SIZE" if isinstance(d, str) else d for d in self.shape])
        draw = {
            "bool": f"rng.random({shape}) < 0.5",
            "index": f"rng.integers({self.low}, {self.high}, {shape})",
            "grid": f"rng.integers(-5, 6, {shape})",
            "halves": f"rng.integers(-8, 9, {shape}) / 2",
        }.get(self.domain, f"rng.standard_normal({shape})")
        return f"np.asarray({draw}, dtype=np.{self.dtype})"


@dataclass(frozen=True)
class Value:
    """A value the generator can use: an input or a step's result."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    exact: bool
    bound: float

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    @property
    def is_bool(self) -> bool:
        return self.dtype == "bool"


@dataclass(frozen=True)
class Step:
    """One line `name = expression`, written with graphc and with PyTorch."""

    name: str
    gc: str
    torch: str
    uses: tuple[str, ...]  # the names the expressions read


@dataclass(frozen=True)
class Program:
    """A generated program and the batch sizes it runs at."""

    seed: int
    inputs: tuple[Input, ...]
    steps: tuple[Step, ...]
    outputs: tuple[str, ...]
    grad: bool  # also compare gradients of a weighted sum of the float outputs
    batches: tuple[int, ...]  # the size of the symbolic dim in each run; (0,) when static

    @property
    def symbolic(self) -> bool:
        return any(isinstance(d, str) for i in self.inputs for d in i.shape)

    def source(self, library: str, every_value: bool = False) -> str:
        """Return `def program(inputs): ...` written with "gc" or "torch"; it returns the list
        of outputs, or with every_value a dict of every input and step value by name."""
        lines = [f"def program({', '.join(i.name for i in self.inputs)}):"]
        lines += [f"    {step.name} = {getattr(step, library)}" for step in self.steps]
        returned = "dict(locals())" if every_value else f"[{', '.join(self.outputs)}]"
        return "\n".join([*lines, f"    return {returned}"]) + "\n"

    def function(self, library: str) -> Callable[..., dict[str, Any]]:
        """Return the program as a function of its inputs, written with library ("gc" or
        "torch"), that returns every input and step value by name."""
        namespace: dict[str, Any] = {"np": np, "gc": gc}
        if library == "torch":
            import torch

            namespace.update(torch=torch, F=torch.nn.functional)
        code = compile(self.source(library, every_value=True), f"fuzz_{self.seed}.py", "exec")
        exec(code, namespace)
        return namespace["program"]

    def arrays(self, run: int) -> list[np.ndarray]:
        """Return the input values of one run (variables keep the same value in every run)."""
        fed = np.random.default_rng([self.seed, run])
        fixed = np.random.default_rng([self.seed, 1 << 20])
        return [i.make_array(fixed if i.variable else fed, self.batches[run]) for i in self.inputs]

    def loss_weights(self, shapes: Sequence[tuple[int, ...]], run: int) -> list[np.ndarray]:
        """Return the random weight of each float output in the loss of one run."""
        rng = np.random.default_rng([self.seed, run, 7])
        return [rng.standard_normal(shape) for shape in shapes]

    def pruned(self, outputs: Sequence[str], grad: bool | None = None) -> Program:
        """Return the program reduced to what the given outputs need (one run if no
        symbolic input is left)."""
        needed, kept = set(outputs), []
        for step in reversed(self.steps):
            if step.name in needed:
                kept.append(step)
                needed.update(step.uses)
        inputs = tuple(i for i in self.inputs if i.name in needed)
        symbolic = any(isinstance(d, str) for i in inputs for d in i.shape)
        return replace(
            self,
            inputs=inputs,
            steps=tuple(reversed(kept)),
            outputs=tuple(outputs),
            grad=self.grad if grad is None else grad,
            batches=self.batches if symbolic else (0,),
        )


class GenerationError(Exception):
    """graphc rejected a step the generator believed well-typed (a generator or graphc bug)."""


def generate(seed: int, exclude: Iterable[str] = ()) -> Program:
    """Return the program of a seed, leaving out the constructs named in exclude (keys of
    KIND_WEIGHTS or CONSTRUCTS)."""
    exclude = frozenset(exclude)
    if unknown := exclude - set(KIND_WEIGHTS) - set(CONSTRUCTS):
        raise ValueError(f"unknown constructs {sorted(unknown)}")
    return _Generator(seed, exclude).program()


def _tuple_text(items: Sequence[Any]) -> str:
    return "(" + ", ".join(map(str, items)) + ("," if len(items) == 1 else "") + ")"


def _is_sym(d: Dim) -> bool:
    return isinstance(d, str)


def _numel(shape: Sequence[Dim], batch: int = SMALL_BATCHES[-1]) -> int:
    return math.prod(batch if _is_sym(d) else d for d in shape)


def _broadcast(*shapes: Sequence[Dim]) -> tuple[Dim, ...] | None:
    """Return the broadcast shape (symbols broadcast with 1 and themselves), or None."""
    out: list[Dim] = []
    for axis in range(-max(map(len, shapes)), 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


@dataclass
class _Operand:
    """Something a step reads: a value, a Python scalar, or a constant array."""

    gc: str
    torch: str
    shape: tuple[Dim, ...]
    dtype: str
    exact: bool
    bound: float
    uses: tuple[str, ...] = ()
    scalar: bool = False

    @staticmethod
    def of(value: Value) -> _Operand:
        v = value
        return _Operand(v.name, v.name, v.shape, v.dtype, v.exact, v.bound, (v.name,))


@dataclass
class _Generator:
    seed: int
    exclude: frozenset[str] = frozenset()
    inputs: list[Input] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    values: list[Value] = field(default_factory=list)
    tensors: dict[str, gc.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.symbolic = self._coin(FRACTIONS["symbolic"])
        self.grad = self._coin(FRACTIONS["grad"])
        self.float_dtype = "float64" if self._coin(FRACTIONS["float64"]) else "float32"
        wide = self._coin(FRACTIONS["wide"])
        self.dims = WIDE_DIMS if wide else DIMS
        self.max_elements = WIDE_MAX_ELEMENTS if wide else MAX_ELEMENTS
        self.weights = {k: w for k, w in KIND_WEIGHTS.items() if k not in self.exclude}
        # A sum over the symbolic dim grows with the batch, a value with two symbolic dims
        # with its square: such programs skip the large run.
        self.no_large_run = False

    # -- random choices --------------------------------------------------------------------
    def _coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def _pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def _int(self, low: int, high: int) -> int:
        """Return an int in [low, high]."""
        return int(self.rng.integers(low, high + 1))

    def _axis(self, a: Value) -> tuple[int, int]:
        """Return an axis of a, and how a dim argument names it (negative a third of the time)."""
        axis = self._int(0, a.ndim - 1)
        return axis, axis - a.ndim if self._coin(0.3) else axis

    def _weighted(self, weights: dict[str, float]) -> str:
        names = list(weights)
        p = np.array([weights[n] for n in names], dtype=float)
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    def _dim(self) -> int:
        return self._pick(self.dims)

    def _shape(self, rank: int) -> tuple[int, ...]:
        shape = tuple(self._dim() for _ in range(rank))
        while _numel(shape) > self.max_elements // 2:
            shape = tuple(max(1, d // 2) for d in shape)
        return shape

    def _fits(self, shape: Sequence[Dim]) -> bool:
        return _numel(shape) <= self.max_elements

    def _operand(self, accept: Callable[[Value], bool] = lambda v: True) -> Value | None:
        """Return a value to work on, the most recent acceptable one half of the time."""
        candidates = [v for v in self.values if accept(v)]
        if not candidates:
            return None
        return candidates[-1] if self._coin(0.5) else self._pick(candidates)

    # -- building the program ----------------------------------------------------------------
    def _new_input(
        self, shape: Sequence[Dim], dtype: str, domain: str = "", low=0, high=0, keep=True
    ) -> Value | None:
        """Add an input (None if shape has a symbolic dim other than B); keep makes it a value
        later steps may read."""
        if any(_is_sym(d) and d != SYMBOL for d in shape):
            return None
        if not domain:
            domain = {"bool": "bool", "int32": "grid", "int64": "grid"}.get(dtype, "")
            # Gradients of max, clamp and where jump where values tie: a program with gradients
            # takes continuous floats, so no two computed values tie by accident.
            halves = self._coin(0.4) and not self.grad
            domain = domain or ("halves" if halves else "real")
        name, shape = f"x{len(self.inputs)}", tuple(shape)
        static_float = dtype in FLOATS and not any(map(_is_sym, shape)) and domain != "index"
        variable = self.grad and static_float and self._coin(0.3)
        self.inputs.append(Input(name, shape, dtype, domain, low, high, variable))
        self.tensors[name] = gc.input(name, shape, getattr(gc, dtype))
        bound = {"real": 5.0, "halves": 4.0, "grid": 5.0, "bool": 1.0}.get(domain, float(high))
        value = Value(name, shape, dtype, domain != "real", bound)
        if keep:
            self.values.append(value)
        return value

    def _emit(
        self, text: str, uses: Sequence[str], exact: bool, bound: float, torch: str = ""
    ) -> Value:
        """Add a step (torch: its PyTorch text when it differs); graphc builds it now, and its
        type becomes the value's type."""
        name = f"v{len(self.steps)}"
        try:
            tensor = eval(text, {"gc": gc, "np": np}, dict(self.tensors))
        except Exception as error:  # any rejection is reported with the program so far
            raise GenerationError(
                f"seed {self.seed}: graphc rejected `{name} = {text}`: "
                f"{type(error).__name__}: {error}\nprogram so far:\n"
                + "\n".join(f"    {s.name} = {s.gc}" for s in self.steps)
            ) from error
        shape = tuple(d if isinstance(d, int) else str(d) for d in tensor.shape)
        if sum(map(_is_sym, shape)) > 1:
            self.no_large_run = True
        self.tensors[name] = tensor
        self.steps.append(Step(name, text, torch or text, tuple(dict.fromkeys(uses))))
        value = Value(name, shape, tensor.dtype.name, exact and bound <= EXACT_BOUND, bound)
        self.values.append(value)
        return value

    def program(self) -> Program:
        """Return the generated program."""
        for _ in range(self._int(1, 2)):
            self._start_input()
        count, attempts = self._int(5, 9), 0
        while len(self.steps) < count and attempts < 200:
            attempts += 1
            getattr(self, f"_{self._weighted(self.weights)}")()
        outputs = self._outputs()
        batches = [0]
        if self.symbolic:
            batches = [1, self._pick(SMALL_BATCHES)]
            self.rng.shuffle(batches)
            if not self.no_large_run and self._coin(FRACTIONS["large_run"]):
                batches.append(self._large_batch())
        floats = any(v.is_float for v in self.values if v.name in outputs)
        inputs, steps = tuple(self.inputs), tuple(self.steps)
        program = Program(self.seed, inputs, steps, tuple(outputs), self.grad, tuple(batches))
        return program.pruned(outputs, grad=self.grad and floats)

    def _start_input(self) -> None:
        rank = self._pick((0, 1, 1, 2, 2, 2, 3, 3, 4))
        shape: list[Dim] = list(self._shape(rank))
        if self.symbolic and not self.inputs:
            shape = [SYMBOL, *shape] if rank < 4 else [SYMBOL, *shape[1:]]
        other = "float32" if self.float_dtype == "float64" else "float64"
        weights = {self.float_dtype: 75, "int64": 8, "int32": 6, "bool": 5, other: 6}
        dtype = self.float_dtype if self.grad and not self.inputs else self._weighted(weights)
        self._new_input(shape, dtype)

    def _large_batch(self) -> int:
        batched = [i.shape for i in self.inputs if any(map(_is_sym, i.shape))]
        row = max(_numel([d for d in shape if not _is_sym(d)]) for shape in batched)
        return LARGE_RUN_ELEMENTS // row + self._int(1, 7)

    def _outputs(self) -> list[str]:
        computed = [v for v in self.values if v.name.startswith("v")]
        if not computed:
            computed = [self._movement() or self._unary()]
        outputs = [computed[-1].name]
        used = {name for step in self.steps for name in step.uses}
        # Values nothing reads become outputs too, so most steps stay in the program.
        outputs += [v.name for v in computed[:-1] if v.name not in used and self._coin(0.6)]
        outputs += [self._pick(computed).name for _ in range(self._pick((0, 0, 1)))]
        if self._coin(0.3) and "output_element_read" not in self.exclude:
            # The bug class of a fused kernel reading another element of a value it computes:
            # an output next to a function of one of its elements, e.g. [y, y - y[3]].
            chosen = self._pick(outputs)
            y = next(v for v in self.values if v.name == chosen)
            if (read := self._element_read(y)) is not None:
                outputs.append(read.name)
        if self._coin(0.05):
            outputs.append(outputs[0])  # the same value returned twice
        return list(dict.fromkeys(outputs)) if self._coin(0.8) else outputs

    # -- second operands ---------------------------------------------------------------------
    def _new_dtype(self, like: str) -> str:
        if like == "bool" or not self._coin(0.75):
            return self._pick(NUMERIC)
        return like

    def _derived_shape(self, shape: tuple[Dim, ...], grow: bool) -> tuple[Dim, ...]:
        """Return a shape made from shape by setting dims to 1 and dropping leading dims (with
        grow, also adding a leading dim or widening a 1): it usually broadcasts with shape."""
        dims = [1 if self._coin(0.35) or (_is_sym(d) and d != SYMBOL) else d for d in shape]
        if dims and self._coin(0.3):
            dims = dims[self._int(1, len(dims)) :]
        if grow and len(dims) < 4 and self._coin(0.25):
            dims = [self._pick((2, 3)), *dims]
        if grow and 1 in dims and self._coin(0.2):
            dims[dims.index(1)] = self._pick((2, 3))
        return tuple(dims)

    def _scalar(self, dtype: str) -> _Operand:
        if dtype in FLOATS and self._coin(0.7):
            value = self._pick((0.5, 1.5, -2.0, 2.5, -0.5, 3.0))
        else:
            value = self._pick((1, 2, 3, -1, -2))
        kind = "float32" if isinstance(value, float) else "int64"
        return _Operand(repr(value), repr(value), (), kind, True, abs(value), scalar=True)

    def _constant(self, shape: tuple[Dim, ...], dtype: str) -> _Operand | None:
        shape = tuple(1 if _is_sym(d) else d for d in shape)
        if _numel(shape) > 12:
            return None
        dtype = "int64" if dtype == "bool" else dtype
        array = self.rng.integers(-6, 7, shape)
        array = array / 2 if dtype in FLOATS else array
        literal = f"np.array({array.tolist()!r}, dtype=np.{dtype})"
        return _Operand(f"gc.tensor({literal})", f"torch.tensor({literal})", shape, dtype, True, 6)

    def _partner(self, a: Value, grow: bool = True) -> _Operand:
        """Return a second operand that broadcasts with a."""
        options = {"new": 4, "value": 4, "same": 1, "zero_d": 1.5, "constant": 1, "scalar": 3}
        while True:
            choice = self._weighted(options)
            if choice == "scalar":
                return self._scalar(a.dtype)
            if choice == "same":
                return _Operand.of(a)
            if choice == "zero_d":
                return _Operand.of(self._new_input((), self._new_dtype(a.dtype), keep=False))
            shape = self._derived_shape(a.shape, grow)
            out = _broadcast(shape, a.shape)
            if choice == "new" and out is not None and self._fits(out):
                return _Operand.of(self._new_input(shape, self._new_dtype(a.dtype)))
            constant = self._constant(shape, a.dtype) if choice == "constant" else None
            if constant is not None and out is not None:
                return constant
            if choice == "value":
                fits = [
                    v
                    for v in self.values
                    if v.name != a.name
                    and (out := _broadcast(v.shape, a.shape)) is not None
                    and self._fits(out)
                    and (grow or out == a.shape)
                ]
                if fits:
                    return _Operand.of(self._pick(fits))

    # -- step kinds: each adds one step, or returns None when it does not apply --------------
    def _unary(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        x, b = a.name, a.bound
        if a.is_bool:
            forms = (f"{x}.logical_not()", f"~{x}", f"{x}.long() * 2 - 1", f"{x}.sigmoid()")
            text = self._pick(forms)
            return self._emit(text, [x], "sigmoid" not in text, 1)
        options: dict[str, tuple[str, bool, float, str]] = {
            # name: (graphc text, exact, bound, PyTorch text when it differs)
            "log": (f"({x}.abs() + 1).log()", False, math.log1p(b), ""),
            "sqrt": (f"({x}.abs() + 0.25).sqrt()", False, math.sqrt(b + 0.25), ""),
            "rsqrt": (f"({x}.abs() + 1).rsqrt()", False, 1.0, ""),
            "sin": (f"{x}.sin()", False, 1.0, ""),
            "cos": (f"gc.cos({x})", False, 1.0, f"torch.cos({x})"),
            "tanh": (f"{x}.tanh()", False, 1.0, ""),
            "sigmoid": (f"{x}.sigmoid()", False, 1.0, ""),
            "erf": (f"gc.erf({x})", False, 1.0, f"torch.erf({x})"),
            "relu": (f"{x}.relu()", a.exact, b, ""),
            "neg": (f"-{x}", a.exact, b, ""),
            "abs": (f"{x}.abs()", a.exact, b, ""),
            "clamp": self._clamp(a),
        }
        if b <= 8:
            options["exp"] = (f"{x}.exp()", False, math.exp(b), "")
        if b <= 100:
            options["square"] = (f"{x}.square()", a.exact, b * b, "")
        if b <= 20:
            exponent = self._pick((2, 3, 0.5, 1.5, -1))
            bound = (b + 0.5) ** exponent if exponent > 0 else 2.0
            options["pow"] = (f"({x}.abs() + 0.5) ** {exponent}", False, bound, "")
            options["rpow"] = (f"2 ** {x}.tanh()", False, 2.0, "")
        if a.exact:
            options["floor"] = (f"{x}.floor()", True, b + 1, "")
            options["ceil"] = (f"gc.ceil({x})", True, b + 1, f"torch.ceil({x})")
            options["round"] = (f"{x}.round()", True, b + 1, "")
            options["sign"] = (f"{x}.sign()", True, 1.0, "")
        text, exact, bound, torch = options[self._pick(sorted(options))]
        return self._emit(text, [x], exact, bound, torch)

    def _clamp(self, a: Value) -> tuple[str, bool, float, str]:
        low, high = self._pick(((-1, 1), (-2, 0.5), (0, None), (None, 1.5), (-0.5, 2)))
        if not a.is_float:
            low, high = (None if v is None else int(v) for v in (low, high))
            low = None if low is not None and high is not None and low >= high else low
        args = ", ".join(f"{k}={v}" for k, v in (("min", low), ("max", high)) if v is not None)
        limit = max(abs(v) for v in (low, high) if v is not None)
        bound = min(a.bound, limit) if low is not None and high is not None else a.bound
        return f"{a.name}.clamp({args})", a.exact, bound, ""

    def _binary(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        if a.is_bool and self._coin(0.5):
            b = self._operand(lambda v: v.is_bool and _broadcast(v.shape, a.shape) is not None)
            if b is not None:
                return self._emit(
                    f"{a.name} {self._pick(('&', '|'))} {b.name}", [a.name, b.name], True, 1
                )
        p = self._partner(a)
        bools = a.is_bool or p.dtype == "bool"
        if a.is_bool and p.dtype == "bool":
            return None  # arithmetic on two bool tensors is logical in PyTorch, int64 here
        ops = ["+", "*", "/"] if bools else ["+", "-", "*", "/", "maximum", "minimum"]
        if a.exact and p.exact and not bools:
            ops += ["//", "%"]
        op, swap = self._pick(ops), self._coin(0.4)
        uses, exact = [a.name, *p.uses], a.exact and p.exact
        (x, tx), (y, ty) = (
            ((p.gc, p.torch), (a.name, a.name)) if swap else ((a.name, a.name), (p.gc, p.torch))
        )
        if op in ("+", "-"):
            return self._emit(f"{x} {op} {y}", uses, exact, a.bound + p.bound, f"{tx} {op} {ty}")
        if op == "*":
            if a.bound * p.bound > MAX_BOUND:
                return None
            return self._emit(f"{x} * {y}", uses, exact, a.bound * p.bound, f"{tx} * {ty}")
        if op == "/":
            if p.scalar and not swap:  # by a nonzero scalar
                return self._emit(f"{x} / {y}", uses, False, 2 * a.bound, f"{tx} / {ty}")
            if bools:
                return None  # bool tensors have no abs
            bound = p.bound if swap else a.bound
            return self._emit(
                f"{x} / ({y}.abs() + 1)", uses, False, bound, f"{tx} / ({ty}.abs() + 1)"
            )
        if op in ("//", "%"):
            # The divisor is |y| + 1 or a positive int, so nothing is divided by zero.
            if p.scalar and not swap:
                y = ty = str(abs(int(float(p.gc))) or 2)
            else:
                y, ty = f"({y}.abs() + 1)", f"({ty}.abs() + 1)"
            torch = f"{tx} {op} {ty}"
            if op == "%" and p.scalar and swap:
                # PyTorch's remainder(scalar, tensor) has no derivative; a 0-d tensor of the
                # result's dtype on the left has one.
                kind = a.dtype if a.is_float or p.dtype in INTS else "float32"
                torch = f"torch.remainder(torch.tensor({tx}, dtype=torch.{kind}), {ty})"
            if op == "//":
                # PyTorch has no derivative for floor_divide (graphc's is 0): detach operands.
                torch = " // ".join(
                    t if (p.scalar and t == p.torch) or t.isdigit() else f"{t}.detach()"
                    for t in (tx, ty)
                )
            return self._emit(f"{x} {op} {y}", uses, True, max(a.bound, p.bound) + 1, torch)
        # maximum and minimum: PyTorch's need a tensor on both sides of the same dtype.
        if p.scalar and p.dtype in FLOATS and not a.is_float:
            return None
        p_torch = f"torch.tensor({p.gc}, dtype={a.name}.dtype)" if p.scalar else p.torch
        return self._emit(
            f"gc.{op}({a.name}, {p.gc})",
            uses,
            exact,
            max(a.bound, p.bound),
            f"torch.{op}({a.name}, {p_torch})",
        )

    def _compare_where(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        p = self._partner(a, grow=False)
        if a.is_bool != (p.dtype == "bool"):
            return None
        if a.is_bool:
            ops = ["==", "!="]
        else:
            ops = ["<", "<=", ">", ">="] + (["==", "!="] if a.exact and p.exact else [])
        op = self._pick(ops)
        c_gc, c_torch = f"({a.name} {op} {p.gc})", f"({a.name} {op} {p.torch})"
        c_shape, uses = _broadcast(a.shape, p.shape), [a.name, *p.uses]
        if self._coin(0.35):
            return self._emit(c_gc[1:-1], uses, True, 1, c_torch[1:-1])
        branches: list[_Operand] = []
        for _ in range(2):
            choice = self._pick(("a", "a", "value", "scalar"))
            if choice == "a" and not a.is_bool:
                branches.append(_Operand.of(a))
            elif choice == "value":
                shapes = [c_shape, *(b.shape for b in branches)]
                fits = [
                    v
                    for v in self.values
                    if not v.is_bool
                    and (out := _broadcast(v.shape, *shapes)) is not None
                    and self._fits(out)
                ]
                if not fits:
                    return None
                branches.append(_Operand.of(self._pick(fits)))
            else:
                branches.append(self._scalar("float32" if a.is_bool else a.dtype))
        x, y = branches
        if x.scalar and y.scalar and x.dtype != y.dtype:
            return None
        args = (uses + list(x.uses) + list(y.uses), x.exact and y.exact, max(x.bound, y.bound))
        if not x.scalar and self._coin(0.3):
            return self._emit(
                f"{x.gc}.where({c_gc}, {y.gc})", *args, f"{x.torch}.where({c_torch}, {y.torch})"
            )
        return self._emit(
            f"gc.where({c_gc}, {x.gc}, {y.gc})",
            *args,
            f"torch.where({c_torch}, {x.torch}, {y.torch})",
        )

    def _cast(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        targets = [d for d in (*NUMERIC, "bool") if d != a.dtype]
        if a.is_float and not a.exact:
            targets = [d for d in targets if d in FLOATS]  # no float-to-int of rounded values
        target = self._pick(targets)
        exact = a.exact  # exact values survive every cast the generator makes
        bound = 1.0 if target == "bool" else a.bound
        if self._coin(0.5):
            method = {"float32": "float", "float64": "double", "int64": "long", "int32": "int"}
            text = f"{a.name}.{method.get(target, 'bool')}()"
            return self._emit(text, [a.name], exact, bound)
        torch = f"{a.name}.to(torch.{target})"
        return self._emit(f"{a.name}.to(gc.{target})", [a.name], exact, bound, torch)

    def _axes(self, a: Value) -> tuple[str, list[int]]:
        """Return the text of a dim argument (an int or a pair) and the axes it names."""
        if a.ndim >= 2 and self._coin(0.3):
            axes = sorted(self.rng.choice(a.ndim, size=2, replace=False).tolist())
            texts = [str(ax - a.ndim if self._coin(0.3) else ax) for ax in axes]
            return f"({', '.join(texts)})", axes
        axis, dim = self._axis(a)
        return str(dim), [axis]

    def _reduced(self, a: Value, axes: Sequence[int]) -> tuple[int, int]:
        """Return the fewest and the most elements a reduction over axes reads."""
        dims = [a.shape[ax] for ax in axes]
        if any(map(_is_sym, dims)):
            self.no_large_run = True
        return _numel(dims, 1), _numel(dims)

    def _reduce(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        ops = ["sum", "max", "min"] + (["prod", "values"] if not a.is_bool else [])
        ops += ["mean", "var"] if a.is_float else []
        # The derivative of std where the data is constant up to rounding has no stable value.
        ops += ["std"] if a.is_float and not self.grad else []
        ops += ["argmax", "argmin", "indices"] if a.exact and not a.is_bool else []
        op, x, keep = self._pick(ops), a.name, self._coin(0.4)
        whole = a.ndim == 0 or self._coin(0.25)
        if op in ("sum", "mean", "var", "std"):
            correction = self._pick((0, 1))
            extra = f", correction={correction}" if op in ("var", "std") else ""
            dim, axes = ("", list(range(a.ndim))) if whole else self._axes(a)
            low, high = self._reduced(a, axes)
            if op in ("var", "std") and low <= correction + (op == "std"):
                return None
            args = extra[2:] if whole else f"dim={dim}, keepdim={keep}{extra}"
            text, torch = f"{x}.{op}({args})", ""
            if op == "sum" and not whole and self._coin(0.2):
                text, torch = f"gc.sum({x}, {dim})", f"torch.sum({x}, {dim})"
            bound = {"sum": a.bound * high, "mean": a.bound, "std": 2 * a.bound}
            return self._emit(
                text, [x], op == "sum" and a.exact, bound.get(op, 4 * a.bound**2), torch
            )
        if op == "prod":
            axis, dim = self._axis(a) if a.ndim else (0, 0)
            axes, args = ([], "") if whole else ([axis], f"dim={dim}, keepdim={keep}")
            low, high = self._reduced(a, axes or range(a.ndim))
            if low != high:
                return None  # over the symbolic dim the product has no bound
            if high * math.log(max(a.bound, 1.0)) <= math.log(MAX_BOUND):
                return self._emit(f"{x}.prod({args})", [x], a.exact, max(a.bound, 1.0) ** high)
            if a.is_float:
                return self._emit(f"{x}.tanh().prod({args})", [x], False, 1.0)
            return None
        if whole:
            if op in ("argmax", "argmin"):
                return self._emit(f"{x}.{op}()", [x], True, _numel(a.shape))
            which = op if op in ("max", "min") else self._pick(("max", "min"))
            return self._emit(f"{x}.{which}()", [x], a.exact, a.bound)
        axis, dim = self._axis(a)
        self._reduced(a, [axis])
        if op in ("max", "min", "values", "indices"):
            which = op if op in ("max", "min") else self._pick(("max", "min"))
            field_ = "indices" if op == "indices" else "values"
            text = f"{x}.{which}(dim={dim}, keepdim={keep}).{field_}"
            return self._emit(
                text, [x], a.exact or op == "indices", a.bound if op != "indices" else 64
            )
        if self._coin(0.3):
            return self._emit(f"gc.{op}({x}, {dim})", [x], True, 64, f"torch.{op}({x}, {dim})")
        return self._emit(f"{x}.{op}(dim={dim}, keepdim={keep})", [x], True, 64)

    def _softmax(self) -> Value | None:
        a = self._operand(lambda v: v.is_float and v.ndim >= 1)
        if a is None:
            return None
        x, op = a.name, self._pick(("softmax", "log_softmax", "logsumexp"))
        if op == "logsumexp":
            dim, axes = self._axes(a)
            high = self._reduced(a, axes)[1]
            text = f"{x}.logsumexp({dim}, keepdim={self._coin(0.4)})"
            return self._emit(text, [x], False, a.bound + math.log(high))
        axis, dim = self._axis(a)
        high = self._reduced(a, [axis])[1]
        bound = 1.0 if op == "softmax" else 2 * a.bound + math.log(high)
        if self._coin(0.4):
            return self._emit(f"gc.{op}({x}, {dim})", [x], False, bound, f"torch.{op}({x}, {dim})")
        return self._emit(f"{x}.{op}({dim})", [x], False, bound)

    def _matmul(self) -> Value | None:
        a = self._operand(lambda v: not v.is_bool and v.ndim >= 1)
        if a is None:
            return None
        x, layout = a.name, self._pick(("left", "left", "left", "right", "self"))
        if layout == "self" and a.ndim >= 2:
            k = self._pick((a.shape[-1], a.shape[-2]))
            text = f"{x} @ {x}.mT" if k == a.shape[-1] else f"{x}.mT @ {x}"
            return self._product(text, [x], a, a, k, None)
        if layout == "right":
            k = a.shape[0] if a.ndim == 1 else a.shape[-2]
            w = self._new_input((self._dim(), k), a.dtype, keep=False)
            return w and self._product(f"{w.name} @ {x}", [w.name, x], a, w, k, None)
        k, n = a.shape[-1], self._dim()
        form = self._pick(("matrix", "matrix", "vector", "batched"))
        w_shape: tuple[Dim, ...] = (k, n)
        if form == "vector":
            w_shape = (k,)
        elif form == "batched":
            # A batch dim that broadcasts with a's: its own, 1, or a new one for a matrix.
            batch = self._pick((2, 3)) if a.ndim <= 2 else self._pick((a.shape[-3], 1))
            w_shape = (batch, k, n)
        w = self._new_input(w_shape, a.dtype, keep=False)
        bias = (
            self._new_input((n,), a.dtype, keep=False)
            if form != "vector" and self._coin(0.5)
            else None
        )
        return w and self._product(f"{x} @ {w.name}", [x, w.name], a, w, k, bias)

    def _product(self, text, uses, a: Value, w: Value, k: Dim, bias: Value | None) -> Value | None:
        """Emit a matmul, with a bias (and maybe a ReLU) as its epilogue."""
        if _is_sym(k):
            self.no_large_run = True
        bound = _numel([k]) * a.bound * w.bound
        if bias is not None:
            text, uses, bound = f"{text} + {bias.name}", [*uses, bias.name], bound + bias.bound
            text = f"({text}).relu()" if self._coin(0.5) else text
        if bound > MAX_BOUND or _numel(a.shape) * _numel(w.shape[-1:]) > 4 * self.max_elements:
            return None
        exact = a.exact and w.exact and (bias is None or bias.exact)
        return self._emit(text, uses, exact, bound)

    def _movement(self) -> Value | None:
        a = self._operand()
        if a is None:
            return None
        x, same = a.name, (a.exact, a.bound)
        choice = self._pick(("reshape", "reshape", "permute", "transpose", "unsqueeze", "squeeze"))
        if choice == "reshape":
            if sum(map(_is_sym, a.shape)) > 1:
                return None
            if a.ndim >= 2 and self._coin(0.2):
                start = self._int(0, a.ndim - 2)
                return self._emit(f"{x}.flatten({start if self._coin(0.5) else ''})", [x], *same)
            dims: list[int] = self._factorize(_numel([d for d in a.shape if not _is_sym(d)]))
            if any(map(_is_sym, a.shape)) or (dims and self._coin(0.25)):
                dims.insert(self._int(0, len(dims)), -1)
            args = ", ".join(map(str, dims))
            text = f"{x}.{self._pick(('reshape', 'view'))}({args})"
            return self._emit(text, [x], *same, f"{x}.reshape({_tuple_text(dims)})")
        if choice == "permute" and a.ndim >= 2:
            perm = ", ".join(map(str, self.rng.permutation(a.ndim).tolist()))
            return self._emit(f"{x}.permute({perm})", [x], *same)
        if choice == "transpose" and a.ndim >= 2:
            i, j = self.rng.choice(a.ndim, size=2, replace=False).tolist()
            return self._emit(
                f"{x}.transpose({i}, {j})" if self._coin(0.7) else f"{x}.mT", [x], *same
            )
        if choice == "squeeze" and 1 in a.shape:
            ones = [i for i, d in enumerate(a.shape) if d == 1]
            return self._emit(f"{x}.squeeze({self._pick(ones)})", [x], *same)
        if a.ndim >= 4:
            return None
        axis = self._int(-a.ndim - 1, a.ndim)
        if self._coin(0.3):
            return self._emit(f"{x}[None]" if axis == 0 else f"{x}[..., None]", [x], *same)
        return self._emit(f"{x}.unsqueeze({axis})", [x], *same)

    def _factorize(self, size: int) -> list[int]:
        dims = []
        while size > 1 and len(dims) < 3:
            d = self._pick([d for d in range(2, size + 1) if size % d == 0])
            dims.append(d)
            size //= d
        if size > 1:
            dims[-1] *= size
        if self._coin(0.2):
            dims.insert(self._int(0, len(dims)), 1)
        self.rng.shuffle(dims)
        return [int(d) for d in dims]

    def _index(self) -> Value | None:
        a = self._operand(lambda v: v.ndim >= 1)
        if a is None:
            return None
        items: list[str] = []
        uses, arrays = [a.name], 0
        for axis in range(self._int(1, a.ndim)):
            size = a.shape[axis]
            if _is_sym(size):  # only what is valid for a batch of 1
                items.append(self._pick((":", "0", "-1", ":1")))
                continue
            choice = self._pick(("int", "slice", "slice", "step", "full", "list", "tensor"))
            if choice == "int":
                items.append(str(self._int(-size, size - 1)))
            elif choice in ("slice", "step"):
                start = self._int(-size, size - 1)
                stop = self._int(start % size + 1, size) if self._coin(0.7) else None
                if stop is not None and stop < size and self._coin(0.2):
                    stop -= size  # a negative stop
                text = f"{start if self._coin(0.8) else ''}:{'' if stop is None else stop}"
                items.append(text + (f":{self._int(2, 3)}" if choice == "step" else ""))
            elif choice in ("list", "tensor") and arrays == 0:
                arrays, count = 1, self._int(1, 4)
                if choice == "list":
                    items.append(repr([self._int(-size, size - 1) for _ in range(count)]))
                else:
                    index = self._new_input((count,), "int64", "index", -size, size, keep=False)
                    items.append(index.name)
                    uses.append(index.name)
            else:
                items.append(":")
        if self._coin(0.15):
            items.insert(self._int(0, len(items)), "None")
        if self._coin(0.1) and len(items) < a.ndim:
            items.append("...")
        return self._emit(f"{a.name}[{', '.join(items)}]", uses, a.exact, a.bound)

    def _element_read(self, y: Value | None = None) -> Value | None:
        """Emit a function of y and one element (or column) of y, such as `y - y[3]`."""
        y = y or self._operand(lambda v: v.ndim >= 1 and not v.is_bool)
        if y is None or y.ndim == 0 or y.is_bool:
            return None
        x, first = y.name, y.shape[0]
        i = self._pick((0, -1)) if _is_sym(first) else self._int(-first, first - 1)
        if not _is_sym(y.shape[-1]) and y.ndim >= 2 and self._coin(0.3):
            j = self._int(0, y.shape[-1] - 1)
            read = f"{x}[..., {j}:{j + 1}]"
        elif self._coin(0.15) and not any(map(_is_sym, y.shape)):
            read = f"{x}.reshape(-1)[{i}]"
        else:
            read = f"{x}[{i}]"
        op = self._pick(("-", "-", "+", "*", "maximum", "div", "sum"))
        if op in ("-", "+"):
            return self._emit(f"{x} {op} {read}", [x], y.exact, 2 * y.bound)
        if op == "*":
            return self._emit(f"{x} * {read}", [x], y.exact, y.bound**2) if y.bound < 100 else None
        if op == "maximum":
            torch = f"torch.maximum({x}, {read})"
            return self._emit(f"gc.maximum({x}, {read})", [x], y.exact, y.bound, torch)
        if op == "div":
            return self._emit(f"{x} / ({read}.abs() + 1)", [x], False, y.bound)
        if any(map(_is_sym, y.shape)):
            self.no_large_run = True
        return self._emit(f"({x} - {read}).sum()", [x], y.exact, 2 * y.bound * _numel(y.shape))

    def _concat(self) -> Value | None:
        a = self._operand(lambda v: v.ndim >= 1 and self._fits([2, *v.shape]))
        if a is None:
            return None
        if self._coin(0.25):
            b = self._pick(
                [v for v in self.values if v.shape == a.shape and v.is_bool == a.is_bool]
            )
            text = f"{{}}.stack([{a.name}, {b.name}], dim={self._int(-a.ndim - 1, a.ndim)})"
            args = ([a.name, b.name], a.exact and b.exact, max(a.bound, b.bound))
            return self._emit(text.format("gc"), *args, text.format("torch"))
        axis, dim = self._axis(a)
        size, choice = a.shape[axis], self._pick(("self", "slice", "new", "value"))
        if choice == "slice" and not _is_sym(size) and size >= 2:
            piece = f"{a.name}[{', '.join([':'] * axis + [f'{self._int(1, size - 1)}:'])}]"
            b = _Operand(piece, piece, (), a.dtype, a.exact, a.bound, (a.name,))
        elif choice == "value":
            fits = [
                v
                for v in self.values
                if v.ndim == a.ndim
                and v.is_bool == a.is_bool
                and all(v.shape[i] == a.shape[i] for i in range(a.ndim) if i != axis)
            ]
            b = _Operand.of(self._pick(fits))
        elif choice == "new" and not a.is_bool:
            shape = list(a.shape)
            shape[axis] = self._pick((1, 2, 3))
            new = self._new_input(shape, self._new_dtype(a.dtype))
            if new is None:
                return None
            b = _Operand.of(new)
        else:
            b = _Operand.of(a)
        args = ([a.name, *b.uses], a.exact and b.exact, max(a.bound, b.bound))
        torch = f"torch.cat([{a.name}, {b.torch}], dim={dim})"
        return self._emit(f"gc.cat([{a.name}, {b.gc}], dim={dim})", *args, torch)

    def _gather(self) -> Value | None:
        a = self._operand(lambda v: v.ndim >= 1)
        if a is None:
            return None
        axis, dim = self._axis(a)
        # As in PyTorch, the index may be smaller than the input in the other dims too.
        shape = [SYMBOL if _is_sym(d) else self._pick((d, d, self._int(1, d))) for d in a.shape]
        shape[axis] = self._int(1, 4)
        high = 1 if _is_sym(a.shape[axis]) else a.shape[axis]
        index = self._new_input(shape, "int64", "index", 0, high, keep=False)
        text = f"{{}}.gather({a.name}, {dim}, {index.name})"
        return self._emit(
            text.format("gc"), [a.name, index.name], a.exact, a.bound, text.format("torch")
        )

    def _pad(self) -> Value | None:
        a = self._operand(lambda v: v.ndim >= 1 and not v.is_bool and self._fits([4, *v.shape]))
        if a is None:
            return None
        pads = [self._int(0, 2) for _ in range(2 * self._int(1, min(2, a.ndim)))]
        pads[0] = pads[0] or (0 if any(pads) else 1)
        value = self._pick((0, 1, -2)) if not a.is_float else self._pick((0.0, 1.5, -2.0))
        text = f"{{}}({a.name}, {_tuple_text(pads)}, value={value})"
        bound = max(a.bound, abs(value))
        return self._emit(text.format("gc.pad"), [a.name], a.exact, bound, text.format("F.pad"))

    def _expand(self) -> Value | None:
        a = self._operand(lambda v: v.ndim <= 3)
        if a is None:
            return None
        sizes = [self._pick((2, 3)) if d == 1 and self._coin(0.7) else -1 for d in a.shape]
        if self._coin(0.4) or all(s == -1 for s in sizes):
            sizes.insert(0, self._pick((2, 3)))
        if not self._fits([*sizes[: len(sizes) - a.ndim], *a.shape]) or not self._fits(
            [3, *a.shape]
        ):
            return None
        return self._emit(
            f"{a.name}.expand({', '.join(map(str, sizes))})", [a.name], a.exact, a.bound
        )


# -- a standalone reproducer -----------------------------------------------------------------
def script(program: Program, run: int = 0) -> str:
    """Return a standalone Python script that runs the program on both backends and prints
    what each computes, with the input values of one run (drawn anew when they are many)."""
    arrays = program.arrays(run)
    lines = ["import numpy as np", "", "import graphc as gc", ""]
    fed, values = [], []
    many = sum(a.size for a in arrays) > 200
    if many:
        lines += ["rng = np.random.default_rng(0)", f"{SYMBOL}_SIZE = {program.batches[run]}"]
    for spec, array in zip(program.inputs, arrays, strict=True):
        literal = f"np.array({array.tolist()!r}, dtype=np.{array.dtype})"
        if spec.variable:
            lines.append(f"{spec.name} = gc.Variable({literal}, name={spec.name!r})")
            continue
        shape = _tuple_text([repr(SYMBOL) if _is_sym(d) else d for d in spec.shape])
        lines.append(f"{spec.name} = gc.input({spec.name!r}, {shape}, gc.{spec.dtype})")
        fed.append(spec.name)
        values.append(spec.random_text() if many else literal)
    lines += [f"{step.name} = {step.gc}" for step in program.steps]
    lines.append(f"outputs = [{', '.join(program.outputs)}]")
    lines.append(f"feeds = [{', '.join(values)}]")
    if program.grad:
        wrt = [i.name for i in program.inputs if i.dtype in FLOATS]
        lines += [
            "# gradients of a randomly weighted sum of the float outputs",
            "floats = [o for o in outputs if o.dtype.is_float]",
            "weights = [gc.input(f'w{i}', o.shape, o.dtype) for i, o in enumerate(floats)]",
            "loss = sum((o * w).sum() for o, w in zip(floats, weights))",
            f"outputs += gc.grad(loss, [{', '.join(wrt)}], materialize_grads=True)",
            f'computed = gc.compile([{", ".join(fed)}], floats, backend="reference")(*feeds)',
            "computed = computed if isinstance(computed, tuple) else (computed,)",
            "draw = np.random.default_rng(1)",
            "feeds += [draw.standard_normal(c.shape).astype(c.dtype) for c in computed]",
        ]
        fed.append("*weights")
    lines += [
        'for backend in ("reference", "llvm"):',
        f"    function = gc.compile([{', '.join(fed)}], outputs, backend=backend)",
        "    print(backend, function(*feeds))",
        "print(function.graph)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    for argument in sys.argv[1:] or ["0"]:
        print(script(generate(int(argument))))
