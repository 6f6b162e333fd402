"""The exact, slow sampler: the whole network re-run for every sub-pixel.

Order: pixels in raster order (row by row, left to right), and R, G, B within a pixel. Each step
runs ``model(x, labels)`` on the whole partly-drawn batch (``labels``: the model's second input, the
class labels, or a super-resolution model's low-resolution images) and draws sub-pixel ``(c, i, j)`` of every
image from the logits there. This is the reference the cached engine is tested against, so it
does nothing clever: no cropping, no caching.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from pixelfast.sampling.categorical import categorical, draw_uniforms


def sample_naive(
    model: nn.Module,
    x: torch.Tensor,
    known: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    generator: torch.Generator | None,
    progress: bool = True,
) -> torch.Tensor:
    """Fill the sub-pixels of ``x`` (int64 ``[n, C, H, W]``) where ``known`` is False.

    Arguments are already checked and on the model's device (see :func:`pixelfast.sample`).
    The uniforms for every sub-pixel are drawn up front (see :mod:`pixelfast.sampling.categorical`),
    so the result does not depend on which sub-pixels are known. A sub-pixel known in every image
    is skipped without running the network; known values are kept.
    """
    x = x.clone()
    n, channels, height, width = x.shape
    uniforms = draw_uniforms(x.shape, generator, x.device)
    expected = (n, model.levels, channels, height, width)
    bar = tqdm(total=height * width, desc="sampling (naive)", unit="px", disable=not progress, leave=False)
    try:
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    todo = ~known[:, c, i, j]
                    if not todo.any():
                        continue
                    logits = model(x, labels)  # [n, levels, C, H, W]
                    if logits.shape != expected:
                        raise RuntimeError(
                            f"sampling: {type(model).__name__} returned logits of shape {tuple(logits.shape)}; "
                            f"expected [n, levels, C, H, W] = {list(expected)}"
                        )
                    draw = categorical(logits[:, :, c, i, j], temperature, uniforms[:, c, i, j])
                    x[:, c, i, j] = torch.where(todo, draw, x[:, c, i, j])
                bar.update(1)
    finally:
        bar.close()
    return x
