"""save/load: .npz state dicts that numpy reads, atomic writes, and clear mismatch errors."""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.errors import InputError
from graphc.serialization import STALE_AFTER_SECONDS, host_tag, load, save, stale_temporaries


def test_round_trip_keeps_names_order_shapes_and_dtypes(tmp_path):
    state = {
        "0.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "0.bias": np.array([1.5, -2.0, 0.25], np.float64),
        "num_batches_tracked": np.int64(7),
        "mask": np.array([True, False]),
        "file": np.zeros(2, np.int32),  # a key np.savez(**kwargs) could not take
    }
    path = tmp_path / "model.npz"
    save(state, path)
    loaded = load(path)
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(loaded[key], value)


def test_file_opens_with_plain_numpy(tmp_path):
    path = tmp_path / "state.npz"
    save({"w": np.ones((2, 2), np.float32), "opt": {"step": np.int64(3)}}, path)
    with np.load(path, allow_pickle=False) as archive:
        assert archive.files == ["w", "opt/step"]
        assert archive["opt/step"] == 3
    assert load(path) == {"w": pytest.approx(np.ones((2, 2))), "opt": {"step": 3}}


def test_variables_tensors_and_numbers_are_saved_by_value(tmp_path):
    variable = gc.Variable(np.full(3, 2.0, np.float32), name="v")
    path = tmp_path / "mixed.npz"
    save({"v": variable, "t": gc.arange(4) * 2, "lr": 0.5}, path)
    loaded = load(path)
    np.testing.assert_array_equal(loaded["v"], [2, 2, 2])
    np.testing.assert_array_equal(loaded["t"], [0, 2, 4, 6])
    assert loaded["lr"].shape == () and loaded["lr"] == 0.5


def test_optimizer_state_survives_a_save_and_load(tmp_path):
    w = gc.Variable(np.ones(3, np.float32), name="w")
    x = gc.input("x", (3,))
    loss = ((w * x).sum() - 1.0).square()
    opt = optim.Adam([w], lr=0.1)
    step = gc.compile([x], [loss], updates=opt.minimize(loss))
    step(np.array([1.0, 2.0, 3.0], np.float32))
    path = tmp_path / "checkpoint.npz"
    save({"params": {"w": w}, "optimizer": opt.state_dict()}, path)

    w2 = gc.Variable(np.zeros(3, np.float32), name="w")
    opt2 = optim.Adam([w2], lr=0.1)
    checkpoint = load(path)
    w2.assign(checkpoint["params"]["w"])
    opt2.load_state_dict(checkpoint["optimizer"])
    assert int(opt2.step_count.value) == 1
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(opt2.state_dict()[key], value)


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    save({"w": np.ones(3, np.float32)}, path)

    calls = []

    def failing_write_array(file, array, **kwargs):
        calls.append(array.shape)
        if len(calls) == 2:
            file.write(b"partial")
            raise OSError("disk full")
        return original(file, array, **kwargs)

    original = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing_write_array)
    with pytest.raises(OSError, match="disk full"):
        save({"w": np.zeros(3, np.float32), "b": np.zeros(2, np.float32)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(load(path)["w"], np.ones(3))


def test_save_writes_through_a_temporary_file_in_the_same_directory(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spying_replace(source, target):
        seen.append((os.path.dirname(source), os.path.basename(source), target))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", spying_replace)
    path = tmp_path / "model.npz"
    save({"w": np.ones(1)}, path)
    ((directory, name, target),) = seen
    assert directory == str(tmp_path) and name.startswith(".model.npz.") and target == str(path)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_save_rejects_what_is_not_a_state_dict(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="mapping of names to arrays"):
        save([np.ones(2)], path)
    with pytest.raises(TypeError, match="non-empty strings"):
        save({0: np.ones(2)}, path)
    with pytest.raises(ValueError, match="separates nested levels"):
        save({"a/b": np.ones(2)}, path)
    with pytest.raises(TypeError, match="only bool, int and float"):
        save({"names": np.array(["a", "b"])}, path)
    assert not path.exists()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(InputError, match="not a state dict"):
        load(text)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(InputError, match="single array"):
        load(single)
    truncated = tmp_path / "truncated.npz"
    save({"w": np.ones(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(InputError):
        load(truncated)


def test_model_round_trip_through_a_file(tmp_path):
    from graphc import nn

    gc.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    path = tmp_path / "model.npz"
    save(model.state_dict(), path)
    gc.manual_seed(2)
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    other.load_state_dict(load(path))
    for (name, mine), (_, theirs) in zip(
        model.state_dict().items(), other.state_dict().items(), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=name)
    x = gc.input("x", ("B", 4))
    model.eval()
    other.eval()
    batch = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(
        gc.compile([x], [model(x)])(batch), gc.compile([x], [other(x)])(batch)
    )


@pytest.mark.parametrize(
    "make_other,error",
    [
        (
            lambda nn: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)),
            gc.errors.ShapeError,
        ),
        (lambda nn: nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), InputError),
        (
            lambda nn: nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2)),
            InputError,
        ),
    ],
    ids=["shapes", "names", "missing-bias"],
)
def test_loading_a_file_of_another_model_is_an_error_and_changes_nothing(
    tmp_path, make_other, error
):
    from graphc import nn

    path = tmp_path / "model.npz"
    save(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).state_dict(), path)
    other = make_other(nn)
    before = {name: np.array(value) for name, value in other.state_dict().items()}
    with pytest.raises(error):
        other.load_state_dict(load(path))
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(np.asarray(value), before[name], err_msg=name)


