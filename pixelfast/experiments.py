"""The super-resolution measurements and the mode-averaging experiment (``pixelfast experiment``).

* :func:`measure_super_resolution`: on held-out digits (7x7 -> 28x28), the super-resolution model
  against the baselines the paper argues against (the same conditioning network trained alone by L2
  regression or as an independent softmax per sub-pixel): held-out bits/dim, PSNR and SSIM against
  the truth, consistency with the input, and whether a digit classifier still recognises the digit.
* :func:`mode_averaging`: a 28x28 canvas with one 14x14 digit in the top-left or the bottom-right
  quadrant (each with probability 1/2) and a model input that does not say which (a constant
  image): the L2 regression and the independent softmax average the two modes, the PixelCNN picks one.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from pixelfast.data import check_level_values, downsample
from pixelfast.evaluate import bits_per_dim
from pixelfast.metrics import psnr, ssim
from pixelfast.models.super_resolution import SuperResolution

# --- a small digit classifier ----------------------------------------------------------------


class DigitClassifier(nn.Module):
    """A tiny CNN for 28x28 grey digits (levels scaled to [0, 1]): two 3x3 conv + max-pool stages
    (16 and 32 channels), then a linear layer to ``num_classes`` logits."""

    def __init__(self, levels: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        self.levels = levels
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 7 * 7, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32) / (self.levels - 1)
        return self.head(self.features(x).flatten(1))


def train_digit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: int = 256,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> DigitClassifier:
    """:class:`DigitClassifier` trained by Adam on ``images [N, 1, 28, 28]`` (levels) and ``labels [N]``."""
    labels = _check_labelled_digits(images, labels, levels, "train_digit_classifier")
    return fit_classifier(
        lambda: DigitClassifier(levels),
        images,
        labels,
        epochs,
        batch_size,
        lr,
        seed,
        progress,
        "train_digit_classifier",
    )


def fit_classifier(
    build,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress,
    owner,
) -> nn.Module:
    """``build()`` (called under ``seed``) fitted by Adam to the cross entropy of ``labels`` for
    ``images``: ``epochs`` passes in an order drawn from ``seed``. Returned in eval mode; ``owner``
    names the caller in errors and the progress bar."""
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"{owner}: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        order_generator = torch.Generator().manual_seed(seed)
        for _ in tqdm(range(epochs), desc=owner, unit="epoch", disable=not progress, leave=False):
            order = torch.randperm(images.shape[0], generator=order_generator)
            for start in range(0, images.shape[0], batch_size):
                index = order[start : start + batch_size]
                loss = F.cross_entropy(model(images[index]), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """The fraction of ``images`` that ``classifier`` labels as ``labels``."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"accuracy: {images.shape[0]} images but {labels.shape[0]} labels")
    was_training = classifier.training
    classifier.eval()
    try:
        hits = sum(
            (classifier(images[s : s + batch_size]).argmax(1) == labels[s : s + batch_size]).sum().item()
            for s in range(0, images.shape[0], batch_size)
        )
    finally:
        classifier.train(was_training)
    return hits / images.shape[0]


# --- does a class-conditional sample show the asked digit? -------------------------------------


def train_logistic_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: int = 256,
    weight_decay: float = 1e-4,
    steps: int = 200,
) -> nn.Module:
    """Multinomial logistic regression on the pixels (levels scaled to [0, 1]) of ``images
    [N, 1, 28, 28]``: ``nn.Linear(784, 10)`` fitted by full-batch L-BFGS to the cross entropy plus
    ``weight_decay`` times the squared weights. Deterministic: it starts from zero weights."""
    labels = _check_labelled_digits(images, labels, levels, "train_logistic_classifier")
    if steps < 1 or not weight_decay >= 0:
        raise ValueError(
            f"train_logistic_classifier: steps must be >= 1 and weight_decay >= 0, got {steps}, {weight_decay}"
        )
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    nn.init.zeros_(model[1].weight)
    nn.init.zeros_(model[1].bias)
    x = images.to(torch.float32) / (levels - 1)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels) + weight_decay * model[1].weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return _Scaled(model, levels).eval()


