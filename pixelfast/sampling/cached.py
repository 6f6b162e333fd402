"""The cached sampler: the model lowered once into a plan, then one compiled engine call.

The engine (``csrc/sampler``) keeps, per layer, a cache of the few rows its kernels reach and, for
each generated sub-pixel, computes only the activations at that position: one network evaluation
per position in all, against one per sub-pixel *per position* for the naive sampler.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from pixelfast.models.base import PixelModel
from pixelfast.models.super_resolution import SuperResolution
from pixelfast.ops._library import require_library
from pixelfast.sampling.categorical import draw_uniforms
from pixelfast.sampling.plan import Plan, lower
from pixelfast.sampling.plan_format import check_library
from pixelfast.sampling.precision import full_fp32

# Images per engine call on the CPU: enough to keep the engine's matrix products efficient, few
# enough that the progress bar moves on big jobs (and that a thread's images' cached rows stay in
# its cache: one call of 100 guided digits took 0.95-0.98 s against 0.86-0.92 s for 64 + 36). On
# CUDA every image goes in one launch (clusters of blocks, each a tile of the images) when it fits
# in memory: chunks there would only serialise the GPU on a host sync each.
CHUNK = 64
# The share of the GPU's free memory one engine call may plan to use.
CUDA_MEMORY_SHARE = 0.5
# The engine's precisions: "fp32" computes in the weights' dtype (float32 or float64); "bf16" rounds
# the convs' inputs and weights to bfloat16 and sums in float32 (the CPU engine, on AMX tiles where
# the CPU has them: csrc/sampler/small_gemm_bf16.h; the CUDA engine on tensor cores:
# csrc/sampler/engine_mma.cuh); "tf32" rounds them to tf32 (10-bit mantissa) and sums in float32
# (the CUDA engine's tensor cores only).
PRECISIONS = ("fp32", "bf16", "tf32")


def check_precision(caller: str, precision, device: torch.device | str | None = None) -> str:
    """``precision`` checked: one of :data:`PRECISIONS`, and ``"tf32"`` only on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"{caller}: precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise ValueError(
            f"{caller}: precision='tf32' runs on the CUDA engine only (tensor cores); on "
            f"{torch.device(device).type} use 'fp32' or 'bf16'"
        )
    return precision


def engine_bytes_per_image(
    plan: Plan, channels: int, height: int, width: int, levels: int, record_logits: bool = False
) -> int:
    """The memory one image costs an engine call: its cached rows (the plan's buffers, see
    :meth:`Plan.cache_values_per_image`), its contiguous inputs (int64 image, bool mask, float64
    uniforms), its int64 output and, when recorded, its logits. The weights are shared by all images."""
    element = plan.weights[0].element_size() if plan.weights else 4
    sub_pixels = channels * height * width
    total = plan.cache_values_per_image(width) * element + sub_pixels * (8 + 1 + 8 + 8)
    if record_logits:
        total += levels * sub_pixels * element
    return total


def chunk_size(n: int, device: torch.device, bytes_per_image: int, free_bytes: int | None = None) -> int:
    """Images per engine call: ``CHUNK`` on the CPU; on CUDA all ``n`` at once when they fit in
    ``CUDA_MEMORY_SHARE`` of the free memory (``free_bytes``, default ``torch.cuda.mem_get_info``),
    else as many as fit (at least one)."""
    if n < 1:
        raise ValueError(f"chunk_size: n must be >= 1, got {n}")
    if bytes_per_image < 1:
        raise ValueError(f"chunk_size: bytes_per_image must be >= 1, got {bytes_per_image}")
    if torch.device(device).type != "cuda":
        return min(n, CHUNK)
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    fits = int(free_bytes * CUDA_MEMORY_SHARE) // bytes_per_image
    return max(1, min(n, fits))


