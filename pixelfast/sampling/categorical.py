"""One categorical draw per sub-pixel, from uniforms drawn up front.

Every sampler draws all its uniforms at the start, one per sub-pixel (``[n, C, H, W]``), from the
generator, then turns logits into a level by the inverse CDF of ``softmax(logits / temperature)``.
The compiled engine does the same (``csrc/sampler/pointwise.h``, ``categorical``), so the naive and
the cached sampler draw the same images from the same seed, up to float rounding of the logits.
"""

from __future__ import annotations

import torch


def draw_uniforms(shape, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """float64 uniforms in [0, 1), drawn on the generator's device and moved to ``device``."""
    where = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=where).to(device)


def categorical(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor) -> torch.Tensor:
    """Levels (int64 ``[n]``) for ``logits [n, levels]`` and ``uniforms [n]``: the smallest level whose
    cumulative probability exceeds the uniform."""
    if not torch.isfinite(logits).all():
        raise RuntimeError("sampling: the model produced non-finite logits (NaN or inf)")
    logits = logits.double()
    weights = torch.exp((logits - logits.max(dim=1, keepdim=True).values) / temperature)
    cumulative = torch.cumsum(weights, dim=1)
    above = cumulative > (uniforms.double().to(logits.device) * cumulative[:, -1]).unsqueeze(1)
    # argmax finds the first True; a row with none (u * total rounded up) takes the last level.
    levels = torch.where(above.any(dim=1), above.int().argmax(dim=1), logits.shape[1] - 1)
    return levels.long()


def draw_categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One draw per row of ``logits [n, levels]`` from ``softmax(logits / temperature)``: int64 ``[n]``."""
    uniforms = draw_uniforms(logits.shape[:1], generator, logits.device)
    return categorical(logits, temperature, uniforms)
