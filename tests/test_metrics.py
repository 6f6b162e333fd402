"""PSNR and SSIM (``pixelfast.metrics``): known values, the standard SSIM recipe, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pixelfast.data import mnist_digits
from pixelfast.metrics import gaussian_window, psnr, ssim


def test_psnr_known_values():
    a = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0] += 10  # every pixel off by 10: MSE 100
    b[1, 0, 0, 0] = 255  # one pixel of 16 off by 255: MSE 255^2 / 16
    values = psnr(b, a, 256)
    assert values.dtype == torch.float64 and values.shape == (2,)
    assert values[0].item() == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert values[1].item() == pytest.approx(10 * math.log10(16))  # 12.0412 dB
    assert psnr(a, a).isinf().all()
    assert psnr(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), levels=2).item() == pytest.approx(0.0)  # [C, H, W]


def test_ssim_of_constant_images_is_the_luminance_term():
    # no variance anywhere: SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1), C1 = (0.01 * 255)^2
    a = torch.full((1, 1, 16, 16), 100.0)
    b = torch.full((1, 1, 16, 16), 50.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 50 + c1) / (100**2 + 50**2 + c1)  # 0.80010...
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-12)
    assert ssim(a, b).item() == pytest.approx(0.800103986, abs=1e-9)


def test_ssim_matches_the_standard_recipe():
    """Wang et al. with the settings of scikit-image's ``structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255)``: Gaussian-filtered moments (radius
    ``int(3.5 * 1.5 + 0.5) = 5``, an 11x11 window), the map averaged over the positions 5 pixels
    away from every border. Written here with scipy's filter, independently of pixelfast's."""
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    digits = mnist_digits("test").images[:3].double()
    noisy = (digits + torch.randn(digits.shape, generator=torch.Generator().manual_seed(0)) * 40).clamp(0, 255).round()
    for x, y in zip(digits[:, 0].numpy(), noisy[:, 0].numpy()):

        def filt(t):
            return ndimage.gaussian_filter(t, sigma=1.5, truncate=3.5, mode="reflect")

        mx, my = filt(x), filt(y)
        vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        expected = float(np.mean(smap[5:-5, 5:-5]))
        got = ssim(torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None]).item()
        assert got == pytest.approx(expected, abs=1e-9)
        assert 0.0 < got < 0.99  # the noise costs


def test_ssim_properties():
    digits = mnist_digits("test").images[:4]
    assert torch.allclose(ssim(digits, digits), torch.ones(4, dtype=torch.float64))
    shifted = torch.roll(digits, 3, dims=3)
    forward, backward = ssim(shifted, digits), ssim(digits, shifted)
    assert torch.allclose(forward, backward) and (forward < 0.9).all()  # symmetric; a shift costs
    # RGB: the mean over channels; a channel that is equal adds 1
    rgb = torch.cat([digits, shifted, digits], 1)
    same = torch.cat([digits, digits, digits], 1)
    assert torch.allclose(ssim(rgb, same), (2 + ssim(shifted, digits)) / 3)
    # images smaller than the window: the window is cropped to the image
    small = digits[:, :, 10:16, 10:16]
    assert ssim(small, small).tolist() == pytest.approx([1.0] * 4)
    assert gaussian_window(5, 3).sum().item() == pytest.approx(1.0) and gaussian_window(5, 3).shape == (5, 3)


def test_metrics_refuse_bad_input():
    a = torch.zeros(2, 1, 8, 8)
    for fn in (psnr, ssim):
        with pytest.raises(ValueError, match="differ in shape"):
            fn(a, torch.zeros(2, 1, 8, 7))
        with pytest.raises(ValueError, match="values in 0..255"):
            fn(a + 256, a)
        with pytest.raises(ValueError, match="values in 0..3"):
            fn(a, a + 4, levels=4)
        with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
            fn(a[0, 0], a[0, 0])
        with pytest.raises(TypeError, match="must be a tensor"):
            fn(a.tolist(), a)
        with pytest.raises(TypeError, match="dtype torch.bool"):
            fn(a.bool(), a.bool())
        with pytest.raises(ValueError, match="levels must be an integer"):
            fn(a, a, levels=1)
        with pytest.raises(ValueError, match="empty"):
            fn(a[:0], a[:0])
    with pytest.raises(ValueError, match="sigma > 0"):
        gaussian_window(11, 11, 0.0)
