"""gc.save and gc.load: state dicts as .npz files that plain numpy can open.

A state dict is a mapping of names to arrays (`model.state_dict()`, `opt.state_dict()`), or a
mapping of such mappings (`{"model": ..., "optimizer": ...}`), which is stored with '/'
between the levels ("model/0.weight"). The file is an ordinary `.npz` archive (numpy's zip of
`.npy` files, no pickles), so `np.load(path)` reads it without graphc.

A save is atomic: the archive is written to a temporary file in the same directory, flushed to
disk and renamed over the target with os.replace, so a crash or a full disk leaves either the
old file or the new one, never a torn one. Loading only reads the file; whether its names,
shapes and dtypes fit a model is checked by the model's `load_state_dict`, which changes
nothing when they do not.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.errors import InputError
from graphc.tensor import Tensor

SEPARATOR = "/"


def save(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a state dict (names to arrays, possibly nested one level or more) to path as .npz.

    Values may be numpy arrays, Python numbers or graphc Tensors (Variables are saved with
    their current value; other tensors are evaluated). The write is atomic. The file name is
    used as given; '.npz' is the customary suffix.
    """
    arrays = _flatten(obj)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(handle, "wb") as file:
            _write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _sync_directory(directory)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the state dict stored at path: names to numpy arrays, nested as it was saved.

    Raises FileNotFoundError for a missing file and InputError for a file that is not a
    state dict written by gc.save (or by np.savez without pickled objects).
    """
    path = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError) as error:
        raise InputError(f"{path} is not a state dict (.npz archive): {error}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds a single array, not a state dict (.npz archive)")
    try:
        with archive:
            flat = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise InputError(f"{path} is a damaged .npz archive: {error}") from None
    return _unflatten(flat, path)


def _flatten(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    if not isinstance(obj, Mapping):
        raise TypeError(
            f"save() takes a state dict (a mapping of names to arrays), got {type(obj).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"state dict keys must be non-empty strings, got {key!r}")
        if SEPARATOR in key:
            raise ValueError(
                f"state dict key {key!r} contains {SEPARATOR!r}, which separates nested levels"
            )
        name = prefix + key
        if isinstance(value, Mapping):
            nested = _flatten(value, name + SEPARATOR)
            if not nested:
                raise ValueError(f"state dict entry {name!r} is an empty mapping")
            arrays.update(nested)
        else:
            arrays[name] = _as_array(value, name)
    return arrays


def _as_array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"state dict entry {name!r} is {array.dtype}; only bool, int and float arrays "
            "can be saved"
        )
    return array


def _unflatten(flat: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, array in flat.items():
        *levels, leaf = name.split(SEPARATOR)
        node = result
        for level in levels:
            child = node.setdefault(level, {})
            if not isinstance(child, dict):
                raise InputError(f"{path}: {name!r} is both an array and a group")
            node = child
        if leaf in node:
            raise InputError(f"{path}: {name!r} is both an array and a group")
        node[leaf] = array
    return result


def _write_npz(file: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write arrays as an .npz archive, as np.savez does, keeping any key (even 'file')."""
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def _umask() -> int:
    """Return the process umask, reading it without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_directory(directory: str) -> None:
    """Flush the rename to disk where the platform allows opening a directory."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
