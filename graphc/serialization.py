"""gc.save and gc.load: state dicts as .npz files that plain numpy can open.

A state dict is a mapping of names to arrays (`model.state_dict()`, `opt.state_dict()`), or a
mapping of such mappings (`{"model": ..., "optimizer": ...}`), which is stored with '/'
between the levels ("model/0.weight"). The file is an ordinary `.npz` archive (numpy's zip of
`.npy` files, no pickles), so `np.load(path)` reads it without graphc.

A save is atomic: the archive is written to a temporary file in the same directory, flushed to
disk and renamed over the target with os.replace, so a crash or a full disk leaves either the
old file or the new one, never a torn one. A writer killed mid-save cannot remove its
temporary file, so temporaries are named for their target and writer,
`.<name>.<host>.<pid>.<random>.graphc-tmp`, and each save of a target first removes that
target's temporaries whose writer is gone: a writer on this host whose process no longer
exists, or any writer that has not written to its file for STALE_AFTER_SECONDS. (A folder
shared between machines or containers holds other hosts' temporaries, whose process ids mean
nothing here; only their age counts.)

Loading reads only numbers: every entry's .npy header is checked against the size the zip
directory gives for it before anything is allocated, object arrays (pickles) are refused, and
any damage raises InputError naming the file and the entry. Whether the names, shapes and
dtypes fit a model is checked by the model's `load_state_dict`, which changes nothing when
they do not.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

from graphc.errors import InputError
from graphc.ops.collectives import world
from graphc.tensor import Tensor

SEPARATOR = "/"
TEMPORARY_SUFFIX = ".graphc-tmp"
# A live writer touches its temporary with every block it writes; one untouched for this long
# belongs to a writer that is gone even if its process id now names another process.
STALE_AFTER_SECONDS = 10 * 60
# Deflate cannot expand data more than 1032-fold, so a deflated entry that claims more is forged.
_DEFLATE_MAX_RATIO = 1032
_NPY_MAGIC = b"\x93NUMPY"


def save(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a state dict (names to arrays, possibly nested one level or more) to path as .npz.

    Values may be numpy arrays, Python numbers or graphc Tensors (Variables are saved with
    their current value; other tensors are evaluated). The write is atomic. The file name is
    used as given; '.npz' is the customary suffix. Temporary files that earlier saves of the
    same path left behind (their writer killed) are removed first. In a world of several
    processes (`graphc.distributed.init()`) only rank 0 writes: every rank holds the same
    parameters, and one writer keeps the ranks from replacing each other's file.
    """
    if world().rank != 0:
        return
    arrays = _flatten(obj)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    for stale in stale_temporaries(path):
        # Another save may have removed it first, or it may not be ours to remove.
        with contextlib.suppress(OSError):
            os.unlink(stale)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.{host_tag()}.{os.getpid()}.", suffix=TEMPORARY_SUFFIX, dir=directory
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


def stale_temporaries(path: str | os.PathLike[str]) -> list[str]:
    """Return the paths of temporary files left by saves of path whose writer is gone.

    A temporary is `.<name>.<host>.<pid>.<random>.graphc-tmp` beside the target. Its writer
    is gone when it ran on this host and no process has that id (checked on POSIX only), or
    when the file was last written STALE_AFTER_SECONDS ago or earlier. Other files, and other
    targets' temporaries, are never listed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    pattern = re.compile(
        re.escape(prefix) + r"([A-Za-z0-9-]+)\.(\d+)\.[a-z0-9_]+" + re.escape(TEMPORARY_SUFFIX)
    )
    here = host_tag()
    now = time.time()
    stale = []
    for entry in _entries(directory):
        match = pattern.fullmatch(entry.name) if entry.name.startswith(prefix) else None
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            written = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # removed meanwhile
        host, pid = match.group(1), int(match.group(2))
        if now - written >= STALE_AFTER_SECONDS or (host == here and not _process_exists(pid)):
            stale.append(entry.path)
    return stale


def host_tag() -> str:
    """Return this machine's name as it appears in temporary file names (letters, digits, -)."""
    name = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9-]", "-", name)[:32] or "host"


