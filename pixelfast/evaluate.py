"""Likelihoods: each image's exact log-likelihood (:func:`log_prob`) and bits per dimension, the
mean negative log-likelihood per sub-pixel, in bits.

``bits/dim = sum of -ln p(x_k | x_<k) over every sub-pixel / (number of sub-pixels * ln 2)``.
A model that knew nothing about 256-level data would score 8 bits/dim.

A latent-variable model with an ``elbo_nats`` method (:class:`~pixelfast.models.ConvVAE`) has no
exact likelihood to offer: it is scored by its evidence lower bound, so its bits/dim are an upper
bound. A model with ``has_likelihood = False`` (:class:`~pixelfast.models.DCGAN`) is refused.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pixelfast._checks import model_device
from pixelfast.data import as_tensors, check_level_values
from pixelfast.device import check_device


def log_prob(
    model: nn.Module,
    images,
    labels: torch.Tensor | None = None,
    condition: torch.Tensor | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The exact log-likelihood of each image, in nats: float64 ``[N]``, entry ``n`` the sum over
    image ``n``'s sub-pixels of ``ln p(x_k | x_<k)``, from one forward pass per batch.

    ``images``: a Dataset, an image tensor ``[N, C, H, W]`` of levels, or an ``(images, labels)``
    pair. ``labels`` (``[N]``) overrides the data's labels; a class-conditional model needs them,
    an unconditional one ignores the data's.
    ``condition`` (``[N, ...]``), for a model conditioned on something other than a class, is
    passed to its forward as the second argument instead of labels, ``condition[k]`` with image
    ``k``. Runs in eval mode, no grad, ``batch_size`` images at a time (a tqdm bar when
    ``progress``) with the images on ``device`` (default: the model's, where the model must be);
    the model's mode is restored afterwards, also when several threads score with one model.
    Higher is more likely; ``-log_prob / (C * H * W * ln 2)`` is an image's bits/dim.

    For a model with an ``elbo_nats`` method (a VAE) each entry is instead the image's evidence
    lower bound (``<= ln p(x)``), from one latent per image drawn from a generator seeded 0, so
    repeated calls agree. A model without a likelihood (a GAN) raises a ValueError.
    """
    from pixelfast.sampling.api import eval_no_grad

    check_likelihood(model, "log_prob")
    images, data_labels = as_tensors(images)
    if condition is not None and labels is not None:
        raise ValueError("log_prob: give labels or condition, not both (either is the forward's second argument)")
    conditional = getattr(model, "num_classes", None) is not None
    if labels is None and conditional and condition is None:
        labels = data_labels  # an unconditional model ignores the data's labels
    if conditional and labels is None and condition is None:
        raise ValueError("log_prob: the model is class-conditional; give data with labels (or labels=...)")
    if labels is not None:
        if not conditional:
            raise ValueError("log_prob: labels were given but the model is unconditional (num_classes is None)")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"log_prob: labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if condition is not None:
        if not isinstance(condition, torch.Tensor) or condition.dim() < 1 or condition.shape[0] != images.shape[0]:
            shape = tuple(condition.shape) if isinstance(condition, torch.Tensor) else type(condition).__name__
            raise ValueError(
                f"log_prob: condition must be a tensor with one entry per image, [{images.shape[0]}, ...], got {shape}"
            )
    levels = getattr(model, "levels", None)
    if levels is not None:
        check_level_values(images, levels, "log_prob: images")
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(f"log_prob: the model takes {in_channels}-channel images, the data has {images.shape[1]}")
    if images.shape[0] == 0:
        raise ValueError("log_prob: the data is empty")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"log_prob: batch_size must be an int >= 1, got {batch_size!r}")
    device = model_device(model) if device is None else check_device(device, "log_prob")
    second = labels if labels is not None else condition

    out = torch.empty(images.shape[0], dtype=torch.float64)
    starts = range(0, images.shape[0], batch_size)
    bound = condition is None and callable(getattr(model, "elbo_nats", None))
    latents = torch.Generator().manual_seed(0) if bound else None
    with eval_no_grad(model):
        for start in tqdm(starts, desc="log_prob", unit="batch", disable=not progress, leave=False):
            x = images[start : start + batch_size].to(device=device, dtype=torch.int64)
            y = None if second is None else second[start : start + batch_size].to(device)
            if bound:  # a latent-variable model: its evidence lower bound
                out[start : start + x.shape[0]] = model.elbo_nats(*model.inputs(x, y), generator=latents).double().cpu()
                continue
            # without a condition, a pixelfast model says what its forward takes (super-resolution:
            # the image and its own downsampled self)
            logits = model(*model.inputs(x, y)) if condition is None and hasattr(model, "inputs") else model(x, y)
            nats = F.cross_entropy(logits.float(), x, reduction="none")  # [B, C, H, W]
            out[start : start + x.shape[0]] = -nats.double().sum(dim=(1, 2, 3)).cpu()
    return out


def bits_per_dim(
    model: nn.Module,
    data,
    *,
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """The model's bits/dim on ``data`` (see :func:`log_prob` for ``data`` and ``labels``): the
    images' total negative log-likelihood over their number of sub-pixels, in bits. For a VAE, the
    negative ELBO's: an upper bound on its bits/dim. A model without a likelihood (a GAN) raises a
    ValueError."""
    check_likelihood(model, "bits_per_dim")
    nats = log_prob(model, data, labels, batch_size=batch_size, device=device, progress=False)
    return -nats.sum().item() / (as_tensors(data)[0].numel() * math.log(2))


def check_likelihood(model: nn.Module, caller: str) -> None:
    """Raise a ValueError naming the model when it has no likelihood to score (a GAN)."""
    if not getattr(model, "has_likelihood", True):
        name = getattr(type(model), "name", None) or type(model).__name__
        raise ValueError(
            f"{caller}: {name} has no likelihood (it is an implicit model, trained adversarially), so it has "
            "no log-likelihood or bits/dim; compare it by its samples"
        )


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
