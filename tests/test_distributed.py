"""Training and sampling over several processes: ``torchrun`` with 2 CPU processes (gloo) gives
what one process gives; ``sample(part=...)``, the piece each process draws; and the two training
options that grew the shipped model (``init_from``, ``augment_shift``)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pixelfast import cli, distributed, sample
from pixelfast.checkpoint import load_checkpoint, save_checkpoint
from pixelfast.models import GatedPixelCNN, PixelCNN
from pixelfast.train import rank_order, shift_images, train

TRAIN_ARGS = [
    "--model",
    "GatedPixelCNN",
    "--data",
    "mnist-digits",
    "--levels",
    "4",
    "--hidden-channels",
    "6",
    "--num-layers",
    "2",
    "--limit",
    "100",
    "--batch-size",
    "16",
    "--augment-shift",
    "1",
    "--seed",
    "3",
    "--no-progress",
]


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node N -m pixelfast ARGS`` (a free port, one thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "pixelfast",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def weights(path) -> dict:
    return load_checkpoint(path)["model_state"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


# --- the order each rank trains on ----------------------------------------------------------------


@pytest.mark.parametrize("n, world, batch", [(100, 2, 16), (64, 4, 8), (36, 3, 12)])
def test_ranks_share_each_global_batch_of_the_one_process_order(n, world, batch):
    seed, epoch = 7 * 100_003, 2
    one = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))  # what train() uses alone
    parts = [rank_order(n, world, r, seed, epoch) for r in range(world)]
    local = batch // world
    for k, start in enumerate(range(0, n, batch)):
        together = torch.cat([p[k * local : (k + 1) * local] for p in parts])
        assert sorted(together.tolist()) == sorted(one[start : start + batch].tolist())


def test_uneven_data_is_padded_by_repeating_images():
    parts = [rank_order(5, 2, r, 0, 0) for r in range(2)]
    assert all(p.numel() == 3 for p in parts)
    assert set(torch.cat(parts).tolist()) == set(range(5))


# --- torchrun: 2 processes equal 1 ----------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    assert cli.main(["train", *TRAIN_ARGS, "--epochs", "2", "--out", str(folder / "one.pt")]) == 0
    return folder / "one.pt"


def test_two_processes_train_the_same_weights_as_one(one_process, tmp_path):
    out = tmp_path / "two.pt"
    first = torchrun("train", *TRAIN_ARGS, "--epochs", "1", "--out", str(out))
    assert first.stdout.count("epoch 1/1") == 1  # one process reports
    resumed = torchrun("train", *TRAIN_ARGS, "--epochs", "2", "--resume", "--out", str(out))
    assert "resuming" in resumed.stdout
    assert_same_weights(weights(one_process), weights(out))
    saved = load_checkpoint(out)
    assert saved["epoch"] == 2 and len(saved["metrics"]["history"]) == 2
    assert not list(tmp_path.glob("*.tmp*"))  # one writer, atomically


def test_global_batch_must_divide_over_the_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [a if a != "16" else "15" for a in TRAIN_ARGS]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "pixelfast",
            "train",
            *args,
            "--out",
            str(tmp_path / "x.pt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode != 0 and "must divide evenly over the 2 processes" in done.stderr
    assert not (tmp_path / "x.pt").exists()


def test_two_processes_sample_the_grid_one_process_samples(one_process, tmp_path):
    args = ["--checkpoint", str(one_process), "--seed", "11", "--labels", "2,7", "--no-progress"]
    assert cli.main(["sample", "--n", "7", *args, "--out", str(tmp_path / "one.png")]) == 0
    done = torchrun("sample", "--num-images", "7", *args, "--out", str(tmp_path / "two.png"))
    assert "over 2 processes" in done.stdout
    one = np.asarray(Image.open(tmp_path / "one.png"))
    two = np.asarray(Image.open(tmp_path / "two.png"))
    assert one.shape == two.shape and (one == two).all()


def test_without_torchrun_nothing_is_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.launched_by_torchrun()
    with distributed.launched(torch.device("cpu")):
        assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.share(0, 10, 3, 0) == (0, 3) and distributed.share(0, 10, 3, 2) == (6, 10)


# --- sample(part=...) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return GatedPixelCNN(in_channels=1, levels=4, hidden_channels=6, num_layers=2, num_classes=3).eval()


@pytest.mark.parametrize("method", ["naive", "cached"])
def test_a_part_is_the_same_slice_of_the_whole_call(small_model, method):
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    image = torch.randint(0, 4, (7, 1, 6, 5))
    known = torch.zeros(6, 5, dtype=torch.bool)
    known[:2] = True
    options = dict(size=(6, 5), labels=labels, generator=5, method=method, progress=False, image=image, known=known)
    whole = sample(small_model, 7, **options)
    pieces = [sample(small_model, 7, part=part, **options) for part in [(0, 3), (3, 4), (4, 7)]]
    assert torch.equal(torch.cat(pieces), whole)


def test_bad_parts_are_refused(small_model):
    with pytest.raises(ValueError, match="0 <= start < stop <= n"):
        sample(small_model, 4, size=3, generator=0, part=(2, 5), progress=False)
    with pytest.raises(ValueError, match="0 <= start < stop <= n"):
        sample(small_model, 4, size=3, generator=0, part=(2, 2), progress=False)
    with pytest.raises(TypeError, match="pair of ints"):
        sample(small_model, 4, size=3, generator=0, part=(0.5, 2), progress=False)
    with pytest.raises(ValueError, match="needs a seed"):
        sample(small_model, 4, size=3, part=(0, 2), progress=False)
    generator = torch.Generator().manual_seed(4)
    before = generator.get_state()
    with pytest.raises(ValueError, match="device"):  # refused after the part is checked
        sample(small_model, 4, size=3, generator=generator, part=(2, 4), device="bogus", progress=False)
    assert torch.equal(generator.get_state(), before)  # a refused call leaves the generator as it was


# --- init_from and augment_shift --------------------------------------------------------------------


def test_init_from_grows_a_gated_model_that_starts_out_equal(tmp_path):
    torch.manual_seed(1)
    source = GatedPixelCNN(
        in_channels=1, levels=4, hidden_channels=6, num_layers=2, num_classes=10, image_size=(28, 28)
    )
    for p in source.parameters():  # trained-looking weights, not the zero class embeddings
        p.data.normal_(0, 0.3)
    save_checkpoint(tmp_path / "source.pt", source)
    grown = train(
        "GatedPixelCNN",
        "mnist-digits",
        limit=32,
        levels=4,
        epochs=1,
        lr=1e-9,
        batch_size=32,
        model_config={"hidden_channels": 6, "num_layers": 5},
        init_from=tmp_path / "source.pt",
        progress=False,
        log=lambda message: None,
    ).model
    x, y = torch.randint(0, 4, (3, 1, 28, 28)), torch.tensor([1, 5, 9])
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(x, y), source.eval()(x, y), rtol=1e-4, atol=1e-4)
    assert grown.blocks[4].h_res.weight.abs().max() < 1e-6  # the added blocks pass h through


def test_init_from_refuses_a_model_that_does_not_fit(tmp_path):
    save_checkpoint(
        tmp_path / "wide.pt",
        GatedPixelCNN(in_channels=1, levels=4, hidden_channels=9, num_layers=2, num_classes=10, image_size=(28, 28)),
    )
    save_checkpoint(
        tmp_path / "other.pt",
        PixelCNN(in_channels=1, levels=4, hidden_channels=6, num_layers=2, num_classes=10, image_size=(28, 28)),
    )
    options = dict(limit=8, levels=4, model_config={"hidden_channels": 6, "num_layers": 3}, progress=False)
    with pytest.raises(ValueError, match="do not fit this model"):
        train("GatedPixelCNN", "mnist-digits", init_from=tmp_path / "wide.pt", **options)
    with pytest.raises(ValueError, match="holds a PixelCNN"):
        train("GatedPixelCNN", "mnist-digits", init_from=tmp_path / "other.pt", **options)
    with pytest.raises(ValueError, match="cannot be combined with resume"):
        train(
            "GatedPixelCNN",
            "mnist-digits",
            init_from=tmp_path / "wide.pt",
            resume=True,
            out=tmp_path / "x.pt",
            **options,
        )


def test_shift_moves_each_image_and_repeats_the_edges():
    x = torch.arange(12).reshape(1, 1, 3, 4).repeat(3, 1, 1, 1)
    out = shift_images(x, [[0, 0], [1, 0], [0, -1]], 1)
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1, 0], torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7]]))  # down one
    assert torch.equal(out[2, 0], torch.tensor([[1, 2, 3, 3], [5, 6, 7, 7], [9, 10, 11, 11]]))  # left one
    assert out.dtype == x.dtype
