"""``pixelfast.sample``: every argument checked up front, then one sampling method does the work.

Methods share one signature, ``(model, x, known, labels, temperature, generator, progress) -> x``:
``x`` int64 ``[n, C, H, W]`` with known sub-pixels filled in, ``known`` bool of the same shape,
``labels`` int64 ``[n]`` or None, all on the model's device. ``"naive"`` is
:func:`pixelfast.sampling.naive.sample_naive`; ``"cached"`` is the compiled engine
(:func:`pixelfast.sampling.cached.sample_cached`), and ``"auto"`` uses it whenever it supports
the model, falling back to naive with a warning otherwise.

A model that draws whole images from a latent (one with a ``generate`` method: the VAE, the GAN) is
not autoregressive: after the same argument checks, ``sample`` calls its
``generate(n, labels, temperature, generator)``. Completion, ``part`` and the autoregressive
methods (``"naive"``, ``"cached"``) have no meaning for it and are refused; ``method="auto"``
(the default) picks ``generate``.
"""

from __future__ import annotations

import contextlib
import functools
import numbers
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pixelfast._checks import check_color_groups, check_guidance, check_temperature, model_device
from pixelfast.data import check_level_values
from pixelfast.device import check_device
from pixelfast.models.super_resolution import SuperResolution
from pixelfast.ops._library import require_library
from pixelfast.sampling.cached import check_precision, sample_cached
from pixelfast.sampling.categorical import draw_uniforms
from pixelfast.sampling.guidance import Guided
from pixelfast.sampling.naive import sample_naive
from pixelfast.sampling.plan import UnsupportedModelError, check_supported
from pixelfast.sampling.precision import full_fp32

METHODS = ("auto", "naive", "cached")
MODEL_ATTRIBUTES = ("in_channels", "levels", "num_classes", "image_size")
# The most sub-pixels (n * C * H * W) one call draws: its int64 canvas alone is then 16 GiB.
# Checked before anything is allocated, so a mistyped n or size fails at once; split bigger jobs.
MAX_SUB_PIXELS = 2**31

Sampler = Callable[..., torch.Tensor]


