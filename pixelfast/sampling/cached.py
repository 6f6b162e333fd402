"""The cached sampler: the model lowered once into a plan, then one compiled engine call.

The engine (``csrc/sampler``) keeps, per layer, a cache of the few rows its kernels reach and, for
each generated sub-pixel, computes only the activations at that position: one network evaluation
per position in all, against one per sub-pixel *per position* for the naive sampler.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from pixelfast.ops._library import require_library
from pixelfast.sampling.categorical import draw_uniforms
from pixelfast.sampling.plan import Plan, lower

# Images per engine call: enough to keep the engine's matrix products efficient, few enough that
# the progress bar moves on big jobs.
CHUNK = 64


def run_engine(
    plan: Plan,
    image: torch.Tensor,
    known: torch.Tensor,
    uniforms: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    levels: int,
    record_logits: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    require_library()
    return torch.ops.pixelfast.sample_cached(
        plan.weights, plan.flat_buffers(), plan.program, image, known, uniforms, labels,
        float(temperature), int(levels), record_logits,
    )


def sample_cached(
    model: nn.Module,
    x: torch.Tensor,
    known: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    generator: torch.Generator | None,
    progress: bool = True,
    plan: Plan | None = None,
) -> torch.Tensor:
    """Fill the sub-pixels of ``x`` (int64 ``[n, C, H, W]``) where ``known`` is False, with the engine.

    Same contract as :func:`pixelfast.sampling.naive.sample_naive`, and the same uniforms, so the
    same seed gives the same images as the naive sampler (up to float rounding of the logits).
    """
    plan = plan if plan is not None else lower(model)
    uniforms = draw_uniforms(x.shape, generator, x.device)
    n = x.shape[0]
    chunks = range(0, n, CHUNK)
    out = []
    with tqdm(total=n, desc="sampling (cached)", unit="img", disable=not progress, leave=False) as bar:
        for start in chunks:
            part = slice(start, start + CHUNK)
            images, _ = run_engine(
                plan, x[part].contiguous(), known[part].contiguous(), uniforms[part].contiguous(),
                None if labels is None else labels[part].contiguous(), temperature, model.levels, False,
            )
            out.append(images)
            bar.update(images.shape[0])
    return torch.cat(out)


def incremental_logits(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """The logits the cached engine computes at every sub-pixel when fed ``x`` (teacher-forced).

    ``x``: levels ``[B, C, H, W]``; returns ``[B, levels, C, H, W]``. This is the engine's
    correctness contract: it equals ``model(x, labels)`` up to float rounding.
    """
    plan = lower(model)
    parameter = next(model.parameters())
    labels = model.check_input(x, labels)  # shape, channels, level range, labels (as int64)
    image = x.detach().to(parameter.device).round().long()
    known = torch.ones_like(image, dtype=torch.bool)
    uniforms = torch.zeros(image.shape, dtype=torch.float64, device=image.device)
    _, logits = run_engine(plan, image.contiguous(), known, uniforms, labels, 1.0, model.levels, True)
    return logits
