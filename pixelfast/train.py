"""Training: Adam on the model's objective (the per-sub-pixel cross entropy; super-resolution's,
the VAE's and the GAN's own losses), a checkpoint every epoch; one process, or several under
torchrun (DDP).

A model without a likelihood (``has_likelihood = False``: the GAN) has no bits/dim: training
reports its mean loss (``train_loss`` in the history) and skips the held-out evaluation (its
``train_bits_per_dim`` and ``test_bits_per_dim`` are None).

Reproducibility: the model is initialised under ``seed``, and epoch ``e`` shuffles the data with a
generator seeded from ``(seed, e)`` (torch's global RNG is seeded the same way for the epoch, for
any dropout). Nothing carries over between epochs except the weights and the optimizer state, and
both are in the checkpoint, so ``resume=True`` after epoch ``k`` ends with exactly the weights of
an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from pixelfast import distributed
from pixelfast._checks import check_int
from pixelfast.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_config as config_of,
    model_name,
    save_checkpoint,
)
from pixelfast.data import LevelsDataset, as_tensors, check_level_values, load_dataset
from pixelfast.device import check_device
from pixelfast.evaluate import bits_per_dim

EVAL_BATCH_SIZE = 256
# Mixed precision: the autocast dtype of each `precision` (None: plain float32).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]  # one entry per epoch trained so far (including epochs before a resume)
    checkpoint: Path | None


def train(
    model: nn.Module | str,
    data: Any = "mnist-digits",
    *,
    test_data: Any = None,
    root: str | os.PathLike | None = None,
    levels: int | None = None,
    download: bool = False,
    channels: int | None = None,
    limit: int | None = None,
    model_config: dict | None = None,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str | torch.device | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    precision: str = "fp32",
    init_from: str | os.PathLike | None = None,
    augment_shift: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``model`` for ``epochs`` epochs (in total, counting epochs done before a resume).

    - ``model``: an ``nn.Module`` with the pixelfast model attributes, or a name in
      ``pixelfast.models.MODELS`` built with ``model_config`` plus what the data implies
      (``in_channels``, ``levels``, ``image_size``, and ``num_classes`` for a model that accepts it
      when the data is labelled; pass ``num_classes=None`` in ``model_config`` for unconditional).
    - ``data``: a dataset name (see :func:`pixelfast.data.load_dataset`, with ``root``, ``levels``,
      ``download``, ``channels``; its ``test`` split is the held-out set), or a Dataset / image tensor /
      ``(images, labels)`` pair. ``test_data`` overrides the held-out set; without one, held-out
      bits/dim is skipped. ``limit`` keeps only the first ``limit`` images of each split.
    - ``device``: where to train (default: CUDA when available); the model is moved there.
    - ``out``: checkpoint path, written atomically after every epoch. ``resume=True`` continues
      from it (a missing file starts afresh); the model must match the checkpoint's. An existing
      file is never replaced by a fresh run unless ``overwrite=True``.

    - ``precision``: ``"fp32"``, or mixed precision under ``torch.autocast``: ``"bf16"`` (CPU or
      GPU), ``"fp16"`` (GPU, with a gradient scaler). The weights and optimizer stay float32.

    - ``init_from``: start a fresh run from another checkpoint's weights instead of random ones: a
      model of the same kind whose every tensor fits this one (same name and shape). Tensors the
      source lacks keep their fresh values, and the model's ``grown_from`` hook may adjust them
      (the Gated PixelCNN zeroes the residual output of added blocks, so a deeper model starts out
      computing exactly what the source did). The optimizer starts fresh.
    - ``augment_shift``: shift each training image by a random ``(dy, dx)`` in
      ``-augment_shift .. augment_shift`` (edges repeated), drawn per epoch from the epoch's seed.

    One Adam optimizer covers all of the model's parameters, with the model's own
    ``optimizer_options`` (the GAN's ``betas=(0.5, 0.999)``) besides ``lr``.

    Training stops with a :class:`TrainingDiverged` error when the loss, the weights or the
    held-out bits/dim stop being finite; the checkpoint then keeps the last good epoch.
    """
    epochs, batch_size, seed, limit, augment_shift = _check_options(
        epochs, batch_size, seed, limit, lr, precision, augment_shift, out, resume, overwrite, init_from
    )
    device = _training_device(device, batch_size)
    if distributed.rank() != 0:
        log = _quiet  # one process reports
    if not isinstance(model, (nn.Module, str)):
        raise TypeError(f"train: model must be an nn.Module or a model name, got {type(model).__name__}")
    if levels is None:
        levels = model.levels if isinstance(model, nn.Module) else 256
    data = _Data.load(data, test_data, root, levels, download, channels, limit)
    model = _prepare_model(model, model_config, data, seed, init_from, log)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"train: precision='fp16' needs a CUDA device (use 'bf16' on {device.type})")

    model.to(device)
    settings = {
        "data": data.name,
        "levels": model.levels,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "epochs": epochs,
        "limit": limit,
        "precision": precision,
        "augment_shift": augment_shift,
        "init_from": None if init_from is None else str(init_from),
    }
    run = _Run(
        model,
        torch.optim.Adam(model.parameters(), **optimizer_options(model), lr=lr),
        device,
        precision,
        data,
        settings,
        None if out is None else Path(out),
        progress,
    )
    start_epoch, history = _start(run, resume, lr, log)
    if start_epoch >= epochs:
        log(f"{out} has already been trained for {start_epoch} epochs (asked for {epochs}); nothing to do")
        return TrainResult(model, history, run.out)
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        train_loss = _train_epoch(run, epoch, epochs)
        _check_weights(run, epoch)
        test_bpd = _held_out(run, epoch)
        entry = {"epoch": epoch + 1, "train_bits_per_dim": train_loss / math.log(2), "test_bits_per_dim": test_bpd}
        if not has_likelihood(model):  # a loss that is no likelihood: reported as it is
            entry.update(train_bits_per_dim=None, train_loss=train_loss)
        history.append({**entry, "seconds": time.perf_counter() - started})
        _save_and_report(run, history, epochs, log)
    distributed.barrier()  # the last checkpoint is on disk before any rank returns
    return TrainResult(model, history, run.out)


