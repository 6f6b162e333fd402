"""The exact, slow sampler: the whole network re-run for every sub-pixel.

Order: pixels in raster order (row by row, left to right), and R, G, B within a pixel. Each step
runs ``model(x, labels)`` on the whole partly-drawn batch and draws sub-pixel ``(c, i, j)`` of every
image from the logits there. This is the reference the cached engine is tested against, so it
does nothing clever: no cropping, no caching.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm


def draw_categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per row of ``logits [n, levels]`` from ``softmax(logits / temperature)``: int64 ``[n]``.

    The draw happens on the generator's device (so an integer seed gives the same stream whatever
    device the model runs on) and the result comes back to the logits' device.
    """
    if not torch.isfinite(logits).all():
        raise RuntimeError("sampling: the model produced non-finite logits (NaN or inf)")
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if generator is not None and probs.device != generator.device:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)


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
    A sub-pixel known in every image is skipped without running the network; otherwise every
    image gets a draw (so the random stream does not depend on which images are known there) and
    known values are kept.
    """
    x = x.clone()
    n, channels, height, width = x.shape
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
                    draw = draw_categorical(logits[:, :, c, i, j], temperature, generator)
                    x[:, c, i, j] = torch.where(todo, draw, x[:, c, i, j])
                bar.update(1)
    finally:
        bar.close()
    return x