def _entries(directory: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as entries:
            yield from entries
    except OSError:
        return  # an unreadable folder: the save itself will say what is wrong


def _process_exists(pid: int) -> bool:
    """Return whether a process with this id exists (True where that cannot be checked)."""
    if pid == os.getpid() or os.name != "posix":
        return True  # on Windows os.kill would terminate the process, not probe it
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False  # no process has this id (or none could: it is out of range)
    except OSError:
        return True  # it exists but belongs to another user
    return True


# What zipfile, zlib and numpy's .npy reader raise for a damaged or forged file.
_DAMAGE = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    OverflowError,
    NotImplementedError,
    RuntimeError,  # an encrypted entry
    SyntaxError,
)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the state dict stored at path: names to numpy arrays, nested as it was saved.

    Raises FileNotFoundError (or another OSError) when the file cannot be opened, and
    InputError naming the file, and the entry where there is one, for a file that is not a
    state dict written by gc.save or np.savez (not a zip, truncated, a damaged or forged
    .npy header, an entry that is not an array, object arrays, which would need unpickling).
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        start = file.read(len(_NPY_MAGIC))
        size = os.fstat(file.fileno()).st_size
        if start == _NPY_MAGIC:
            raise InputError(f"{path} holds a single array, not a state dict (.npz archive)")
        file.seek(0)
        try:
            archive = zipfile.ZipFile(file)
        except _DAMAGE as error:
            raise InputError(f"{path} is not a state dict (.npz archive): {error}") from None
        with archive:
            flat: dict[str, np.ndarray] = {}
            for info in archive.infolist():
                name = info.filename.removesuffix(".npy")
                if name in flat:
                    raise InputError(f"{path}: entry {name!r} appears twice")
                flat[name] = _read_entry(archive, info, name, path, size)
    return _unflatten(flat, path)


def _read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, path: str, size: int
) -> np.ndarray:
    """Return one entry's array after checking its header against the entry's size."""
    where = f"{path}: entry {name!r}"
    try:
        with archive.open(info) as member:
            shape, dtype = _read_header(member, where)
            data_bytes = math.prod(shape) * dtype.itemsize
            _check_sizes(info, member.tell(), data_bytes, size, where, shape, dtype)
            member.seek(0)
            return np.lib.format.read_array(member, allow_pickle=False)
    except InputError:
        raise
    except _DAMAGE as error:
        raise InputError(f"{where} is damaged: {error}") from None


def _read_header(member: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    if member.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
        raise InputError(f"{where} is not a .npy array")
    member.seek(0)
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise InputError(f"{where} is a .npy file of format {version}, which graphc does not read")
    if any(dim < 0 for dim in shape):
        raise InputError(f"{where} declares the shape {shape}, which has a negative dim")
    if dtype.hasobject:
        raise InputError(
            f"{where} holds Python objects ({dtype}), which only unpickling could read; "
            "graphc loads numbers and never unpickles"
        )
    return shape, dtype


def _check_sizes(
    info: zipfile.ZipInfo,
    header_bytes: int,
    data_bytes: int,
    size: int,
    where: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
) -> None:
    """Raise InputError unless the header's shape and dtype fit the sizes the zip gives."""
    declared = f"declares {dtype}{list(shape)} ({data_bytes} bytes)"
    if info.file_size != header_bytes + data_bytes:
        raise InputError(
            f"{where} {declared}, but the entry holds {info.file_size - header_bytes} bytes of data"
        )
    if info.header_offset + info.compress_size > size:
        raise InputError(f"{where} {declared}, but the file ends before the entry does")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise InputError(f"{where} {declared}, but its stored size is {info.compress_size}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 64:
            raise InputError(
                f"{where} {declared}, more than {info.compress_size} deflated bytes can hold"
            )
    else:
        raise InputError(
            f"{where} uses zip compression method {info.compress_type}; .npz entries are "
            "stored or deflated"
        )


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