class _Scaled(nn.Module):
    """A classifier of levels: divides by ``levels - 1`` before ``inner``."""

    def __init__(self, inner: nn.Module, levels: int) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner(images.to(torch.float32) / (self.levels - 1))


@dataclasses.dataclass
class Agreement:
    """:func:`class_agreement`'s result: for each temperature, the fraction of the samples that
    the classifier labels as the asked class; the classifier's accuracy on held-out real digits."""

    fractions: dict[float, float]
    classifier_accuracy: float
    count: int
    samples: dict[float, torch.Tensor]


def class_agreement(
    model: nn.Module,
    classifier: nn.Module,
    *,
    count: int = 1000,
    temperatures=(1.0,),
    seed: int = 0,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    progress: bool = True,
    guidance: float = 0.0,
) -> Agreement:
    """Draw ``count`` class-conditional samples from ``model`` at each temperature (labels
    ``0, 1, .., 9, 0, 1, ..``, seed ``seed``, classifier-free ``guidance``) and measure how many
    ``classifier`` labels as asked."""
    from pixelfast.sampling import sample

    if getattr(model, "num_classes", None) != 10:
        raise ValueError("class_agreement: the model must be class-conditional over the 10 digits (num_classes=10)")
    if count < 1:
        raise ValueError(f"class_agreement: count must be >= 1, got {count}")
    labels = torch.arange(count) % 10
    fractions, samples = {}, {}
    for temperature in temperatures:
        drawn = sample(
            model, count, labels=labels, temperature=temperature, generator=seed, progress=progress, guidance=guidance
        )
        samples[temperature] = drawn
        fractions[temperature] = accuracy(classifier, drawn.long(), labels)
    held_out = float("nan")
    if test_images is not None:
        held_out = accuracy(classifier, test_images.long(), test_labels)
    return Agreement(fractions, held_out, count, samples)


# --- the super-resolution measurements ---------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One output of the table: PSNR / SSIM against the truth (means over the images), consistency
    (mean over images of the mean squared error, in levels^2, between ``downsample(output)`` and
    the input) and the classifier's accuracy on it."""

    name: str
    psnr: float
    ssim: float
    consistency: float
    accuracy: float


