"""``pixelfast.upscale``: high-resolution images drawn from a super-resolution model given low-resolution ones.

Methods:

- ``"cached"``: the conditioning network runs once per input image, giving ``A(x)``; the engine
  runs the prior, lowered with a condition op in its head, and adds ``A(x)`` to the prior's logits
  at every sub-pixel before the draw (see :func:`pixelfast.sampling.plan.lower`).
- ``"naive"``: the whole model, ``A(x) + B(y_<i)``, re-run for every sub-pixel.
- ``"auto"``: cached when the engine runs the prior, else naive with a warning.

A model without a prior (``objective="independent"`` or ``"l2"``) draws every sub-pixel at once from
``softmax(A(x) / temperature)``, whatever the method. All methods take the same uniforms
(:mod:`pixelfast.sampling.categorical`), so they draw the same images from the same seed.
"""

from __future__ import annotations

import torch

from pixelfast._checks import check_temperature, model_device
from pixelfast.data import check_level_values
from pixelfast.models.super_resolution import SuperResolution
from pixelfast.sampling.api import (
    METHODS,
    _check_generator,
    _check_n,
    _pick_method,
    check_canvas,
    eval_no_grad,
)
from pixelfast.sampling.cached import check_precision, sample_cached
from pixelfast.sampling.categorical import categorical, draw_uniforms
from pixelfast.sampling.naive import sample_naive
from pixelfast.sampling.precision import full_fp32


def upscale(
    model: SuperResolution,
    low: torch.Tensor,
    *,
    n: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | int | None = None,
    method: str = "auto",
    progress: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """``n`` high-resolution samples per low-resolution image: ``uint8 [len(low) * n, C, H, W]``.

    - ``low``: levels ``[B, C, h, w]`` (or one image ``[C, h, w]``), integers or floats holding
      whole numbers; ``H, W = scale * h, scale * w``. When the model records the size it was
      trained on (``image_size``), ``h, w`` must be that size divided by ``scale``.
    - Output image ``k * n + s`` is sample ``s`` of input ``k``.
    - ``temperature``, ``generator``, ``method``, ``progress``, ``precision``: as in
      :func:`pixelfast.sample` (``"bf16"`` needs the cached engine: a model with a prior).

    Runs under ``torch.no_grad()`` in eval mode and in full fp32, on the model's device; the
    model's training mode and the precision settings are restored afterwards.
    """
    if not isinstance(model, SuperResolution):
        raise TypeError(f"upscale: model must be a pixelfast.models.SuperResolution, got {type(model).__name__}")
    low = _check_low(low, model)
    n = _check_n(n)
    temperature = check_temperature("sample", temperature)
    generator = _check_generator(generator)
    if method not in METHODS:
        raise ValueError(f"upscale: method must be one of {METHODS}, got {method!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"upscale: progress must be True or False, got {progress!r}")
    precision = check_precision("upscale", precision, model_device(model))
    if precision != "fp32" and (model.prior is None or method == "naive"):
        raise ValueError(
            f"upscale: precision={precision!r} is the cached engine's, which draws a model with a prior "
            f"(this one: {'none' if model.prior is None else 'method naive'}); use precision='fp32'"
        )
    cached = (
        model.prior is not None
        and _pick_method("cached" if precision != "fp32" else method, model, "upscale") is sample_cached
    )
    check_canvas(low.shape[0] * n, low.shape[1], model.scale * low.shape[2], model.scale * low.shape[3])

    device = model_device(model)
    with eval_no_grad(model), full_fp32():
        low = low.to(device)
        batch, channels, height, width = low.shape
        high = torch.zeros(
            batch * n, channels, model.scale * height, model.scale * width, dtype=torch.int64, device=device
        )
        known = torch.zeros_like(high, dtype=torch.bool)
        if model.prior is None:
            out = _draw_independent(model.conditioning_logits(low).repeat_interleave(n, 0), temperature, generator)
        elif cached:  # one conditioning forward per input image, then the engine
            condition = model.conditioning_logits(low).repeat_interleave(n, 0)
            out = sample_cached(
                model, high, known, None, temperature, generator, progress, condition=condition, precision=precision
            )
        else:  # the model's second input is the low-resolution image
            out = sample_naive(model, high, known, low.repeat_interleave(n, 0), temperature, generator, progress)
    return out.to(torch.uint8)


def _check_low(low, model: SuperResolution) -> torch.Tensor:
    """``low`` as int64 ``[B, C, h, w]`` on the CPU, or a clear error."""
    if not isinstance(low, torch.Tensor):
        raise TypeError(f"upscale: low must be a tensor of levels, got {type(low).__name__}")
    if low.dtype == torch.bool or low.is_complex():
        raise TypeError(f"upscale: low must hold integer levels (int or whole floats), got dtype {low.dtype}")
    if low.dim() == 3:
        low = low.unsqueeze(0)
    if low.dim() != 4 or low.shape[1] != model.in_channels:
        raise ValueError(
            f"upscale: low must be [B, {model.in_channels}, h, w] or [{model.in_channels}, h, w] (the model has "
            f"in_channels={model.in_channels}), got shape {list(low.shape)}"
        )
    if low.shape[0] < 1 or low.shape[2] < 1 or low.shape[3] < 1:
        raise ValueError(f"upscale: low must hold at least one image of at least 1x1, got shape {list(low.shape)}")
    if model.image_size is not None:
        expected = tuple(s // model.scale for s in model.image_size)
        if tuple(low.shape[2:]) != expected or any(s % model.scale for s in model.image_size):
            raise ValueError(
                f"upscale: the model enlarges {expected[0]}x{expected[1]} images {model.scale}x to "
                f"{model.image_size[0]}x{model.image_size[1]} (scale={model.scale}); got a "
                f"{low.shape[2]}x{low.shape[3]} low-resolution image"
            )
    low = low.detach().cpu()
    check_level_values(low, model.levels, "upscale: low")
    return low.to(torch.int64)


def _draw_independent(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Every sub-pixel at once from ``logits [N, levels, C, H, W]``, with the samplers' uniforms."""
    batch, levels, channels, height, width = logits.shape
    uniforms = draw_uniforms((batch, channels, height, width), generator, logits.device)
    rows = logits.permute(0, 2, 3, 4, 1).reshape(-1, levels)
    return categorical(rows, temperature, uniforms.reshape(-1)).view(batch, channels, height, width)
