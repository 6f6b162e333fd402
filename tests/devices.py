"""The devices the tests run on, the tolerances of their comparisons (fixtures: conftest.py), and the
ops' inputs that several test files build."""

from __future__ import annotations

import contextlib

import pytest
import torch


def cuda_skip_reason() -> str | None:
    """Why the CUDA tests cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    import pixelfast.ops as ops

    if not ops.LOADED:
        return "pixelfast's compiled ops did not load"
    if not ops.WITH_CUDA:
        return "pixelfast was built without CUDA (rebuild with PIXELFAST_CUDA=1)"
    return None


def links_cuda_runtime() -> bool:
    """Whether the compiled library links torch's CUDA runtime (``libc10_cuda``): read from the
    binary itself, independently of the build's own record (``pixelfast._build_info``), so the
    kernel-registration tests compare two sources on a CPU-only build too."""
    from pathlib import Path

    import pixelfast._C

    return b"libc10_cuda" in Path(pixelfast._C.__file__).read_bytes()


CUDA_SKIP = cuda_skip_reason()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(CUDA_SKIP is not None, reason=str(CUDA_SKIP)))]


# Comparison tolerances. On a GPU, cuDNN and cuBLAS pick their own summation orders (and fp32
# atomics), so fp32 results agree to a few ulps of the sums, not bit for bit.
_TOLERANCE = {
    ("cpu", torch.float32): dict(atol=2e-4, rtol=1e-4),
    ("cpu", torch.float64): dict(atol=1e-10, rtol=1e-10),
    ("cuda", torch.float32): dict(atol=5e-4, rtol=5e-4),
    ("cuda", torch.float64): dict(atol=1e-9, rtol=1e-9),
}


def tolerance(dtype: torch.dtype, device: torch.device | str = "cpu") -> dict:
    return _TOLERANCE[(torch.device(device).type, dtype)]


# The ops' inputs: seeded on the CPU (the same numbers on every device), then moved to ``device``.


def conv_inputs(batch, cin, cout, height, width, k, dtype, bias=True, seed=0, device="cpu"):
    """``masked_conv2d``'s ``(x [B, cin, H, W], weight [cout, cin, k, k], bias [cout] or None)``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cin, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(cout, cin, k, k, generator=generator, dtype=dtype)
    b = torch.randn(cout, generator=generator, dtype=dtype) if bias else None
    return x.to(device), weight.to(device), b.to(device) if bias else None


def lstm_inputs(batch, hidden, height, width, taps, dtype, bias=True, seed=0, device="cpu"):
    """The scans' ``(gates [B, 4h, H, W], weight [4h, h, taps], bias [4h] or None)``."""
    generator = torch.Generator().manual_seed(seed)
    gates = torch.randn(batch, 4 * hidden, height, width, generator=generator, dtype=dtype)
    weight = torch.randn(4 * hidden, hidden, taps, generator=generator, dtype=dtype) * 0.5
    b = torch.randn(4 * hidden, generator=generator, dtype=dtype) if bias else None
    return gates.to(device), weight.to(device), b.to(device) if bias else None


@contextlib.contextmanager
def gemm_kernel(name: str):
    """Makes the CPU engine use this matrix-product kernel (csrc/sampler/small_gemm*.h) inside the
    block, then restores the one before; skips the test where the CPU cannot run it."""
    try:
        before = torch.ops.pixelfast.sampler_gemm_kernel(name)
    except ValueError as error:
        assert "cannot run" in str(error)
        pytest.skip(f"this CPU cannot run the {name} kernel")
    try:
        yield name
    finally:
        assert torch.ops.pixelfast.sampler_gemm_kernel(before) == name
