"""save/load: .npz state dicts that numpy reads, atomic writes, and clear mismatch errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

import graphc as gc
from graphc import optim
from graphc.errors import InputError
from graphc.serialization import load, save


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
