"""Causality checks shared by the model tests (autograd tells which input sub-pixels each logit
reads), and the small models they check."""

from __future__ import annotations

import torch

LEVELS = 4


def tiny(cls, in_channels, seed=0, **kwargs):
    """A small float64 model; class embeddings randomised so conditioning is visible."""
    torch.manual_seed(seed)
    defaults = {"hidden_channels": 6, "num_layers": 2, "levels": LEVELS}
    model = cls(in_channels=in_channels, **{**defaults, **kwargs}).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "class" in name:
                param.normal_()
    return model


def levels_image(batch, channels, height, width, levels=LEVELS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (batch, channels, height, width), generator=g)


def earlier(c, i, j, channels, height, width):
    """Boolean [C, H, W]: sub-pixels strictly before (c, i, j) in raster, then R-G-B, order."""
    mask = torch.zeros(channels, height, width, dtype=torch.bool)
    mask[:, :i] = True
    mask[:, i, :j] = True
    mask[:c, i, j] = True
    return mask


def all_positions(channels, height, width):
    return [(c, i, j) for i in range(height) for j in range(width) for c in range(channels)]


def subpixel_grads(model, image, positions, labels=None):
    """d(logits at each position, projected on a random vector over levels) / d(input sub-pixels).

    One forward/backward: the image is repeated once per position, and copy n's loss is the logits
    at position n, so copy n's input gradient is exactly that position's (images never interact).
    """
    n = len(positions)
    device = next(model.parameters()).device
    x = image.double().to(device).repeat(n, 1, 1, 1).requires_grad_(True)
    lab = None if labels is None else labels.to(device).repeat(n)
    logits = model(x, lab)
    assert logits.shape == (n, model.levels, *image.shape[1:])
    direction = torch.randn(model.levels, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(device)
    total = sum((logits[k, :, c, i, j] * direction).sum() for k, (c, i, j) in enumerate(positions))
    total.backward()
    return x.grad.cpu()


def check_causal(model, height, width, positions=None, labels=None, images=3):
    """Assert zero gradient w.r.t. every sub-pixel at or after each position, for a few images.

    Returns ``depends [N, C, H, W]``: where any image's gradient is nonzero. (One image can hide a
    dependence when every ReLU of the head is off at that position; the union cannot, in practice.)
    """
    channels = model.in_channels
    positions = positions or all_positions(channels, height, width)
    depends = torch.zeros(len(positions), channels, height, width, dtype=torch.bool)
    for seed in range(images):
        image = levels_image(1, channels, height, width, levels=model.levels, seed=seed)
        grads = subpixel_grads(model, image, positions, labels)
        for k, (c, i, j) in enumerate(positions):
            leaked = grads[k][~earlier(c, i, j, channels, height, width)]
            assert torch.all(leaked == 0), f"logits at {(c, i, j)} depend on the present/future"
        depends |= grads != 0
    return depends


def assert_sees_immediate_past(depends, positions):
    """Each position's logits read the pixel to its left, the pixel above and its earlier colours."""
    for k, (c, i, j) in enumerate(positions):
        if j > 0:
            assert torch.all(depends[k][:, i, j - 1]), f"{(c, i, j)} does not see the pixel to its left"
        if i > 0:
            assert torch.all(depends[k][:, i - 1, j]), f"{(c, i, j)} does not see the pixel above"
        assert torch.all(depends[k][:c, i, j]), f"{(c, i, j)} does not see its earlier colours"
