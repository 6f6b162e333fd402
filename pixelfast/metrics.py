"""Image quality against a reference: PSNR and SSIM, per image, on level images.

Both take two batches of level images ``[N, C, H, W]`` (or one ``[C, H, W]``) of the same shape, values
in ``0..levels-1`` (integers, or floats such as a predicted mean), and the number of ``levels`` (the
peak value is ``levels - 1``), and return one value per image
(``float64 [N]``); average them yourself.

* :func:`psnr`: ``10 log10(peak^2 / MSE)``; ``inf`` for identical images.
* :func:`ssim`: Wang, Bovik, Sheikh, Simoncelli (2004), the standard settings: an 11x11 Gaussian
  window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03`` (``C1 = (K1 peak)^2``, ``C2 = (K2 peak)^2``),
  the local statistics over the window positions that fit inside the image ("valid"), the mean of
  the SSIM map over those positions and over the channels. Images smaller than the window use a
  window cropped to the image (its Gaussian weights renormalised).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pixelfast.data import check_levels

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(images: torch.Tensor, reference: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image against its reference, in dB: ``float64 [N]``."""
    a, b = _pair(images, reference, levels, "psnr")
    mse = (a - b).pow(2).flatten(1).mean(1)
    peak = float(levels - 1)
    return 10.0 * torch.log10(peak**2 / mse)  # mse 0 -> inf


def ssim(images: torch.Tensor, reference: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Structural similarity of each image to its reference (1 when equal): ``float64 [N]``."""
    a, b = _pair(images, reference, levels, "ssim")
    peak = float(levels - 1)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    n, channels, height, width = a.shape
    window = gaussian_window(min(SSIM_WINDOW, height), min(SSIM_WINDOW, width), SSIM_SIGMA)
    window = window.to(a).expand(channels, 1, *window.shape)

    def local(t: torch.Tensor) -> torch.Tensor:  # weighted local mean, per channel, valid positions
        return F.conv2d(t, window, groups=channels)

    mu_a, mu_b = local(a), local(b)
    var_a = local(a * a) - mu_a**2
    var_b = local(b * b) - mu_b**2
    cov = local(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


def gaussian_window(height: int = SSIM_WINDOW, width: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """A ``[height, width]`` float64 Gaussian (centred, standard deviation ``sigma``) summing to 1."""
    if height < 1 or width < 1 or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"gaussian_window: needs a size >= 1x1 and sigma > 0, got {height}x{width}, sigma={sigma}")

    def one(size: int) -> torch.Tensor:
        t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(t**2) / (2 * sigma**2))
        return g / g.sum()

    return torch.outer(one(height), one(width))


def _pair(images, reference, levels: int, owner: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_levels(levels)
    for name, t in (("images", images), ("reference", reference)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{owner}: {name} must be a tensor of levels, got {type(t).__name__}")
        if t.dim() not in (3, 4):
            raise ValueError(f"{owner}: {name} must be [N, C, H, W] or [C, H, W], got shape {list(t.shape)}")
    if images.shape != reference.shape:
        raise ValueError(
            f"{owner}: images and reference differ in shape: {list(images.shape)} vs {list(reference.shape)}"
        )
    if images.numel() == 0:
        raise ValueError(f"{owner}: the images are empty (shape {list(images.shape)})")
    for name, t in (("images", images), ("reference", reference)):
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"{owner}: {name} must hold levels (integers or floats), got dtype {t.dtype}")
        if not torch.isfinite(t.to(torch.float64)).all() or t.min() < 0 or t.max() > levels - 1:
            raise ValueError(f"{owner}: {name} must hold values in 0..{levels - 1} (levels={levels})")
    a = images.detach().cpu().to(torch.float64)
    b = reference.detach().cpu().to(torch.float64)
    if a.dim() == 3:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    return a, b