def sample(
    model: nn.Module,
    n: int,
    *,
    size: tuple[int, int] | int | None = None,
    labels: int | Sequence[int] | torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | int | None = None,
    image: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    method: str = "auto",
    device: str | torch.device | None = None,
    progress: bool = True,
    part: tuple[int, int] | None = None,
    guidance: float = 0.0,
    precision: str = "fp32",
) -> torch.Tensor:
    """Draw ``n`` images from a pixel model; returns ``uint8 [n, C, H, W]`` of levels.

    Autoregressive models are sampled sub-pixel by sub-pixel (``method``); a latent-variable model
    (one with a ``generate`` method: ``ConvVAE``, ``DCGAN``) by its ``generate``, with only
    ``method="auto"``, no completion and no ``part``, at its ``image_size``; what ``temperature``
    means for it is its ``generate``'s (the VAE divides its output logits, the GAN scales ``z``).

    - ``size``: ``(H, W)`` (or one int for a square); default: ``model.image_size``, the size the
      model was trained on, else the size of ``image``.
    - ``labels``: for a class-conditional model, one int for all images or ``n`` of them. ``None``
      gives image ``k`` the class ``k % num_classes``, so a grid with ``num_classes`` columns has
      one class per column. An unconditional model takes no labels.
    - ``temperature``: divides the logits (``< 1`` sharper, ``> 1`` more diverse); must be > 0.
    - ``generator``: a ``torch.Generator`` or an int seed; the same seed gives the same images
      (on the same device, with the same method). ``None`` uses torch's global generator.
    - ``image`` + ``known``: completion. ``image`` is ``[C, H, W]`` or ``[n, C, H, W]`` levels,
      ``known`` a bool mask broadcastable to ``[n, C, H, W]`` (e.g. ``[H, W]`` True on the top
      half). Known sub-pixels are copied from ``image`` unchanged, the rest are sampled.
    - ``method``: ``"naive"`` (re-run the network for every sub-pixel), ``"cached"`` (the
      compiled incremental engine) or ``"auto"`` (cached when available, else naive).
    - ``device``: where to sample; default the model's device. The model is moved there for the
      call and its own tensors are put back afterwards, also when the call fails. The result is on
      this device.

    - ``part``: ``(start, stop)``: draw only images ``start .. stop - 1`` of the ``n``, exactly
      those the whole call would draw (their labels, completion canvas and random numbers), so that
      processes can share one call (``torchrun ... pixelfast sample``). Needs a seed or a CPU
      generator, whose stream is skipped past the first ``start`` images.
    - ``guidance``: classifier-free guidance weight ``w >= 0`` (see
      :mod:`pixelfast.sampling.guidance`): each sub-pixel is drawn from
      ``softmax(((1 + w) * l_label - w * l_no_class) / temperature)``, for a model trained with
      ``class_dropout``. 0 (the default) draws from the model itself.
    - ``precision``: ``"fp32"`` (the default: the same images as the naive sampler, up to float
      rounding), ``"bf16"`` or ``"tf32"``: the cached engine rounds its convolutions' inputs and
      weights to bfloat16 (or tf32, CUDA only) and sums in fp32. On the CPU bf16 runs on the AMX
      tile unit where the CPU has one (Intel Xeon since Sapphire Rapids), several times faster
      there, and elsewhere gives the same kind of images no faster; on a GPU (compute capability
      8.0 or later) both run on tensor cores. The logits move by the rounding, so an image can
      differ from the fp32 one where a draw falls near the edge between two levels.

    At most :data:`MAX_SUB_PIXELS` sub-pixels (``n * C * H * W``) per call. Runs under
    ``torch.no_grad()`` in eval mode and in full fp32 (TF32 off, see
    :mod:`pixelfast.sampling.precision`, so the naive sampler's convolutions compute what the
    engine computes); the model's training mode and the precision settings are restored afterwards,
    also when several threads sample from one model at once.
    """
    _check_model(model)
    n = _check_n(n)
    height, width = _check_size(size, model, image)
    channels, levels = model.in_channels, model.levels
    check_canvas(n, channels, height, width)
    label_tensor = _check_labels(labels, model, n)
    temperature = check_temperature("sample", temperature)
    generator = _check_generator(generator)
    guided = Guided(model, guidance) if check_guidance("sample", guidance) else model
    precision = check_precision("sample", precision)
    if draws_whole_images(model):
        _check_whole_image_call(model, (height, width), image, known, method, progress, part)
        if precision != "fp32":
            raise ValueError(
                f"sample: {type(model).__name__} draws whole images (its generate), in fp32; "
                f"precision={precision!r} is the cached engine's"
            )
        return _generate(model, n, (height, width), label_tensor, temperature, generator, device)
    x, known_mask = _check_completion(image, known, n, channels, height, width, levels)
    if method not in METHODS:
        raise ValueError(f"sample: method must be one of {METHODS}, got {method!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"sample: progress must be True or False, got {progress!r}")
    if precision != "fp32" and method == "naive":
        raise ValueError(f"sample: precision={precision!r} is the cached engine's; method='naive' computes in fp32")
    if part is not None:
        start, stop = _check_part(part, n, generator)
        x, known_mask = x[start:stop], known_mask[start:stop]
        label_tensor = None if label_tensor is None else label_tensor[start:stop]
    home = model_device(model)
    target = check_device(device, "sample") if device is not None else home
    check_precision("sample", precision, target)
    # bf16 needs the engine: a model it cannot run is refused, not sampled in fp32 instead.
    run = _pick_method("cached" if precision != "fp32" else method, guided)
    if precision != "fp32":
        run = functools.partial(run, precision=precision)
    if part is not None:  # last, so that a call refused above leaves the generator as it was
        # The CPU generator fills uniforms in order, image after image: drawing the first `start`
        # images' worth leaves it where the whole call would be at image `start`.
        draw_uniforms((start, channels, height, width), generator, "cpu")

    with eval_no_grad(model), _on_device(model, home, target), full_fp32():
        x = x.to(target)
        known_mask = known_mask.to(target)
        if label_tensor is not None:
            label_tensor = label_tensor.to(target)
        out = run(guided, x, known_mask, label_tensor, temperature, generator, progress)
    return out.to(torch.uint8)


# --- models that draw whole images -------------------------------------------------------------


def draws_whole_images(model: nn.Module) -> bool:
    """Whether ``model`` draws whole images from a latent (it has a ``generate`` method) rather
    than sub-pixel by sub-pixel."""
    return callable(getattr(model, "generate", None))


def _check_whole_image_call(model: nn.Module, size, image, known, method, progress, part) -> None:
    """Refuse what only an autoregressive model can do, naming the model."""
    name = type(model).__name__
    what = f"sample: {name} draws whole images from a latent (its generate), not sub-pixel by sub-pixel"
    if image is not None or known is not None:
        raise ValueError(f"{what}, so it cannot complete an image (image/known); use an autoregressive model")
    if method not in METHODS:
        raise ValueError(f"sample: method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        raise ValueError(f"{what}: method must be 'auto' (its generate), got {method!r}")
    if not isinstance(progress, bool):
        raise TypeError(f"sample: progress must be True or False, got {progress!r}")
    if part is not None:
        raise ValueError(f"{what}: part is not supported; draw the images in one call")
    if model.image_size is not None and tuple(size) != tuple(model.image_size):
        raise ValueError(
            f"sample: {name} draws {model.image_size[0]}x{model.image_size[1]} images only (its image_size), "
            f"got size {size[0]}x{size[1]}"
        )


def _generate(model: nn.Module, n: int, size, labels, temperature: float, generator, device) -> torch.Tensor:
    """``model.generate`` in eval mode, no grad, full fp32, on ``device``; checked and as uint8."""
    home = model_device(model)
    target = check_device(device, "sample") if device is not None else home
    with eval_no_grad(model), _on_device(model, home, target), full_fp32():
        out = model.generate(n, None if labels is None else labels.to(target), temperature, generator)
    expected = (n, model.in_channels, *size)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RuntimeError(f"sampling: {type(model).__name__}.generate returned {shape}; expected {list(expected)}")
    if out.is_floating_point() or out.is_complex() or bool(((out < 0) | (out >= model.levels)).any()):
        raise RuntimeError(
            f"sampling: {type(model).__name__}.generate must return integer levels in 0..{model.levels - 1}"
        )
    return out.to(torch.uint8)


# --- method dispatch --------------------------------------------------------------------------


def _cached_engine(model: nn.Module) -> Sampler:
    """The compiled cached engine, once it is known to run ``model`` (it lowers the model itself,
    on the device sampling happens on).

    Raises :class:`~pixelfast.sampling.plan.UnsupportedModelError` naming the model or layer the
    engine cannot run, and the library's rebuild message when the compiled ops are missing.
    """
    require_library()
    check_supported(model)
    return sample_cached


def _pick_method(method: str, model: nn.Module, caller: str = "sample") -> Sampler:
    """The sampler ``method`` names; ``caller`` names the public function in the fallback warning."""
    if method == "naive":
        return sample_naive
    if method == "cached":
        return _cached_engine(model)
    try:  # "auto": the cached engine when it can run the model, else naive with a warning
        return _cached_engine(model)
    except (UnsupportedModelError, RuntimeError) as error:
        warnings.warn(f"{caller}: falling back to the naive sampler: {error}", stacklevel=3)
        return sample_naive


# --- argument checks --------------------------------------------------------------------------


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"sample: model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, SuperResolution):
        raise TypeError(
            "sample: a SuperResolution model draws given low-resolution images; use pixelfast.upscale(model, low)"
        )
    missing = [a for a in MODEL_ATTRIBUTES if not hasattr(model, a)]
    if missing:
        raise TypeError(f"sample: {type(model).__name__} is not a pixelfast model: it lacks the attributes {missing}")
    if not _is_int(model.levels) or not 2 <= model.levels <= 256:
        raise ValueError(f"sample: the model's levels must be in 2..256 (images are uint8), got {model.levels!r}")
    check_color_groups("sample", model.in_channels, "the model's in_channels")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_n(n) -> int:
    if not _is_int(n):
        raise TypeError(f"sample: n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"sample: n must be >= 1, got {n}")
    return int(n)


def check_canvas(n: int, channels: int, height: int, width: int) -> None:
    """Refuse a call that would draw more than :data:`MAX_SUB_PIXELS` sub-pixels."""
    total = n * channels * height * width
    if total > MAX_SUB_PIXELS:
        raise ValueError(
            f"sample: {n} images of {channels}x{height}x{width} are {total} sub-pixels, more than one "
            f"call draws ({MAX_SUB_PIXELS}); ask for fewer or smaller images per call"
        )


def _check_size(size, model: nn.Module, image) -> tuple[int, int]:
    if size is None:
        size = model.image_size
        if size is None and isinstance(image, torch.Tensor) and image.dim() >= 2:
            size = tuple(image.shape[-2:])
        if size is None:
            raise ValueError(
                "sample: size=(H, W) is required: the model does not record the image size it was "
                "trained on (its image_size is None)"
            )
    if _is_int(size):
        size = (size, size)
    if not isinstance(size, (tuple, list, torch.Size)) or len(size) != 2 or not all(_is_int(s) for s in size):
        raise ValueError(f"sample: size must be (H, W), two ints, got {size!r}")
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"sample: size must be positive, got ({height}, {width})")
    if getattr(model, "position_bias", False) and (height, width) != tuple(model.image_size):
        raise ValueError(
            f"sample: the model has biases per row and column of {model.image_size[0]}x{model.image_size[1]} "
            f"images (position_bias), so it draws only that size; got {height}x{width}"
        )
    return height, width


def _check_labels(labels, model: nn.Module, n: int) -> torch.Tensor | None:
    num_classes = model.num_classes
    if num_classes is None:
        if labels is not None:
            raise ValueError("sample: labels were given but the model is unconditional (num_classes is None)")
        return None
    if labels is None:
        return torch.arange(n, dtype=torch.int64) % num_classes
    if isinstance(labels, bool):
        raise TypeError("sample: labels must be ints, got a bool")
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if _is_int(labels):
        _check_label_range([labels], num_classes)
        tensor = torch.full((n,), int(labels), dtype=torch.int64)
    elif isinstance(labels, torch.Tensor):
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
            raise TypeError(f"sample: labels must be an integer tensor, got dtype {labels.dtype}")
        if labels.dim() == 0:
            tensor = labels.reshape(1).expand(n).to(torch.int64)
        elif labels.dim() == 1:
            tensor = labels.to(device="cpu", dtype=torch.int64)
        else:
            raise ValueError(f"sample: labels must be 1-D [n], got shape {tuple(labels.shape)}")
    elif isinstance(labels, (list, tuple)):
        if not all(_is_int(v) for v in labels):
            raise TypeError(f"sample: labels must be ints, got {labels!r}")
        _check_label_range(labels, num_classes)
        tensor = torch.tensor([int(v) for v in labels], dtype=torch.int64)
    else:
        raise TypeError(f"sample: labels must be an int, a sequence of ints or a tensor, got {type(labels).__name__}")
    if tensor.shape != (n,):
        raise ValueError(f"sample: got {tensor.shape[0]} labels for n={n} images; give one label or exactly n")
    tensor = tensor.cpu()
    if tensor.min() < 0 or tensor.max() >= num_classes:
        raise ValueError(
            f"sample: labels must be in 0..{num_classes - 1}, got values in {int(tensor.min())}..{int(tensor.max())}"
        )
    return tensor


def _check_label_range(values, num_classes: int) -> None:
    # Before any tensor is made: an int beyond int64 (say 2**70) must be a range error too.
    bad = [int(v) for v in values if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"sample: labels must be in 0..{num_classes - 1}, got {bad[0]}")


def _check_generator(generator) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if _is_int(generator):
        if not 0 <= generator < 2**64:
            raise ValueError(f"sample: a seed must be in 0..2**64-1, got {generator}")
        return torch.Generator().manual_seed(int(generator))
    raise TypeError(f"sample: generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


def _check_part(part, n: int, generator: torch.Generator | None) -> tuple[int, int]:
    if not isinstance(part, (tuple, list)) or len(part) != 2 or not all(_is_int(v) for v in part):
        raise TypeError(f"sample: part must be a pair of ints (start, stop), got {part!r}")
    start, stop = (int(v) for v in part)
    if not 0 <= start < stop <= n:
        raise ValueError(f"sample: part must satisfy 0 <= start < stop <= n ({n}), got ({start}, {stop})")
    if generator is None or generator.device.type != "cpu":
        raise ValueError("sample: part needs a seed or a CPU torch.Generator (its stream is skipped ahead)")
    return start, stop


def _check_completion(image, known, n, channels, height, width, levels):
    """The starting canvas (int64 ``[n, C, H, W]``) and the full known mask."""
    full = (n, channels, height, width)
    if image is None and known is None:
        return torch.zeros(full, dtype=torch.int64), torch.zeros(full, dtype=torch.bool)
    if image is None:
        raise ValueError("sample: known was given without image; completion needs both")
    if known is None:
        raise ValueError("sample: image was given without known; pass a bool mask of the sub-pixels to keep")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"sample: image must be a tensor, got {type(image).__name__}")
    if image.dtype == torch.bool or image.is_complex():
        raise TypeError(f"sample: image must hold integer levels (int or whole floats), got dtype {image.dtype}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] not in (1, n) or tuple(image.shape[1:]) != full[1:]:
        raise ValueError(
            f"sample: image must have shape [C, H, W] = {list(full[1:])} or [n, C, H, W] = {list(full)}, "
            f"got {list(image.shape)}"
        )
    if not isinstance(known, torch.Tensor):
        raise TypeError(f"sample: known must be a bool tensor, got {type(known).__name__}")
    if known.dtype != torch.bool:
        raise TypeError(f"sample: known must be a bool tensor, got dtype {known.dtype}")
    try:
        ok = known.dim() >= 2 and torch.broadcast_shapes(known.shape, full) == torch.Size(full)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"sample: known must be broadcastable to [n, C, H, W] = {list(full)} "
            f"(e.g. [H, W] or [C, H, W]), got {list(known.shape)}"
        )
    image = image.cpu().expand(full)
    known = known.cpu().expand(full)
    check_level_values(image[known], levels, "sample: image (at known sub-pixels)")
    x = torch.where(known, image.to(torch.float64), torch.zeros((), dtype=torch.float64))
    return x.to(torch.int64).contiguous(), known.contiguous()


# --- context helpers --------------------------------------------------------------------------


_modes_lock = threading.Lock()
_modes: weakref.WeakKeyDictionary[nn.Module, list] = weakref.WeakKeyDictionary()  # model -> [calls, was_training]


@contextlib.contextmanager
def eval_no_grad(model: nn.Module):
    """Eval mode and no grad for the call; the first of overlapping calls on one model records its
    training mode and the last one restores it, so concurrent calls cannot leave it in eval mode."""
    with _modes_lock:
        entry = _modes.get(model)
        if entry is None:
            entry = _modes[model] = [0, model.training]
            model.eval()
        entry[0] += 1
    try:
        with torch.no_grad():
            yield
    finally:
        with _modes_lock:
            entry[0] -= 1
            if entry[0] == 0:
                del _modes[model]
                model.train(entry[1])


@contextlib.contextmanager
def _on_device(model: nn.Module, home: torch.device, target: torch.device):
    """Move the model to ``target`` for the call, then put back its own tensors (not copies moved
    back, which a failed move, e.g. to a device without memory, could have lost)."""
    if target == home:
        yield
        return
    saved = [
        (
            module,
            dict(module._parameters),
            {k: (p.data, p.grad) for k, p in module._parameters.items() if p is not None},
            dict(module._buffers),
        )
        for module in model.modules()
    ]
    try:
        model.to(target)
        yield
    finally:
        for module, parameters, data, buffers in saved:
            module._parameters.update(parameters)
            for key, (tensor, grad) in data.items():
                parameters[key].data = tensor
                parameters[key].grad = grad
            module._buffers.update(buffers)
