"""Checkpoints: round trip, atomic writes, and clear refusals of corrupt or foreign files."""

from __future__ import annotations

import dataclasses
import os
from importlib import resources

import pytest
import torch

from pixelfast import checkpoint as ckpt_module
from pixelfast.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    make_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def model():
    from pixelfast.models import GatedPixelCNN

    torch.manual_seed(0)
    return GatedPixelCNN(in_channels=1, levels=4, hidden_channels=4, num_layers=2, num_classes=3, image_size=(5, 6))


@pytest.fixture
def saved(tmp_path, model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 4, (2, 1, 5, 6))
    torch.nn.functional.cross_entropy(model(x, torch.tensor([0, 2])), x).backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "model.pt", model, optimizer, epoch=3, metrics={"test_bits_per_dim": 1.5})
    return path, model, optimizer


@pytest.mark.parametrize(
    "name", sorted(p.name for p in resources.files("pixelfast.assets").iterdir() if p.name.endswith(".pt"))
)
def test_shipped_checkpoints_rebuild_with_the_config_they_saved(name):
    path = resources.files("pixelfast.assets") / name
    saved = load_checkpoint(path)["model_config"]
    model = load_model(path)
    # the same keys and values, however they were written; an option added since the checkpoint
    # was written reads as its default
    defaults = {f.name: f.default for f in dataclasses.fields(model.options)}
    added = model.config.keys() - saved.keys()
    assert {key: model.config[key] for key in saved} == saved
    assert {key: model.config[key] for key in added} == {key: defaults[key] for key in added}


def test_round_trip(saved):
    path, model, optimizer = saved
    data = load_checkpoint(path)
    assert data["format"] == "pixelfast-checkpoint" and data["version"] == 1
    assert data["model_name"] == "GatedPixelCNN" and data["epoch"] == 3
    assert data["metrics"] == {"test_bits_per_dim": 1.5}
    assert data["model_config"] == model.config
    assert data["optimizer_state"]["state"]  # Adam moments are kept for resuming
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x, labels = torch.randint(0, 4, (2, 1, 5, 6)), torch.tensor([1, 0])
    model.eval()
    assert torch.equal(model(x, labels), loaded(x, labels))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, saved, monkeypatch):
    path, model, _ = saved
    before = path.read_bytes()

    def failing_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=4)
    assert path.read_bytes() == before  # the old checkpoint survives a failed write
    assert os.listdir(tmp_path) == ["model.pt"]
    monkeypatch.undo()
    save_checkpoint(path, model, epoch=5)  # overwriting works
    assert load_checkpoint(path)["epoch"] == 5
    assert os.listdir(tmp_path) == ["model.pt"]
    with pytest.raises(FileNotFoundError, match="folder"):
        save_checkpoint(tmp_path / "missing" / "model.pt", model)


def test_truncated_file_is_refused(tmp_path, saved):
    path, _, _ = saved
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(truncated)
    # A damaged member inside an intact archive: the zip index is fine, the data is not.
    damaged = bytearray(path.read_bytes())
    start = damaged.find(b"data.pkl")
    damaged[start + 60 : start + 200] = os.urandom(140)
    broken = tmp_path / "damaged.pt"
    broken.write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="not a"):
        load_model(broken)


def test_random_bytes_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a pixelfast checkpoint.*zip"):
        load_checkpoint(junk)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_checkpoint(empty)


@pytest.mark.parametrize(
    "content",
    [{"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, torch.zeros(3), [1, 2], {"format": "other"}],
)
def test_foreign_torch_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="not a pixelfast checkpoint"):
        load_model(path)


class Sneaky:
    def __reduce__(self):  # what weights_only loading exists to stop
        return (print, ("this must not run",))


def test_arbitrary_pickles_are_refused_without_running_them(tmp_path, capsys):
    path = tmp_path / "sneaky.pt"
    torch.save({"format": "pixelfast-checkpoint", "payload": Sneaky()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)
    assert "must not run" not in capsys.readouterr().out


def test_unknown_model_newer_version_and_missing_keys(tmp_path, model):
    good = make_checkpoint(model)
    cases = {
        "unknown.pt": ({**good, "model_name": "PixelTransformer"}, "unknown model 'PixelTransformer'"),
        "future.pt": ({**good, "version": 2}, "version 2"),
        "partial.pt": ({k: v for k, v in good.items() if k != "model_state"}, "missing"),
        "badconfig.pt": ({**good, "model_config": {**good["model_config"], "depth": 3}}, "cannot build"),
        "badstate.pt": ({**good, "model_state": {"w": torch.zeros(1)}}, "do not fit"),
    }
    for name, (content, match) in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(CheckpointError, match=match):
            load_model(tmp_path / name)


def test_missing_file_and_error_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    assert issubclass(CheckpointError, ValueError)


def test_saved_checkpoint_has_a_normal_file_mode(saved):
    path, _, _ = saved
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_flipped_bit_inside_a_tensor_is_refused(tmp_path, saved):
    path, model, _ = saved
    weight = max(model.state_dict().values(), key=torch.numel)
    raw = path.read_bytes()
    at = raw.find(weight.detach().cpu().numpy().tobytes())
    assert at > 0  # torch stores tensors uncompressed: the weight's bytes are in the file as they are
    flipped = bytearray(raw)
    flipped[at + 5] ^= 0x10
    damaged = tmp_path / "flipped.pt"
    damaged.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(damaged)


def test_non_finite_weights_and_bad_metrics_are_refused(tmp_path, model):
    good = make_checkpoint(model)
    state = dict(good["model_state"])
    key = next(iter(state))
    state[key] = torch.full_like(state[key], float("nan"))
    torch.save({**good, "model_state": state}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=f"{key}.*NaN or infinite"):
        load_model(tmp_path / "nan.pt")
    torch.save({**good, "metrics": [1, 2]}, tmp_path / "metrics.pt")
    with pytest.raises(CheckpointError, match="metrics must be a dict"):
        load_checkpoint(tmp_path / "metrics.pt")


def test_a_config_with_a_million_layers_is_refused_before_building(tmp_path, model):
    import time

    good = make_checkpoint(model)
    torch.save({**good, "model_config": {**good["model_config"], "num_layers": 10**6}}, tmp_path / "big.pt")
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match="num_layers=1000000.*2 layers"):
        load_model(tmp_path / "big.pt")
    assert time.perf_counter() - started < 5.0  # building it would take minutes


def test_folders_pipes_and_unreadable_files_are_named_as_such(tmp_path, saved, monkeypatch):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_checkpoint(tmp_path)
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)
    path = saved[0]
    real_open = open

    def refusing_open(file, *args, **kwargs):  # as a file without read permission (tests may run as root)
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    with pytest.raises(PermissionError, match="permission denied"):
        load_checkpoint(path)


def test_a_save_cleans_up_what_a_killed_save_left(tmp_path, model):
    path = tmp_path / "model.pt"
    leftovers = [tmp_path / ".model.pt.abc123.tmp", tmp_path / ".model.pt.x_y.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / ".other.pt.abc123.tmp"  # another checkpoint's save in progress: not ours
    other.write_bytes(b"busy")
    save_checkpoint(path, model)
    assert sorted(os.listdir(tmp_path)) == [".other.pt.abc123.tmp", "model.pt"]
