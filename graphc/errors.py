"""The error hierarchy; every message names the op, shapes, axis and the user's file:line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_LOCATION_MARK = "\n  at "

_PACKAGE_ROOTS: tuple[str, ...] = ()


def register_internal_root(path: str) -> None:
    """Mark a source folder as graphc-internal so user_location() skips its frames."""
    global _PACKAGE_ROOTS
    root = os.path.dirname(os.path.abspath(path))
    if root not in _PACKAGE_ROOTS:
        _PACKAGE_ROOTS = (*_PACKAGE_ROOTS, root)


register_internal_root(__file__)


def user_location() -> str:
    """Return 'file:line' of the innermost stack frame outside graphc (the user's code)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        internal = any(filename.startswith(root + os.sep) for root in _PACKAGE_ROOTS)
        if not internal and not filename.startswith("<frozen"):
            return f"{os.path.basename(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


class GraphcError(Exception):
    """Base class of every error graphc raises on purpose."""


class ShapeError(GraphcError, ValueError):
    """Shapes that do not fit the op: broadcasting, contraction, reshape sizes, axes."""


class DTypeError(GraphcError, TypeError):
    """A dtype the op does not accept, or a promotion that has no answer."""


class GraphError(GraphcError, ValueError):
    """A malformed graph: cycles, foreign nodes, unfed inputs, misuse of the builder API."""


class InputError(GraphcError, ValueError):
    """An array fed to a compiled Function that does not match its declared input."""


class CompileError(GraphcError, RuntimeError):
    """A backend could not compile the graph."""


def located(message: str, location: str | None) -> str:
    """Append the user's source location to an error message."""
    return f"{message}{_LOCATION_MARK}{location}" if location else message


class IndexingError(ShapeError, IndexError):
    """An index out of range, or an index expression graphc cannot express."""


def user_op(function: Callable[P, T]) -> Callable[P, T]:
    """Decorate a Tensor-API function so its errors name it and the user's file:line."""

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return function(*args, **kwargs)
        except GraphcError as error:
            if _LOCATION_MARK in str(error):
                raise
            message = located(f"{function.__name__}: {error}", user_location())
            raise type(error)(message) from None

    return checked