def run_engine(
    plan: Plan,
    image: torch.Tensor,
    known: torch.Tensor,
    uniforms: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    levels: int,
    record_logits: bool,
    condition: torch.Tensor | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One engine call. ``condition``: logits ``[B, levels, C, H, W]`` that the plan's condition op
    adds to the model's own (super-resolution's ``A(x)``), or None; ``precision``: see
    :data:`PRECISIONS`."""
    require_library()
    check_library()
    if condition is not None:  # the engine reads a position's values contiguously: [B, H, W, C * levels]
        condition = condition.permute(0, 3, 4, 2, 1).flatten(3).contiguous()
    return torch.ops.pixelfast.sample_cached(
        plan.weights,
        plan.flat_buffers(),
        plan.program,
        image,
        known,
        uniforms,
        labels,
        float(temperature),
        int(levels),
        record_logits,
        condition,
        precision,
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
    condition: torch.Tensor | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Fill the sub-pixels of ``x`` (int64 ``[n, C, H, W]``) where ``known`` is False, with the engine.

    Same contract as :func:`pixelfast.sampling.naive.sample_naive`, and the same uniforms, so the
    same seed gives the same images as the naive sampler (up to float rounding of the logits).
    ``condition``: logits ``[n, levels, C, H, W]`` added to the model's before each draw (a
    super-resolution model's ``A(x)``; see :func:`run_engine`). ``precision``: ``"fp32"``, ``"bf16"``
    or (CUDA only) ``"tf32"`` (:data:`PRECISIONS`; with the last two the images can differ from
    the naive sampler's where a uniform falls near the edge between two levels).
    """
    precision = check_precision("sample_cached", precision, x.device)
    plan = plan if plan is not None else lower(model)
    uniforms = draw_uniforms(x.shape, generator, x.device)
    n, channels, height, width = x.shape
    if n == 0:
        return x.clone()
    step = chunk_size(n, x.device, engine_bytes_per_image(plan, channels, height, width, model.levels))
    out = []
    with tqdm(total=n, desc="sampling (cached)", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, step):
            part = slice(start, start + step)
            images, _ = run_engine(
                plan,
                x[part].contiguous(),
                known[part].contiguous(),
                uniforms[part].contiguous(),
                None if labels is None else labels[part].contiguous(),
                temperature,
                model.levels,
                False,
                None if condition is None else condition[part],
                precision,
            )
            out.append(images)
            bar.update(images.shape[0])
    return torch.cat(out)


def incremental_logits(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    condition: torch.Tensor | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """The logits the cached engine computes at every sub-pixel when fed ``x`` (teacher-forced).

    ``x``: levels ``[B, C, H, W]``; returns ``[B, levels, C, H, W]``. This is the engine's
    correctness contract: it equals ``model(x, labels)`` up to float rounding, and for a
    super-resolution model ``model(x, condition)``, ``condition`` being the low-resolution image
    (its ``A(condition)`` is computed once and added inside the engine). Runs in full fp32 (TF32
    off, restored afterwards; see :mod:`pixelfast.sampling.precision`). ``precision="bf16"`` (or
    ``"tf32"`` on CUDA): the logits of the engine's bf16 (tf32) products (:data:`PRECISIONS`),
    within that rounding of those.
    """
    with full_fp32(), torch.no_grad():
        return _incremental_logits(model, x, labels, condition, precision)


def _incremental_logits(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    condition: torch.Tensor | None,
    precision: str,
) -> torch.Tensor:
    parameter = next(model.parameters())
    precision = check_precision("incremental_logits", precision, parameter.device)
    plan = lower(model)
    labels = _check_input(model, x, labels)  # shape, channels, level range, labels (as int64)
    if isinstance(model, SuperResolution):
        if condition is None:
            raise ValueError("incremental_logits: a super-resolution model needs condition=, the low-resolution image")
        model.check_pair(x, condition)
        condition = model.conditioning_logits(condition)
    elif condition is not None:
        raise ValueError(f"incremental_logits: condition= is for super-resolution models, not {type(model).__name__}")
    image = x.detach().to(parameter.device).round().long()
    known = torch.ones_like(image, dtype=torch.bool)
    uniforms = torch.zeros(image.shape, dtype=torch.float64, device=image.device)
    _, logits = run_engine(
        plan, image.contiguous(), known, uniforms, labels, 1.0, model.levels, True, condition, precision
    )
    return logits


def _check_input(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """The model's ``check_input``; for a model of the user's own with none (an ``nn.Module`` with the
    model attributes), ``PixelModel``'s checks, which read only those attributes."""
    if callable(getattr(model, "check_input", None)):
        return model.check_input(x, labels)
    PixelModel._check_levels(model, x)
    return PixelModel._check_labels(model, labels, x.shape[0])
