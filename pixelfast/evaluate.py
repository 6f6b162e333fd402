"""Bits per dimension: the mean negative log-likelihood per sub-pixel, in bits.

``bits/dim = sum of -ln p(x_k | x_<k) over every sub-pixel / (number of sub-pixels * ln 2)``.
A model that knew nothing about 256-level data would score 8 bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.data import as_tensors, check_level_values


def bits_per_dim(
    model: nn.Module,
    data,
    *,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """The model's bits/dim on ``data``: a Dataset, an image tensor ``[N, C, H, W]`` of levels, or
    an ``(images, labels)`` pair. ``labels`` overrides the data's labels (needed for a
    class-conditional model when ``data`` is a bare tensor). Runs in eval mode, no grad; the
    model's mode is restored afterwards.
    """
    images, data_labels = as_tensors(data)
    if labels is None:
        labels = data_labels
    conditional = getattr(model, "num_classes", None) is not None
    if conditional and labels is None:
        raise ValueError(
            "bits_per_dim: the model is class-conditional; give data with labels (or labels=...)"
        )
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"bits_per_dim: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    levels = getattr(model, "levels", None)
    if levels is not None:
        check_level_values(images, levels, "bits_per_dim: images")
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(
            f"bits_per_dim: the model takes {in_channels}-channel images, the data has {images.shape[1]}"
        )
    if images.shape[0] == 0:
        raise ValueError("bits_per_dim: the data is empty")
    if batch_size < 1:
        raise ValueError(f"bits_per_dim: batch_size must be >= 1, got {batch_size}")
    if device is None:
        device = _model_device(model)

    was_training = model.training
    model.eval()
    total_nats = 0.0
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                x = images[start : start + batch_size].to(device=device, dtype=torch.int64)
                y = None
                if conditional:
                    y = labels[start : start + batch_size].to(device)
                # a pixelfast model says what its forward takes (super-resolution: the image and its
                # downsampled self)
                logits = model(*model.inputs(x, y)) if hasattr(model, "inputs") else model(x, y)
                total_nats += F.cross_entropy(logits.float(), x, reduction="sum").item()
    finally:
        model.train(was_training)
    return total_nats / (images.numel() * math.log(2))


def baseline_bits_per_dim(train_data, test_data, levels: int) -> float:
    """Bits/dim of an independent categorical per sub-pixel, fitted on ``train_data``.

    Each sub-pixel position gets its own histogram over ``levels`` values with add-one (Laplace)
    smoothing, so unseen test values still get a finite cost. This is the "learned nothing about
    dependencies" reference next to which a model's bits/dim means something.
    """
    train, _ = as_tensors(train_data)
    test, _ = as_tensors(test_data)
    check_level_values(train, levels, "baseline: train images")
    check_level_values(test, levels, "baseline: test images")
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"baseline: train and test images differ in shape: {tuple(train.shape[1:])} vs {tuple(test.shape[1:])}"
        )
    train_flat = train.reshape(train.shape[0], -1).long()  # [N, D]
    counts = torch.ones(train_flat.shape[1], levels, dtype=torch.float64)  # add-one smoothing
    counts.scatter_add_(1, train_flat.t(), torch.ones(train_flat.t().shape, dtype=torch.float64))
    log_p = counts.log() - counts.sum(1, keepdim=True).log()  # [D, levels]
    test_flat = test.reshape(test.shape[0], -1).long()
    nll = -log_p.gather(1, test_flat.t()).sum().item()  # gather per position over test images
    return nll / (test_flat.numel() * math.log(2))


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