# --- the steps of a run -----------------------------------------------------------------------


def _check_options(epochs, batch_size, seed, limit, lr, precision, augment_shift, out, resume, overwrite, init_from):
    """The plain arguments, checked before any work; returns the counts as ints."""
    epochs = check_int("train", "epochs", epochs, 1)
    batch_size = check_int("train", "batch_size", batch_size, 1)
    seed = check_int("train", "seed", seed, 0)
    if limit is not None:
        limit = check_int("train", "limit", limit, 1)
    augment_shift = check_int("train", "augment_shift", augment_shift, 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"train: lr must be a finite number > 0, got {lr!r}")
    if resume and out is None:
        raise ValueError("train: resume=True needs the checkpoint path (out=...)")
    if precision not in PRECISIONS:
        raise ValueError(f"train: precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if init_from is not None and resume:
        raise ValueError("train: init_from starts a fresh run; it cannot be combined with resume=True")
    if resume and overwrite:
        raise ValueError("train: resume=True and overwrite=True contradict each other; choose one")
    if out is not None and not Path(out).parent.is_dir():
        raise FileNotFoundError(f"train: the folder for the checkpoint {str(out)!r} does not exist")
    if out is not None and Path(out).is_dir():
        raise IsADirectoryError(f"train: the checkpoint path {str(out)!r} is a folder")
    if out is not None and Path(out).exists() and not (resume or overwrite):
        raise FileExistsError(
            f"train: {str(out)!r} already exists; resume=True continues it, overwrite=True replaces it"
        )
    return epochs, batch_size, seed, limit, augment_shift


def _training_device(device, batch_size: int) -> torch.device:
    """Where this process trains (under torchrun: its own GPU), and the global batch checked against
    the number of processes."""
    device = check_device(device, "train") if device is not None else default_device()
    world = distributed.world_size()
    if batch_size % world:
        raise ValueError(f"train: batch_size ({batch_size}) must divide evenly over the {world} processes")
    return distributed.rank_device(device)


@dataclasses.dataclass
class _Data:
    """The training split as tensors, the held-out split (or None) and the dataset's name."""

    train_set: Any
    images: torch.Tensor
    labels: torch.Tensor | None
    test_set: Any
    name: str | None

    @classmethod
    def load(cls, data, test_data, root, levels, download, channels, limit) -> _Data:
        train_set, test_set, name = _load_data(data, test_data, root, levels, download, channels, limit)
        images, labels = as_tensors(train_set)
        return cls(train_set, images, labels, test_set, name)


def _prepare_model(model, config: dict | None, data: _Data, seed: int, init_from, log) -> nn.Module:
    """The model to train: built by name under ``seed`` (or the one given), checked against both
    splits, and started from ``init_from``'s weights when given."""
    if isinstance(model, str):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the same seed, the same initial weights
            model = _build_named(model, config or {}, data.train_set, data.images, data.labels)
    elif config:
        raise ValueError("train: model_config is only used when the model is given by name")
    _check_model_fits_data(model, data.images, data.labels, "training data")
    if init_from is not None:
        _init_from(Path(init_from), model, log)
    if data.test_set is not None:
        test_images, test_labels = as_tensors(data.test_set)
        _check_model_fits_data(model, test_images, test_labels, "held-out data")
    return model


@dataclasses.dataclass
class _Run:
    """What every epoch of one run uses."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str
    data: _Data
    settings: dict
    out: Path | None
    progress: bool

    def __post_init__(self) -> None:
        # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        # Under torch.distributed each rank takes batch_size / world of every global batch (a
        # DistributedSampler's share of the same shuffled order) and DDP averages the gradients.
        self.step_model: nn.Module = _LossOf(self.model)
        if distributed.world_size() > 1:
            self.step_model = nn.parallel.DistributedDataParallel(
                self.step_model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )


def _start(run: _Run, resume: bool, lr: float, log) -> tuple[int, list[dict]]:
    """The epoch to start from and the history so far: 0 and none, or the checkpoint's on resume."""
    if not resume:
        return 0, []
    if not run.out.exists():
        log(f"no checkpoint at {run.out}; starting from scratch")
        return 0, []
    start_epoch, history = _resume(run.out, run.model, run.optimizer, run.settings, log)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    return start_epoch, history


def _train_epoch(run: _Run, epoch: int, epochs: int) -> float:
    """One pass over the training split (this rank's share of it); the running mean of the loss
    over the whole epoch, all ranks together (nats per sub-pixel for a likelihood model)."""
    settings, data, device = run.settings, run.data, run.device
    seed, shift = settings["seed"] * 100_003, settings["augment_shift"]
    amp_dtype = PRECISIONS[run.precision]
    n, world = data.images.shape[0], distributed.world_size()
    run.model.train()
    likelihood = has_likelihood(run.model)
    total_nats, total_images = 0.0, 0
    with _seeded(seed + epoch, device) as order_generator:
        order = torch.randperm(n, generator=order_generator)
        if shift:  # one shift per image and epoch, drawn after the order, whatever the batching
            shifts = torch.randint(-shift, shift + 1, (n, 2), generator=order_generator)
        if world > 1:  # this rank's share of the same order
            order = rank_order(n, world, distributed.rank(), seed, epoch)
        local_batch = settings["batch_size"] // world
        bar = tqdm(
            range(0, order.numel(), local_batch),
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            disable=not (run.progress and distributed.rank() == 0),
            leave=False,
        )
        for start in bar:
            index = order[start : start + local_batch]
            x = data.images[index].to(device=device, dtype=torch.int64)
            if shift:
                x = shift_images(x, shifts[index].tolist(), shift)
            y = data.labels[index].to(device) if run.model.num_classes is not None else None
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = run.step_model(x, y)
            if not distributed.all_true(bool(torch.isfinite(loss))):
                raise TrainingDiverged(_diverged(f"the loss became {loss.item()}", epoch, run.out))
            run.optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
            total_nats += loss.item() * index.numel()
            total_images += index.numel()
            if likelihood:
                bar.set_postfix(bpd=f"{loss.item() / math.log(2):.3f}")
            else:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    total_nats, total_images = distributed.sum_over_ranks(total_nats, total_images)
    return total_nats / total_images  # weights changing along the way


def _check_weights(run: _Run, epoch: int) -> None:
    bad = next((name for name, p in run.model.named_parameters() if not bool(torch.isfinite(p).all())), None)
    if bad is not None:
        raise TrainingDiverged(_diverged(f"the weight {bad!r} became non-finite", epoch, run.out))


def _held_out(run: _Run, epoch: int) -> float | None:
    """Held-out bits/dim (None without a held-out split or a likelihood); rank 0 evaluates, the
    others receive it."""
    if run.data.test_set is None or not has_likelihood(run.model):
        return None
    test_bpd = None
    if distributed.rank() == 0:  # the weights are the same on every rank
        test_bpd = bits_per_dim(run.model, run.data.test_set, batch_size=EVAL_BATCH_SIZE, device=run.device)
    test_bpd = distributed.from_rank_zero(test_bpd)
    if not math.isfinite(test_bpd):
        raise TrainingDiverged(_diverged(f"the held-out bits/dim became {test_bpd}", epoch, run.out))
    return test_bpd


def _save_and_report(run: _Run, history: list[dict], epochs: int, log) -> None:
    """Rank 0 writes the checkpoint (atomically); one line per epoch."""
    last = history[-1]
    if last["train_bits_per_dim"] is None:
        message = f"epoch {last['epoch']}/{epochs}: train loss {last['train_loss']:.4f}"
    else:
        message = f"epoch {last['epoch']}/{epochs}: train {last['train_bits_per_dim']:.4f} bits/dim"
    if last["test_bits_per_dim"] is not None:
        message += f", held-out {last['test_bits_per_dim']:.4f} bits/dim"
    if run.out is not None:
        metrics = {
            "history": history,
            "train_bits_per_dim": last["train_bits_per_dim"],
            "test_bits_per_dim": last["test_bits_per_dim"],
            "training": run.settings,
        }
        if "train_loss" in last:
            metrics["train_loss"] = last["train_loss"]
        if distributed.rank() == 0:
            save_checkpoint(run.out, run.model, run.optimizer, last["epoch"], metrics)
        message += f" (saved {run.out})"
    log(message)


def _quiet(message: str) -> None:
    pass


class _LossOf(nn.Module):
    """``model``'s training loss as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return _loss(self.model, x, labels)


def rank_order(n: int, world: int, rank: int, seed: int, epoch: int) -> torch.Tensor:
    """Rank ``rank``'s image indices for the epoch: a DistributedSampler's share of the order
    ``torch.randperm(n)`` under the generator seeded ``seed + epoch`` - the order one process uses,
    so rank ``r`` of global batch ``k`` holds the images of one process's batch ``k`` that it deals
    to ``r`` (every ``world``-th, padded by repeating the first images when ``n`` does not divide)."""
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.int64)


class TrainingDiverged(FloatingPointError):
    """The loss, the weights or the held-out bits/dim stopped being finite (learning rate too high)."""


def _diverged(what: str, epoch: int, out: Path | None) -> str:
    if out is None:
        kept = "nothing was saved"
    elif epoch == 0:
        kept = f"{out} was not written"
    else:
        kept = f"{out} keeps epoch {epoch}, the last good one"
    return f"train: stopped in epoch {epoch + 1}: {what}; lower the learning rate ({kept})"


# --- helpers ----------------------------------------------------------------------------------


def has_likelihood(model: nn.Module) -> bool:
    """Whether ``model`` has a likelihood (bits/dim) to report: all but a GAN."""
    return bool(getattr(model, "has_likelihood", True))


def optimizer_options(model: nn.Module) -> dict:
    """The settings ``model`` asks of Adam besides the learning rate (its ``optimizer_options``)."""
    options = getattr(model, "optimizer_options", None) or {}
    if not isinstance(options, dict) or "lr" in options or "params" in options:
        raise TypeError(
            f"train: {type(model).__name__}.optimizer_options must be a dict of Adam settings other than "
            f"lr and params, got {options!r}"
        )
    return dict(options)


def _loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """A pixelfast model's own objective (``model.loss(*model.inputs(x, labels))``: the cross
    entropy, or super-resolution's); for another module, the cross entropy of ``model(x, labels)``."""
    if hasattr(model, "loss") and hasattr(model, "inputs"):
        return model.loss(*model.inputs(x, labels))
    return F.cross_entropy(model(x, labels), x)


def shift_images(x: torch.Tensor, offsets: list, max_shift: int) -> torch.Tensor:
    """Image ``i`` of ``x [B, C, H, W]`` moved down ``offsets[i][0]`` and right ``offsets[i][1]``
    pixels (each in ``-max_shift .. max_shift``), the edges repeated into the space it leaves."""
    _, _, h, w = x.shape
    padded = F.pad(x.to(torch.float32), (max_shift,) * 4, mode="replicate")
    shifted = [
        padded[i, :, max_shift - dy : max_shift - dy + h, max_shift - dx : max_shift - dx + w]
        for i, (dy, dx) in enumerate(offsets)
    ]
    return torch.stack(shifted).to(x.dtype)


def _init_from(path: Path, model: nn.Module, log) -> None:
    """Copy ``path``'s weights into ``model`` (see ``train(init_from=...)``)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt["model_name"] != model_name(model):
        raise CheckpointError(f"cannot start from {path}: it holds a {ckpt['model_name']}, not a {model_name(model)}")
    own = model.state_dict()
    if hasattr(model, "fit_source_state"):  # e.g. a Gated PixelCNN gaining a "no class" label
        ckpt["model_state"] = model.fit_source_state(ckpt["model_state"])
    misfits = [key for key, value in ckpt["model_state"].items() if key not in own or own[key].shape != value.shape]
    if misfits:
        raise CheckpointError(
            f"cannot start from {path}: {len(misfits)} of its tensors do not fit this model "
            f"(first: {misfits[0]!r}); only extra layers may differ"
        )
    new = sorted(set(own) - set(ckpt["model_state"]))
    model.load_state_dict(ckpt["model_state"], strict=False)
    if new and hasattr(model, "grown_from"):
        model.grown_from(new)
    log(f"starting from the weights of {path} ({len(own) - len(new)} tensors copied, {len(new)} new)")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_data(data, test_data, root, levels, download, channels, limit):
    if isinstance(data, str):
        name = data
        options = {"root": root, "levels": levels, "download": download, "channels": channels}
        train_set = load_dataset(data, split="train", **options)
        if test_data is None:
            test_data = load_dataset(data, split="test", **options)
    else:
        name, train_set = None, data
    if limit is not None:
        train_set = _first(train_set, limit)
        test_data = None if test_data is None else _first(test_data, limit)
    return train_set, test_data, name


def _first(data, limit: int):
    if isinstance(data, LevelsDataset):
        return data.subset(torch.arange(min(limit, len(data))))
    images, labels = as_tensors(data)
    return images[:limit], (None if labels is None else labels[:limit])


def _build_named(name: str, config: dict, train_set, images: torch.Tensor, labels) -> nn.Module:
    from pixelfast import models

    if name not in models.MODELS:
        raise ValueError(f"train: unknown model {name!r}; choose one of {sorted(models.MODELS)}")
    accepted = models.MODELS[name].Config.names()
    implied: dict[str, Any] = {
        "in_channels": images.shape[1],
        "levels": getattr(train_set, "levels", None) or int(images.max()) + 1,
    }
    if "image_size" in accepted:
        implied["image_size"] = (int(images.shape[2]), int(images.shape[3]))
    if "num_classes" in accepted and labels is not None:
        implied["num_classes"] = getattr(train_set, "num_classes", None) or int(labels.max()) + 1
    implied.update(config)
    return models.build_model(name, implied)


def _check_model_fits_data(model: nn.Module, images: torch.Tensor, labels, what: str) -> None:
    for attribute in ("in_channels", "levels", "num_classes"):
        if not hasattr(model, attribute):
            raise TypeError(f"train: {type(model).__name__} is not a pixelfast model (no `{attribute}`)")
    if images.shape[0] == 0:
        raise ValueError(f"train: the {what} is empty")
    if images.shape[1] != model.in_channels:
        raise ValueError(f"train: the model takes {model.in_channels}-channel images; the {what} has {images.shape[1]}")
    size = getattr(model, "image_size", None)
    if size is not None and tuple(size) != tuple(images.shape[2:]):
        raise ValueError(
            f"train: the model's image_size is {list(size)}, but the {what} has {images.shape[2]}x{images.shape[3]} "
            "images (image_size records the size the model samples by default)"
        )
    check_level_values(images, model.levels, f"train: {what}")
    if model.num_classes is not None:
        if labels is None:
            raise ValueError(f"train: the model is class-conditional but the {what} has no labels")
        if labels.min() < 0 or labels.max() >= model.num_classes:
            raise ValueError(f"train: {what} labels must be in 0..{model.num_classes - 1}")


def _plain(value):
    """Tuples -> lists, recursively, so configs compare equal however they were stored."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _with_defaults(model, saved):
    """``saved`` (a checkpoint's config) read through ``model``'s config class, so that an option
    added since the checkpoint was written reads as its default, as when loading; as saved when it
    does not fit (the comparison then reports it)."""
    options = getattr(model, "options", None)
    if options is None or not isinstance(saved, dict):
        return saved
    try:
        return type(options)(**saved).to_dict()
    except (TypeError, ValueError):
        return saved


def _resume(path: Path, model, optimizer, settings: dict, log) -> tuple[int, list[dict]]:
    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt["model_name"] != model_name(model):
        raise CheckpointError(
            f"cannot resume: {path} holds a {ckpt['model_name']}, but the model to train is a {model_name(model)}"
        )
    saved, wanted = _plain(_with_defaults(model, ckpt["model_config"])), _plain(config_of(model))
    if saved != wanted:
        diff = {k: (saved.get(k), wanted.get(k)) for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)}
        raise CheckpointError(f"cannot resume: {path} was trained with another configuration (saved, asked): {diff}")
    try:
        model.load_state_dict(ckpt["model_state"])
        if ckpt["optimizer_state"] is not None:
            optimizer.load_state_dict(ckpt["optimizer_state"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"cannot resume from {path}: {error}") from None
    metrics = ckpt.get("metrics") or {}
    previous = metrics.get("training") or {}
    for key in ("data", "batch_size", "seed", "limit", "augment_shift"):
        if key in previous and previous[key] != settings[key]:
            log(f"note: resuming with {key}={settings[key]!r}, the checkpoint was trained with {previous[key]!r}")
    log(f"resuming from {path} after epoch {ckpt['epoch']}")
    return ckpt["epoch"], list(metrics.get("history") or [])


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """A generator for the data order, and torch's global RNG seeded for the epoch, then restored."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)