def test_scheduler_state_survives_a_save_and_load(tmp_path):
    from graphc.optim.lr_scheduler import CosineAnnealingLR

    opt = optim.SGD([gc.Variable(np.zeros(2, np.float32))], lr=0.1)
    scheduler = CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        scheduler.step()
    path = tmp_path / "checkpoint.npz"
    save({"optimizer": opt.state_dict(), "scheduler": scheduler.state_dict()}, path)
    checkpoint = load(path)

    opt2 = optim.SGD([gc.Variable(np.zeros(2, np.float32))], lr=0.1)
    scheduler2 = CosineAnnealingLR(opt2, T_max=10)
    opt2.load_state_dict(checkpoint["optimizer"])
    scheduler2.load_state_dict(checkpoint["scheduler"])
    assert scheduler2.last_epoch == 3 and isinstance(scheduler2.last_epoch, int)
    for _ in range(4):
        scheduler.step()
        scheduler2.step()
        assert opt2.lr == opt.lr


# -- temporaries left by killed saves ------------------------------------------------------------

KILLED_WRITER = """
import sys
import time

import numpy as np

from graphc.serialization import save

original = np.lib.format.write_array
calls = []


def write_then_hang(file, array, **kwargs):
    calls.append(array.shape)
    if len(calls) == 2:
        file.write(array.tobytes()[: array.nbytes // 2])
        file.flush()
        print("mid-write", flush=True)
        time.sleep(300)
    return original(file, array, **kwargs)


np.lib.format.write_array = write_then_hang
save({"a": np.zeros(1 << 16), "b": np.ones(1 << 16)}, sys.argv[1])
"""


def test_a_save_killed_mid_write_leaves_a_temporary_the_next_save_removes(tmp_path):
    path = tmp_path / "model.npz"
    save({"w": np.ones(3, np.float32)}, path)
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = writer.stdout.readline()
        assert line == "mid-write\n", writer.stderr.read()
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
        writer.stderr.close()
    leftovers = sorted(set(os.listdir(tmp_path)) - {"model.npz"})
    assert len(leftovers) == 1
    expected = rf"\.model\.npz\.{re.escape(host_tag())}\.{writer.pid}\.[a-z0-9_]+\.graphc-tmp"
    assert re.fullmatch(expected, leftovers[0])
    assert os.path.getsize(tmp_path / leftovers[0]) > 1 << 16  # the first entry was written
    np.testing.assert_array_equal(load(path)["w"], np.ones(3))  # the old file is intact

    save({"w": np.full(2, 5.0, np.float32)}, path)
    assert os.listdir(tmp_path) == ["model.npz"]
    np.testing.assert_array_equal(load(path)["w"], [5.0, 5.0])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_save_removes_only_stale_temporaries_of_its_own_target(tmp_path):
    path = tmp_path / "model.npz"
    old = time.time() - STALE_AFTER_SECONDS - 60
    host, dead = host_tag(), _dead_pid()
    elsewhere = "another-host" if host != "another-host" else "other-host"
    files = {
        # removed: the writer's process on this host is gone
        "dead": f".model.npz.{host}.{dead}.abc123_x.graphc-tmp",
        # removed: untouched for longer than any live writer leaves it
        "old": f".model.npz.{host}.{os.getpid()}.old45678.graphc-tmp",
        "old elsewhere": f".model.npz.{elsewhere}.{dead}.old45678.graphc-tmp",
        # kept: a live writer (this process) is still writing it
        "live": f".model.npz.{host}.{os.getpid()}.live5678.graphc-tmp",
        # kept: a process id of another host says nothing about its writer here
        "elsewhere": f".model.npz.{elsewhere}.{dead}.abc12345.graphc-tmp",
        # kept: another target's temporary, and files graphc did not name
        "other": f".model.npz.1.{host}.{dead}.abc12345.graphc-tmp",
        "user": ".model.npz.notes.graphc-tmp",
        "legacy": ".model.npz.abcd1234.tmp",
    }
    for key, name in files.items():
        (tmp_path / name).write_bytes(b"partial archive")
        if key in ("old", "old elsewhere", "other", "user", "legacy"):
            os.utime(tmp_path / name, (old, old))
    removed = ("dead", "old", "old elsewhere")
    assert sorted(stale_temporaries(path)) == sorted(str(tmp_path / files[k]) for k in removed)
    save({"w": np.arange(3)}, path)
    kept = {name for key, name in files.items() if key not in removed}
    assert set(os.listdir(tmp_path)) == kept | {"model.npz"}
    np.testing.assert_array_equal(load(path)["w"], [0, 1, 2])


