"""The entry point as a Python builtin: a call hands its tuple of arrays to native code through
CPython's own calling convention (METH_O) instead of ctypes.

A ctypes call converts its argument, builds a call frame through libffi and looks its result
type up, about 0.2 us a call; writing the tuple's address into the frame from Python costs
another 0.1. The builtin does both natively: a small function, compiled once per process,
finds the executable's frame (its `self` is the frame array), stores the tuple's item address
there (the low bit set to screen the call's memory), releases the GIL around graph_run as
ctypes does, and returns graph_run's status as a Python int. Everything that varies between
processes (libpython's function addresses, graph_run's) is read from the frame, so the
function holds only this CPython's and numpy's object layouts, which its description, and so
its cache key, names.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable

import numpy as np
from llvmlite import ir

from graphc.backends.llvm.entry_point import FRAME, SHARED
from graphc.backends.llvm.jit import CompiledModule, ModuleSource, compile_module
from graphc.backends.llvm.memory import ARRAY_DATA_OFFSET, TUPLE_ITEMS_OFFSET

_I64 = ir.IntType(64)
_POINTER = ir.IntType(8).as_pointer()
_METH_O = 0x0008
NAMES = {False: "graphc_call", True: "graphc_call_screened"}
# What graph_run returns, as the objects the builtin returns (CPython's cached small ints).
STATUSES = tuple(range(SHARED + 1))
_STATUS_ADDRESSES = np.array([id(status) for status in STATUSES], dtype=np.int64)


class _MethodDef(ctypes.Structure):
    """CPython's PyMethodDef."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("function", ctypes.c_void_p),
        ("flags", ctypes.c_int),
        ("doc", ctypes.c_char_p),
    ]


_new_function = ctypes.pythonapi.PyCFunction_NewEx
_new_function.restype = ctypes.py_object
_new_function.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]
_lock = threading.Lock()
_library: tuple[CompiledModule, dict[bool, _MethodDef]] | None = None


def frame_fields() -> dict[str, int]:
    """Return the frame fields the builtin reads besides graph_run's address: libpython's
    functions and where the status objects' addresses are."""
    api = ctypes.pythonapi
    return {
        name: ctypes.cast(function, ctypes.c_void_p).value or 0
        for name, function in (
            ("save_thread", api.PyEval_SaveThread),
            ("restore_thread", api.PyEval_RestoreThread),
            ("incref", api.Py_IncRef),
        )
    } | {"statuses": _STATUS_ADDRESSES.ctypes.data}


def entry_builtins(frame: np.ndarray) -> dict[bool, Callable[[tuple], int]] | None:
    """Return {screen: builtin(arrays) -> status} for the executable whose frame this is, or
    None where this interpreter's object layouts are unknown (the caller then uses ctypes)."""
    if TUPLE_ITEMS_OFFSET is None or ARRAY_DATA_OFFSET is None:
        return None
    _, definitions = _load(ARRAY_DATA_OFFSET, TUPLE_ITEMS_OFFSET)
    return {
        screen: _new_function(ctypes.addressof(definition), frame, None)
        for screen, definition in definitions.items()
    }


def _load(data_offset: int, items_offset: int) -> tuple[CompiledModule, dict[bool, _MethodDef]]:
    """Compile (or load) the two builtins' functions once per process, for an array object
    whose data address is at data_offset and a tuple whose items start at items_offset."""
    global _library
    with _lock:
        if _library is None:
            # The layouts determine the IR, so they describe the module (and key its cache).
            layouts = f"array data at {data_offset}, tuple items at {items_offset}"
            source = ModuleSource(
                f"python entry, {layouts}", lambda: _module(data_offset, items_offset)
            )
            compiled = compile_module(source)
            definitions = {
                screen: _MethodDef(name.encode(), compiled.address(name), _METH_O, None)
                for screen, name in NAMES.items()
            }
            _library = (compiled, definitions)
        return _library


def _module(data_offset: int, items_offset: int) -> ir.Module:
    """Return the module of the two builtins' functions, without screening and with."""
    module = ir.Module(name="graphc_python_entry")
    for screen, name in NAMES.items():
        _emit_call(module, name, screen, (data_offset, items_offset))
    return module


def _emit_call(module: ir.Module, name: str, screen: bool, offsets: tuple[int, int]) -> None:
    """Emit `PyObject *name(PyObject *frame_array, PyObject *arrays)`."""
    data_offset, items_offset = offsets
    function = ir.Function(module, ir.FunctionType(_POINTER, [_POINTER, _POINTER]), name)
    frame_array, arrays = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    data = b.gep(frame_array, [ir.Constant(_I64, data_offset)], name="data_field")
    frame = b.load(b.bitcast(data, _I64.as_pointer().as_pointer()), name="frame")

    def field(field_name: str) -> ir.Value:
        return b.gep(frame, [ir.Constant(_I64, FRAME.index(field_name))], name=field_name)

    def function_at(field_name: str, result: ir.Type, args: list[ir.Type]) -> ir.Value:
        kind = ir.FunctionType(result, args).as_pointer()
        return b.inttoptr(b.load(field(field_name)), kind, name=field_name)

    items = b.add(b.ptrtoint(arrays, _I64), ir.Constant(_I64, items_offset + screen))
    b.store(items, field("arrays"))
    state = b.call(function_at("save_thread", _POINTER, []), [], name="thread_state")
    run = function_at("run", _I64, [_I64.as_pointer()])
    status = b.call(run, [frame], name="status")
    b.call(function_at("restore_thread", ir.VoidType(), [_POINTER]), [state])
    # graph_run returns 0, SHARED or the error record's nonzero flag: any flag reads as 1.
    known = b.icmp_unsigned("<=", status, ir.Constant(_I64, SHARED), name="known")
    index = b.select(known, status, ir.Constant(_I64, 1), name="status_index")
    statuses = b.inttoptr(b.load(field("statuses")), _POINTER.as_pointer(), name="statuses")
    result = b.load(b.gep(statuses, [index]), name="result")
    b.call(function_at("incref", ir.VoidType(), [_POINTER]), [result])
    b.ret(result)
