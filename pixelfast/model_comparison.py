"""The seeds' comparison, measured: autoregressive models beside a VAE and a GAN on the same digits
(``pixelfast experiment generative-models``).

Seed 000 says a VAE samples quickly but blurry, a GAN sharper but is hard to optimise, and an
autoregressive model trains simply and stably but samples slowly. :func:`compare` puts numbers on
each claim for models trained on the shipped digits (4,500 training, 500 held-out):

* parameters, and training seconds per epoch (Adam steps at batch 32 timed in this run, times the
  batches of an epoch: every model on the same machine, under the same load);
* held-out bits/dim: exact for the autoregressive models, the ELBO and a 100-sample importance
  weighted bound for the VAE (upper bounds), none for the GAN;
* images sampled per second at batch 100 (the cached engine for the autoregressive models);
* quality (:mod:`pixelfast.quality`): how many class-conditional samples a digit classifier
  labels as asked, and the Fréchet distance in its feature space to the held-out digits.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pixelfast.data import mnist_digits
from pixelfast.evaluate import bits_per_dim
from pixelfast.experiments import accuracy
from pixelfast.quality import DigitScorer, digit_features, frechet_distance, train_digit_scorer

BATCH_SIZE = 32  # every model's training batch, and the one the per-epoch times are measured at
SAMPLE_BATCH = 100  # images per call when timing sampling
SHIPPED = "default_gated_mnist.pt"  # in pixelfast/assets/


@dataclasses.dataclass(frozen=True)
class Contender:
    """One model of the comparison: its row's name, ``pixelfast.models`` name, options and how it
    is trained (``shipped``: a packaged checkpoint, used as it is)."""

    label: str
    model: str
    config: dict
    epochs: int
    lr: float
    shipped: str | None = None

    @property
    def file_name(self) -> str:
        return self.label.lower().replace(" ", "-") + ".pt"


CONTENDERS = (
    # the shipped model: 64 epochs, 9 more learning its "no class" label, 24 with position biases, 12
    # with position biases per class (README)
    Contender("Gated PixelCNN", "GatedPixelCNN", {}, 109, 1e-4, shipped=SHIPPED),
    Contender("Diagonal BiLSTM", "PixelRNN", {"kind": "diagonal", "hidden_channels": 32, "num_layers": 4}, 10, 1e-3),
    Contender("PixelCNN", "PixelCNN", {"hidden_channels": 32, "num_layers": 8}, 15, 1e-3),
    Contender("ConvVAE", "ConvVAE", {}, 30, 1e-3),
    Contender("DCGAN", "DCGAN", {}, 30, 2e-4),
)


def trained_models(
    work_dir: str | os.PathLike,
    contenders=CONTENDERS,
    *,
    device: str | torch.device | None = None,
    limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, tuple[nn.Module, int]]:
    """``label -> (model, epochs trained)`` for each contender: the shipped checkpoint, or
    ``pixelfast.train`` on the shipped digits into ``work_dir/<label>.pt`` (seed 0, batch 32),
    resumed where an earlier call stopped, so a second call trains nothing. ``limit``: train on the
    first ``limit`` digits only (a quick try; the README's numbers use all 4,500)."""
    from pixelfast.checkpoint import build_from_checkpoint, load_checkpoint
    from pixelfast.train import train

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    models = {}
    for contender in contenders:
        if contender.shipped is not None:
            resource = importlib.resources.files("pixelfast").joinpath("assets").joinpath(contender.shipped)
            with importlib.resources.as_file(resource) as path:
                ckpt = load_checkpoint(path)
            # its epochs in all: the checkpoint counts only those of its last run (init_from restarts the count)
            models[contender.label] = (build_from_checkpoint(ckpt, contender.shipped).eval(), contender.epochs)
            continue
        log(f"{contender.label}: {contender.epochs} epochs into {work_dir / contender.file_name}")
        result = train(
            contender.model,
            "mnist-digits",
            model_config=contender.config,
            epochs=contender.epochs,
            batch_size=BATCH_SIZE,
            lr=contender.lr,
            seed=0,
            device=device,
            out=work_dir / contender.file_name,
            resume=True,
            limit=limit,
            progress=progress,
            log=log,
        )
        models[contender.label] = (result.model, len(result.history))
    return models


@dataclasses.dataclass
class Row:
    """One model's numbers (None where a number does not exist for it)."""

    label: str
    parameters: int | None
    epochs: int | None
    seconds_per_epoch: float | None
    bits_per_dim: float | None  # exact (autoregressive) or the ELBO's bound (VAE)
    importance_bits_per_dim: float | None  # the VAE's importance-weighted bound
    images_per_second: float | None
    accuracy: float
    frechet: float


@dataclasses.dataclass
class Comparison:
    rows: list[Row]
    grid: torch.Tensor  # levels [rows * 20, 1, 28, 28]: real digits, then each model; 2 per class
    grid_columns: int
    count: int

    def table(self) -> str:
        """The Markdown table the README shows."""
        lines = [
            "| model | parameters | epochs | s / epoch | held-out bits/dim | images / s (batch 100) "
            "| classifier agrees | Fréchet distance |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows:
            bpd = _number(row.bits_per_dim, "{:.3f}")
            if row.importance_bits_per_dim is not None:
                bpd = f"≤ {bpd} (ELBO), ≤ {row.importance_bits_per_dim:.3f} (IW, k=100)"
            cells = [
                row.label,
                _number(row.parameters, "{:,}"),
                _number(row.epochs, "{}"),
                _number(row.seconds_per_epoch, "{:.0f}"),
                bpd,
                _number(row.images_per_second, "{:,.0f}"),
                f"{row.accuracy:.3f}",
                f"{row.frechet:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def compare(
    models: dict[str, tuple[nn.Module, int]],
    *,
    count: int = 1000,
    seed: int = 0,
    timing_steps: int = 6,
    importance_samples: int = 100,
    scorer: DigitScorer | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Comparison:
    """Measure each of ``models`` (``label -> (class-conditional 28x28 digits model, epochs)``)
    as the module docstring says, with ``count`` samples each (labels ``0, 1, .., 9, 0, ..``, seed
    ``seed``), and a first row for the real digits (the held-out set, its Fréchet distance to the
    first ``count`` training digits). ``scorer``: the quality classifier (default: one trained here
    on the training digits by :func:`~pixelfast.quality.train_digit_scorer`, seed ``seed``)."""
    from pixelfast.sampling import sample

    if count < 20:
        raise ValueError(f"compare: count must be >= 20 (the grid shows 20 samples per model), got {count}")
    train_set, test_set = mnist_digits("train"), mnist_digits("test")
    for label, (model, _) in models.items():
        if model.num_classes != 10 or model.in_channels != 1 or model.levels != train_set.levels:
            raise ValueError(
                f"compare: {label} must be a class-conditional (10 digits) grey {train_set.levels}-level model"
            )
    if scorer is None:
        scorer = train_digit_scorer(train_set.images, train_set.labels, seed=seed, progress=progress)
    held_out = digit_features(scorer, test_set.images)
    real = test_set.images[_two_per_class(test_set.labels)]
    rows = [
        Row(
            "real digits (held-out)",
            None,
            None,
            None,
            None,
            None,
            None,
            accuracy(scorer, test_set.images.long(), test_set.labels),
            frechet_distance(digit_features(scorer, train_set.images[:count]), held_out),
        )
    ]
    grid = [real.long()]
    labels = torch.arange(count) % 10
    for label, (model, epochs) in models.items():
        log(f"measuring {label}")
        seconds_per_epoch = _seconds_per_epoch(model, train_set, timing_steps, seed)
        exact, importance = _held_out_bits(model, test_set, importance_samples, seed)
        sample(model, 10, labels=labels[:10], generator=seed, progress=False)  # warm-up
        started = time.perf_counter()
        sample(model, SAMPLE_BATCH, labels=torch.arange(SAMPLE_BATCH) % 10, generator=seed, progress=False)
        images_per_second = SAMPLE_BATCH / (time.perf_counter() - started)
        drawn = sample(model, count, labels=labels, generator=seed, progress=progress).long()
        rows.append(
            Row(
                label,
                sum(p.numel() for p in model.parameters()),
                epochs,
                seconds_per_epoch,
                exact,
                importance,
                images_per_second,
                accuracy(scorer, drawn, labels),
                frechet_distance(digit_features(scorer, drawn), held_out),
            )
        )
        grid.append(drawn[:20])
    return Comparison(rows, torch.cat(grid), 20, count)


def _seconds_per_epoch(model: nn.Module, train_set, steps: int, seed: int) -> float:
    """Adam steps at batch 32 on a copy of ``model`` (two warm-up steps, then ``steps`` timed),
    times the batches in an epoch of ``train_set``."""
    from pixelfast.train import _loss, optimizer_options

    trainee = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(trainee.parameters(), **optimizer_options(trainee), lr=1e-4)
    device = next(trainee.parameters()).device
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    elapsed = 0.0
    for step in range(steps + 2):
        index = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
        x, y = train_set.images[index].to(device).long(), train_set.labels[index].to(device)
        started = time.perf_counter()
        loss = _loss(trainee, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            elapsed += time.perf_counter() - started
    return elapsed / steps * math.ceil(len(train_set) / BATCH_SIZE)


def _held_out_bits(model: nn.Module, test_set, importance_samples: int, seed: int):
    """(bits/dim or the ELBO's bound, the importance-weighted bound); None where the model has none."""
    from pixelfast.train import has_likelihood

    if not has_likelihood(model):
        return None, None
    exact = bits_per_dim(model, test_set)
    if not hasattr(model, "importance_weighted_nats"):
        return exact, None
    dims = math.prod(test_set.images.shape[1:])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        model.eval()
        nats = torch.cat(
            [
                model.importance_weighted_nats(
                    test_set.images[s : s + 50].long(), test_set.labels[s : s + 50], samples=importance_samples
                )
                for s in range(0, len(test_set), 50)
            ]
        )
    return exact, -float(nats.mean()) / (dims * math.log(2))  # nats: a lower bound on ln p(x)


def _two_per_class(labels: torch.Tensor) -> torch.Tensor:
    """Indices of the first two digits of each class, ordered 0..9, 0..9 (the grid's columns)."""
    first = [torch.nonzero(labels == digit).flatten()[:2] for digit in range(10)]
    return torch.stack([torch.stack([index[k] for index in first]) for k in range(2)]).flatten()


def _number(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