# -- damaged and forged files --------------------------------------------------------------------


def _npy_bytes(shape: tuple[int, ...], data: bytes, descr: str = "<f8") -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue() + data


def _zip(path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_a_header_declaring_a_huge_shape_is_refused_before_allocating(tmp_path, method):
    # 8 TB declared, 8 bytes present: numpy alone would try to allocate the 8 TB.
    path = _zip(tmp_path / "forged.npz", {"w.npy": _npy_bytes((10**12,), bytes(8))}, method)
    with pytest.raises(InputError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "'w'" in message
    assert "8000000000000 bytes" in message and "holds 8 bytes" in message


def test_zip_sizes_forged_to_match_a_huge_header_are_refused(tmp_path):
    count = 400_000_000  # 3.2 GB of float64, within the sizes a plain zip can state
    header = _npy_bytes((count,), b"")
    path = _zip(tmp_path / "forged.npz", {"w.npy": header + bytes(8)})
    raw = bytearray(path.read_bytes())
    central = raw.index(b"PK\x01\x02")
    claimed = len(header) + count * 8
    struct.pack_into("<II", raw, central + 20, claimed, claimed)  # compressed, uncompressed
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match=r"forged\.npz: entry 'w'.*file ends before the entry"):
        load(path)


def _damaged_files(tmp_path):
    good = tmp_path / "good.npz"
    save({"w": np.arange(1000.0)}, good)
    raw = good.read_bytes()
    header = raw.index(b"{'descr'")
    data = raw.index(b"\n", header) + 1
    flipped = bytearray(raw)
    flipped[data + 100] ^= 0xFF
    return {
        "truncated": (raw[: len(raw) // 2], "not a state dict"),
        "not a zip": (b"just some text", "not a state dict"),
        "empty": (b"", "not a state dict"),
        "bad header": (raw.replace(b"{'descr'", b"{'dexcr'"), "entry 'w' is damaged"),
        "bad data": (bytes(flipped), "entry 'w' is damaged.*CRC"),
        "short data": (
            _zip(tmp_path / "short", {"w.npy": _npy_bytes((4,), bytes(8))}).read_bytes(),
            "entry 'w' declares float64\\[4\\] \\(32 bytes\\)",
        ),
        "negative dim": (
            _zip(tmp_path / "negative", {"w.npy": _npy_bytes((-1, 4), b"")}).read_bytes(),
            "entry 'w' declares the shape \\(-1, 4\\)",
        ),
        "not an array": (
            _zip(tmp_path / "text", {"notes.txt": b"hello"}).read_bytes(),
            "entry 'notes.txt' is not a .npy array",
        ),
        "lzma": (
            _zip(
                tmp_path / "lzma", {"w.npy": _npy_bytes((1,), bytes(8))}, zipfile.ZIP_LZMA
            ).read_bytes(),
            "entry 'w' uses zip compression method 14",
        ),
    }


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "not a zip",
        "empty",
        "bad header",
        "bad data",
        "short data",
        "negative dim",
        "not an array",
        "lzma",
    ],
)
def test_damaged_files_raise_input_error_naming_the_file(tmp_path, damage):
    content, expected = _damaged_files(tmp_path)[damage]
    path = tmp_path / "damaged.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected) as info:
        load(path)
    assert str(path) in str(info.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.ones(2), o=np.array([{"a": 1}, None], dtype=object))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load() unpickled an entry")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(InputError, match=r"objects\.npz: entry 'o' holds Python objects"):
        load(path)


def test_files_written_by_numpy_load(tmp_path):
    plain, compressed = tmp_path / "plain.npz", tmp_path / "compressed.npz"
    np.savez(plain, a=np.arange(5), b=np.ones((2, 3), np.float32))
    np.savez_compressed(compressed, z=np.zeros((300, 300)), f=np.asfortranarray(np.eye(3)))
    loaded = load(plain)
    np.testing.assert_array_equal(loaded["a"], np.arange(5))
    assert loaded["b"].dtype == np.float32 and loaded["b"].shape == (2, 3)
    loaded = load(compressed)
    np.testing.assert_array_equal(loaded["z"], np.zeros((300, 300)))
    np.testing.assert_array_equal(loaded["f"], np.eye(3))
