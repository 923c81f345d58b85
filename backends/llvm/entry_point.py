"""`i64 graph_run(i64* frame)`: the function a call runs, once per call (through the builtin
of python_entry.py, or ctypes where that cannot read CPython's objects).

It reads what the call needs from the frame, clears the error record, writes the
address of each of the call's arrays into its table slot (read from the array objects the
frame's `arrays` points at: cheaper here than in Python) and runs graph_steps. It returns 0
when every kernel ran, 1 when one failed (the error record says how), and SHARED when asked
to screen the call's memory and it found arrays that may share it: then nothing has run, and
Python takes the call through its full memory checks.

Screening (the low bit of the frame's `arrays` set) looks for what those checks would act on,
comparing each array's bytes `[data, data + nbytes)`: an output array that overlaps a fed
array, another output array or any Variable, and a fed array that overlaps a Variable the
call updates. A call whose arrays share nothing, nearly every call, so skips the checks'
Python work.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from graphc.backends.llvm.expressions import I8, I64

RUN_NAME = "graph_run"
STEPS_ARGS = ("table", "sizes", "error", "threads", "steps")
# graph_run's frame, in order: graph_steps' arguments (the addresses of the table, sizes and
# error record, the threads kernels may use, the number of steps), where an array object keeps
# the address of its elements, then the call's arrays: how many (fed arrays first, then
# outputs), how many are fed, the address of the table slot of each (-1: none) and of the
# bytes of each (the installed call's); then the Variables: how many and the address of a
# (slot, bytes, updated) triple for each; last, written per call, the address of the call's
# array objects (0: Python wrote the table), its low bit set to screen them. After graph_run's
# fields, what the Python builtin that calls it reads (python_entry.py): graph_run's address,
# libpython's functions that release and take back the GIL and count a reference, and the
# address of the status objects' addresses.
FRAME = (
    *STEPS_ARGS,
    "data_offset",
    "array_count",
    "input_count",
    "array_slots",
    "array_bytes",
    "variable_count",
    "variables",
    "arrays",
    "run",
    "save_thread",
    "restore_thread",
    "incref",
    "statuses",
)
RUN_FIELDS = FRAME.index("arrays") + 1
VARIABLE_FIELDS = 3
SHARED = 2
_ZERO = ir.Constant(I64, 0)
_ONE = ir.Constant(I64, 1)


def emit_run_function(module: ir.Module, steps: ir.Function) -> None:
    """Emit graph_run into module, calling steps (graph_steps)."""
    run = ir.Function(module, ir.FunctionType(I64, [I64.as_pointer()]), RUN_NAME)
    (frame,) = run.args
    b = ir.IRBuilder(run.append_basic_block("entry"))
    field = {
        name: b.load(b.gep(frame, [ir.Constant(I64, i)]), name=name)
        for i, name in enumerate(FRAME[:RUN_FIELDS])
    }
    pointer_types = steps.function_type.args[:3]
    table, sizes, error = (
        b.inttoptr(field[name], kind)
        for name, kind in zip(STEPS_ARGS[:3], pointer_types, strict=True)
    )
    b.store(_ZERO, error)
    tagged = field["arrays"]
    arrays = b.and_(tagged, ir.Constant(I64, -2), name="array_objects_at")
    count = b.select(
        b.icmp_unsigned("==", arrays, _ZERO, name="python_wrote_table"),
        _ZERO,
        field["array_count"],
        name="array_count",
    )
    data = _array_data(b, arrays, field["data_offset"])
    screen = b.icmp_unsigned("!=", b.and_(tagged, _ONE), _ZERO, name="screen")
    with b.if_then(screen, likely=True):
        _return_if_shared(b, table, data, count, field)
    slots = b.inttoptr(field["array_slots"], I64.as_pointer(), name="array_slots")

    def store_address(index: ir.Value) -> None:
        slot = b.load(b.gep(slots, [index]), name="slot")
        with b.if_then(b.icmp_signed(">=", slot, _ZERO)):
            b.store(b.inttoptr(data(index), I8.as_pointer()), b.gep(table, [slot]))

    _loop(b, count, "array", store_address)
    b.call(steps, [table, sizes, error, field["threads"], field["steps"]])
    b.ret(b.load(error, name="failed"))


def _array_data(
    b: ir.IRBuilder, arrays: ir.Value, data_offset: ir.Value
) -> Callable[[ir.Value], ir.Value]:
    """Return a function emitting the address of the elements of array object `index`."""
    objects = b.inttoptr(arrays, I64.as_pointer(), name="array_objects")

    def data(index: ir.Value) -> ir.Value:
        address = b.add(b.load(b.gep(objects, [index]), name="array_object"), data_offset)
        return b.load(b.inttoptr(address, I64.as_pointer()), name="array_data")

    return data


def _return_if_shared(
    b: ir.IRBuilder,
    table: ir.Value,
    data: Callable[[ir.Value], ir.Value],
    count: ir.Value,
    field: dict[str, ir.Value],
) -> None:
    """Emit the screen: return SHARED at the first pair of arrays that may share memory."""
    sizes = b.inttoptr(field["array_bytes"], I64.as_pointer(), name="array_bytes")
    variables = b.inttoptr(field["variables"], I64.as_pointer(), name="variables")
    inputs = field["input_count"]

    def span(index: ir.Value) -> tuple[ir.Value, ir.Value]:
        start = data(index)
        return start, b.add(start, b.load(b.gep(sizes, [index])))

    def return_if(condition: ir.Value) -> None:
        with b.if_then(condition, likely=False):
            b.ret(ir.Constant(I64, SHARED))

    def check_array(index: ir.Value) -> None:
        array = span(index)
        is_output = b.icmp_signed(">=", index, inputs, name="is_output")

        def against_variable(position: ir.Value) -> None:
            triple = b.mul(position, ir.Constant(I64, VARIABLE_FIELDS))
            slot, nbytes, updated = (
                b.load(b.gep(variables, [b.add(triple, ir.Constant(I64, i))])) for i in range(3)
            )
            start = b.ptrtoint(b.load(b.gep(table, [slot])), I64)
            guarded = b.or_(is_output, b.icmp_unsigned("!=", updated, _ZERO))
            return_if(b.and_(guarded, _overlap(b, array, (start, b.add(start, nbytes)))))

        _loop(b, field["variable_count"], "variable", against_variable)

        def against_array(other: ir.Value) -> None:
            distinct = b.and_(is_output, b.icmp_unsigned("!=", other, index))
            return_if(b.and_(distinct, _overlap(b, array, span(other))))

        _loop(b, count, "other", against_array)

    _loop(b, count, "screened", check_array)


def _overlap(
    b: ir.IRBuilder, first: tuple[ir.Value, ir.Value], second: tuple[ir.Value, ir.Value]
) -> ir.Value:
    """Return whether two byte spans [start, end) meet; an empty one meets nothing."""
    both = b.and_(
        b.icmp_unsigned("<", first[0], first[1]), b.icmp_unsigned("<", second[0], second[1])
    )
    meet = b.and_(
        b.icmp_unsigned("<", first[0], second[1]), b.icmp_unsigned("<", second[0], first[1])
    )
    return b.and_(both, meet)


def _loop(b: ir.IRBuilder, count: ir.Value, name: str, body: Callable[[ir.Value], None]) -> None:
    """Emit `for index in range(count): body(index)`."""
    before = b.block
    header = b.append_basic_block(f"{name}_loop")
    inside = b.append_basic_block(f"{name}_body")
    done = b.append_basic_block(f"{name}_done")
    b.branch(header)
    b.position_at_end(header)
    index = b.phi(I64, name=f"{name}_index")
    index.add_incoming(_ZERO, before)
    b.cbranch(b.icmp_signed("<", index, count), inside, done)
    b.position_at_end(inside)
    body(index)
    index.add_incoming(b.add(index, _ONE), b.block)
    b.branch(header)
    b.position_at_end(done)
