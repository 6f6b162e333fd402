"""``PixelModel``: what every pixelfast model shares — its options, input checks, input scaling."""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.models.config import ModelConfig


class PixelModel(nn.Module):
    """Base of the models: their options, input checks and input scaling.

    Subclasses set ``name`` (their key in ``pixelfast.models.MODELS``) and ``Config`` (a
    :class:`~pixelfast.models.config.ModelConfig` whose fields are their constructor's arguments),
    build their layers after ``super().__init__(*args, **kwargs)`` and call ``prepare(x, labels)``
    at the top of ``forward``; a model with layers keeps its ``num_layers`` of them in an
    ``nn.ModuleList`` named ``blocks`` (checkpoint loading counts them before building; a model
    without a ``num_layers`` option needs no ``blocks``).

    Two class attributes tell training and evaluation what a model is: ``has_likelihood`` (False
    for a GAN: nothing to score, so ``log_prob`` and ``bits_per_dim`` refuse it and training
    reports its loss) and ``optimizer_options``, the settings it asks of ``pixelfast.train``'s Adam
    besides the learning rate (e.g. ``{"betas": (0.5, 0.999)}``; none by default).
    """

    name = ""
    Config: type[ModelConfig] = ModelConfig
    has_likelihood = True
    optimizer_options: dict = {}  # read, never changed: a subclass sets its own dict

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # help(), IDEs and inspect show the options as the constructor's own arguments
        cls.__signature__ = inspect.signature(cls.Config)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()
        self.options = self.Config(*args, **kwargs)  # checked; the one copy of the options

    def __getattr__(self, name: str):
        # Options read as attributes (model.levels is model.options.levels). nn.Module's lookup
        # goes first, so a submodule wins over an option of the same name (SuperResolution's
        # `prior` module over the `prior` option naming it).
        try:
            return super().__getattr__(name)
        except AttributeError:
            options = self.__dict__.get("options")
            # the fields' dict, not ModelConfig.names(): torch.compile traces a dict lookup but
            # breaks the graph at dataclasses.fields(cls)
            if options is None or name not in options.__dataclass_fields__:
                raise
            return getattr(options, name)

    @property
    def color_groups(self) -> int:
        return self.options.color_groups

    @property
    def config(self) -> dict:
        """JSON-able constructor kwargs, what checkpoints store: ``type(m)(**m.config)`` rebuilds
        the architecture."""
        return self.options.to_dict()

    def inputs(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple:
        """What training and evaluation pass to ``forward`` (and :meth:`loss`) for a batch of
        dataset ``images`` and ``labels``: here ``(images, labels)``."""
        return images, labels

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective: the mean cross entropy per sub-pixel of ``forward(x, labels)``."""
        return F.cross_entropy(self(x, labels), x.to(next(self.parameters()).device).long())

    def prepare(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Check ``x`` (levels) and ``labels``; return ``x`` scaled to [-1, 1] and labels as int64."""
        labels = self.check_input(x, labels)
        param = next(self.parameters())
        # The network's input range: level 0 -> -1, level (levels - 1) -> +1.
        return x.to(device=param.device, dtype=param.dtype) * (2.0 / (self.levels - 1)) - 1.0, labels

    def check_input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Raise a clear error unless ``x`` holds levels of this model's shape and ``labels`` fit;
        return the labels as int64 on the model's device."""
        self._check_levels(x)
        return self._check_labels(labels, x.shape[0])

    def _check_levels(self, x: torch.Tensor) -> None:
        owner = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{owner}: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{owner}: x must be [B, {self.in_channels}, H, W] (this model has "
                f"in_channels={self.in_channels}), got shape {tuple(x.shape)}"
            )
        if x.shape[2] < 1 or x.shape[3] < 1:
            raise ValueError(f"{owner}: x must have H, W >= 1, got shape {tuple(x.shape)}")
        if x.is_complex():
            raise TypeError(f"{owner}: x must be an integer or float tensor of levels, got {x.dtype}")
        if x.numel():
            v = x.detach()
            if not v.is_floating_point():
                v = v.long()  # compare in int64: a uint8 compare would wrap levels - 1 > 255
            fraction = v.is_floating_point() and bool((v != v.round()).any())  # NaN counts too
            if fraction or bool(((v < 0) | (v > self.levels - 1)).any()):
                raise ValueError(
                    f"{owner}: x must hold whole-number levels in 0..{self.levels - 1} "
                    f"(levels={self.levels}), got values in [{v.min().item()}, {v.max().item()}]"
                    + (", not all whole numbers" if fraction else "")
                )

    def _check_labels(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        owner = type(self).__name__
        if self.num_classes is None:
            if labels is not None:
                raise ValueError(f"{owner}: this model is unconditional (num_classes=None); labels must be None")
            return None
        if labels is None:
            raise ValueError(
                f"{owner}: this model is class-conditional (num_classes={self.num_classes}); pass labels, "
                f"an int64 tensor [B] in 0..{self.num_classes - 1}"
            )
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"{owner}: labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"{owner}: labels must be an integer tensor, got {labels.dtype}")
        if labels.dim() != 1 or labels.shape[0] != batch:
            raise ValueError(f"{owner}: labels must have shape [{batch}] (one per image), got {tuple(labels.shape)}")
        no_class = getattr(self, "no_class", None)  # a label for "no class" (classifier-free guidance)
        top = self.num_classes if no_class is not None else self.num_classes - 1
        if batch and (bool((labels < 0).any()) or bool((labels > top).any())):
            raise ValueError(
                f"{owner}: labels must be in 0..{top}"
                + (f" ({no_class}: no class)" if no_class is not None else "")
                + f", got values in [{labels.min().item()}, {labels.max().item()}]"
            )
        return labels.to(device=next(self.parameters()).device, dtype=torch.long)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