@dataclasses.dataclass
class SuperResolutionReport:
    bits_per_dim: dict[str, float]  # model -> held-out bits/dim
    rows: list[Row]
    grid: torch.Tensor  # level images [rows * columns, 1, 28, 28] for save_grid
    grid_columns: int
    count: int  # held-out images measured

    def table(self) -> str:
        lines = ["| model | held-out bits/dim |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in self.bits_per_dim.items()]
        lines += [
            "",
            f"| output ({self.count} held-out digits) | PSNR (dB) | SSIM | consistency MSE | classifier accuracy |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.name} | {r.psnr:.2f} | {r.ssim:.4f} | {r.consistency:.3f} | {r.accuracy:.3f} |" for r in self.rows
        ]
        return "\n".join(lines)


def point_prediction(model: SuperResolution, low: torch.Tensor, *, mean: bool = False) -> torch.Tensor:
    """A model's one image per input, no sampling: the argmax of ``A(x)`` (for ``objective="l2"``,
    the level nearest its regression), or with ``mean=True`` the expected level under
    ``softmax(A(x))``, rounded to the nearest level. ``int64 [B, C, H, W]``."""
    if not isinstance(model, SuperResolution):
        raise TypeError(f"point_prediction: model must be a SuperResolution, got {type(model).__name__}")
    with torch.no_grad():
        logits = model.conditioning_logits(low.long())
        if not mean:
            return logits.argmax(1)
        levels = torch.arange(model.levels, dtype=logits.dtype).view(1, -1, 1, 1, 1)
        return (logits.softmax(1) * levels).sum(1).round().long()


def measure_super_resolution(
    model: SuperResolution,
    l2: SuperResolution,
    independent: SuperResolution,
    unconditional: nn.Module | None,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    temperatures: tuple[float, ...] = (1.0, 0.9, 0.8),
    grid_count: int = 8,
    grid_samples: int = 4,
    grid_temperature: float = 0.9,
    classifier_epochs: int = 4,
    seed: int = 0,
    progress: bool = True,
) -> SuperResolutionReport:
    """The item-5 table on ``test_images`` (levels ``[N, 1, H, W]``) and the grid of the first
    ``grid_count`` of them: low-res | L2 | independent sample | ``grid_samples`` samples of ``model``
    at ``grid_temperature`` | truth.

    ``model`` is the joint super-resolution model; ``l2`` and ``independent`` the conditioning network
    trained alone (``objective="l2"`` and ``"independent"``), all of the same ``scale``;
    ``unconditional`` (optional) a pixelfast model of the high-resolution digits alone (given
    ``test_labels`` if it is class-conditional), for its held-out bits/dim. The digit classifier
    (:class:`DigitClassifier`) is trained ``classifier_epochs`` epochs on ``train_images`` and
    ``train_labels``. The models run on the CPU.
    """
    from pixelfast.sampling import upscale

    for name, m, objective in (
        ("model", model, "joint"),
        ("l2", l2, "l2"),
        ("independent", independent, "independent"),
    ):
        if not isinstance(m, SuperResolution) or m.objective != objective:
            raise ValueError(f"measure_super_resolution: {name} must be a SuperResolution with objective={objective!r}")
        if m.scale != model.scale or m.levels != model.levels or m.in_channels != 1:
            raise ValueError("measure_super_resolution: the three models must share scale, levels and one channel")
    levels, scale = model.levels, model.scale
    _check_digits(test_images, levels, "measure_super_resolution: test_images")
    truth = test_images.long()
    labels = torch.as_tensor(test_labels, dtype=torch.int64)
    low = downsample(truth, scale)

    bpd = {
        "super-resolution (A + B)": bits_per_dim(model, truth),
        "independent softmax (A alone)": bits_per_dim(independent, truth),
        "L2 regression (its discretised Gaussian)": bits_per_dim(l2, truth),
    }
    if unconditional is not None:
        given = labels if getattr(unconditional, "num_classes", None) is not None else None
        name = "Gated PixelCNN, no low-resolution input" + (" (class-conditional)" if given is not None else "")
        bpd[name] = bits_per_dim(unconditional, truth, labels=given)

    classifier = train_digit_classifier(
        train_images.long(), train_labels, levels=levels, epochs=classifier_epochs, seed=seed, progress=progress
    )
    outputs: dict[str, torch.Tensor] = {
        "truth": truth,
        "L2 regression": point_prediction(l2, low),
        "independent softmax, mean": point_prediction(independent, low, mean=True),
        "independent softmax, sample (T=1)": upscale(independent, low, generator=seed, progress=False).long(),
    }
    for t in temperatures:
        outputs[f"super-resolution sample (T={t:g})"] = upscale(
            model, low, temperature=t, generator=seed, progress=progress
        ).long()
    rows = []
    for name, images in outputs.items():
        consistency = (downsample(images, scale) - low).double().pow(2).flatten(1).mean(1).mean().item()
        rows.append(
            Row(
                name,
                psnr(images, truth, levels).mean().item(),
                ssim(images, truth, levels).mean().item(),
                consistency,
                accuracy(classifier, images, labels),
            )
        )

    k = min(grid_count, truth.shape[0])
    grid, columns = comparison_grid(
        model,
        l2,
        independent,
        low[:k],
        truth[:k],
        n=grid_samples,
        temperature=grid_temperature,
        seed=seed,
        progress=progress,
    )
    return SuperResolutionReport(bpd, rows, grid, columns, truth.shape[0])


def comparison_grid(
    model: SuperResolution,
    l2: SuperResolution | None,
    independent: SuperResolution | None,
    low: torch.Tensor,
    truth: torch.Tensor | None = None,
    *,
    n: int = 4,
    temperature: float = 0.9,
    seed: int = 0,
    method: str = "auto",
    progress: bool = True,
) -> tuple[torch.Tensor, int]:
    """One row per input of ``low``: the input (each pixel repeated ``scale`` times), the L2
    regression's prediction and a sample of the independent softmax (seed ``seed``; each column
    left out when its model is None), ``n`` samples of ``model`` at ``temperature`` (seed
    ``seed + 1``, ``method`` as in :func:`pixelfast.upscale`), and the truth when given. Returns
    ``(images [rows * columns, C, H, W], columns)`` for ``save_grid(..., nrow=columns)``."""
    from pixelfast.sampling import upscale

    k = low.shape[0]
    samples = upscale(
        model, low, n=n, temperature=temperature, generator=seed + 1, method=method, progress=progress
    ).long()
    columns = [F.interpolate(low.float(), scale_factor=model.scale, mode="nearest").long().unsqueeze(1)]
    if l2 is not None:
        columns.append(point_prediction(l2, low).unsqueeze(1))
    if independent is not None:
        columns.append(upscale(independent, low, generator=seed, progress=False).long().unsqueeze(1))
    columns.append(samples.view(k, n, *samples.shape[1:]))
    if truth is not None:
        columns.append(truth.long().unsqueeze(1))
    grid = torch.cat(columns, 1)
    return grid.flatten(0, 1), grid.shape[1]


# --- the mode-averaging experiment -------------------------------------------------------------


def quadrant_digits(
    digits: torch.Tensor, generator: torch.Generator | int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each digit ``[N, 1, 28, 28]`` (levels) downsampled 2x to 14x14 and put in the top-left
    (corner 0) or the bottom-right (corner 1) quadrant of an empty 28x28 canvas, each with
    probability 1/2. Returns ``(canvases [N, 1, 28, 28] of the input's dtype, corners int64 [N])``."""
    _check_digits(digits, 256, "quadrant_digits: digits")
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    small = downsample(digits, 2)
    corners = torch.randint(0, 2, (digits.shape[0],), generator=generator)
    canvas = torch.zeros_like(digits)
    top_left = corners == 0
    canvas[top_left, :, :14, :14] = small[top_left]
    canvas[~top_left, :, 14:, 14:] = small[~top_left]
    return canvas, corners


def one_quadrant(images: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Per image ``[N, C, 28, 28]`` (levels, 0 = no ink): ``True`` when its ink (the sum of its
    levels) is in exactly one of the top-left and bottom-right quadrants, i.e. the one of the two
    with less ink holds less than ``threshold`` of the image's total ink. Blank images are ``False``."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[2] % 2 or images.shape[3] % 2:
        raise ValueError(
            f"one_quadrant: images must be [N, C, H, W] with H and W even, got "
            f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    if not 0 < threshold < 1:
        raise ValueError(f"one_quadrant: threshold must be in (0, 1), got {threshold}")
    ink = images.double()
    h, w = images.shape[2] // 2, images.shape[3] // 2
    total = ink.flatten(1).sum(1)
    top_left = ink[:, :, :h, :w].flatten(1).sum(1)
    bottom_right = ink[:, :, h:, w:].flatten(1).sum(1)
    return (total > 0) & (torch.minimum(top_left, bottom_right) < threshold * total)


@dataclasses.dataclass
class ModeAveragingResult:
    fractions: dict[str, float]  # model -> fraction of its draws with ink in exactly one quadrant
    blank: dict[str, float]  # model -> fraction of its draws with no ink at all
    draws: dict[str, torch.Tensor]  # model -> its images (levels [count, 1, 28, 28])
    data_fraction: float  # the same count on the training canvases (1.0 up to the threshold)
    seconds: dict[str, float]  # model -> training seconds


MODE_AVERAGING_MODELS = ("L2 regression", "independent softmax", "PixelCNN (super-resolution, constant input)")


def mode_averaging(
    digits: torch.Tensor,
    *,
    epochs: int = 3,
    prior_epochs: int | None = None,
    count: int = 1000,
    conditioning_channels: int = 16,
    conditioning_blocks: int = 1,
    prior_config: dict | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> ModeAveragingResult:
    """Train the three models on :func:`quadrant_digits` of ``digits`` (levels ``[N, 1, 28, 28]``)
    with a constant all-zero 7x7 input, then draw ``count`` images from each and count those with
    their ink in one quadrant (:func:`one_quadrant`).

    The models are :class:`SuperResolution` (scale 4, 256 levels, ``conditioning_channels`` wide,
    ``conditioning_blocks`` blocks) with ``objective="l2"`` (its draw is its prediction, the same image
    every time), ``"independent"`` (a sample of each sub-pixel's softmax) and ``"joint"`` with a
    Gated PixelCNN prior (``prior_config``, default 16 channels, 8 layers), drawn by the cached
    engine. The first two train ``epochs`` epochs, the joint model ``prior_epochs`` (default ``epochs``).
    """
    from pixelfast.sampling import upscale

    _check_digits(digits, 256, "mode_averaging: digits")
    if epochs < 1 or count < 1 or (prior_epochs is not None and prior_epochs < 1):
        raise ValueError(
            f"mode_averaging: epochs, prior_epochs and count must be >= 1, got {epochs}, {prior_epochs}, {count}"
        )
    canvases, _ = quadrant_digits(digits, generator=seed)
    canvases = canvases.long()
    constant = torch.zeros(1, 1, 7, 7, dtype=torch.int64)  # says nothing about the quadrant
    common = dict(
        in_channels=1,
        levels=256,
        scale=4,
        conditioning_channels=conditioning_channels,
        conditioning_blocks=conditioning_blocks,
        image_size=(28, 28),
    )
    prior_config = prior_config or {"hidden_channels": 16, "num_layers": 8}
    specs = {
        MODE_AVERAGING_MODELS[0]: (dict(objective="l2"), epochs),
        MODE_AVERAGING_MODELS[1]: (dict(objective="independent"), epochs),
        MODE_AVERAGING_MODELS[2]: (dict(objective="joint", prior_config=prior_config), prior_epochs or epochs),
    }
    fractions, blank, draws, seconds = {}, {}, {}, {}
    for index, (name, (options, model_epochs)) in enumerate(specs.items()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + index)
            model = SuperResolution(**common, **options)
            seconds[name] = _fit_constant_input(
                model, canvases, constant, model_epochs, batch_size, lr, seed + index, progress, name
            )
        model.eval()
        if model.objective == "l2":
            images = point_prediction(model, constant).expand(count, -1, -1, -1)
        else:
            images = upscale(model, constant, n=count, generator=seed, progress=progress).long()
        draws[name] = images
        fractions[name] = one_quadrant(images).double().mean().item()
        blank[name] = (images.flatten(1).sum(1) == 0).double().mean().item()
    return ModeAveragingResult(fractions, blank, draws, one_quadrant(canvases).double().mean().item(), seconds)


def _fit_constant_input(model, canvases, constant, epochs, batch_size, lr, seed, progress, name) -> float:
    import time

    started = time.perf_counter()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    order_generator = torch.Generator().manual_seed(seed)
    n = canvases.shape[0]
    model.train()
    bar = tqdm(total=epochs * math.ceil(n / batch_size), desc=name, unit="batch", disable=not progress, leave=False)
    for _ in range(epochs):
        order = torch.randperm(n, generator=order_generator)
        for start in range(0, n, batch_size):
            y = canvases[order[start : start + batch_size]]
            loss = model.loss(y, constant.expand(y.shape[0], -1, -1, -1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return time.perf_counter() - started


def _check_labelled_digits(images, labels, levels: int, owner: str) -> torch.Tensor:
    """A classifier's training data checked: digits ``[N, 1, 28, 28]`` and ``labels`` ``[N]`` in
    0..9, returned as int64."""
    _check_digits(images, levels, f"{owner}: images")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if labels.shape != (images.shape[0],) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{owner}: labels must be [{images.shape[0]}] digits 0..9")
    return labels


def _check_digits(images, levels: int, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what} must be [N, 1, 28, 28] digits, got {shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{what} is empty")
    check_level_values(images, levels, what)
