"""``PixelModel``: what every pixelfast model shares — its description, argument checks, input scaling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_int, check_odd  # noqa: F401  (models import them from here)


def check_divisible(owner: str, name: str, value: int, color_groups: int) -> None:
    if value % color_groups:
        raise ValueError(
            f"{owner}: with 3 input channels the features are split into R, G, B groups, so "
            f"{name} must be divisible by 3, got {value}"
        )


class PixelModel(nn.Module):
    """Base of the models: ``in_channels``, ``levels``, ``num_classes``, ``image_size``, ``config``.

    Subclasses set ``name`` (their key in ``pixelfast.models.MODELS``) and ``config_keys`` (their
    own constructor arguments, kept as attributes of the same names), call ``set_widths`` in their
    constructor and ``prepare(x, labels)`` at the top of ``forward``, and keep their ``num_layers``
    layers in an ``nn.ModuleList`` named ``blocks`` (checkpoint loading counts them before building).
    """

    name = ""
    config_keys: tuple[str, ...] = ()

    def __init__(self, in_channels: int, levels: int, num_classes: int | None, image_size) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(in_channels, bool) or in_channels not in (1, 3):
            raise ValueError(f"{owner}: in_channels must be 1 or 3, got {in_channels!r}")
        self.in_channels = int(in_channels)
        self.levels = check_int(owner, "levels", levels, 2)
        self.num_classes = None if num_classes is None else check_int(owner, "num_classes", num_classes, 1)
        if image_size is not None:
            if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
                raise ValueError(f"{owner}: image_size must be None or (H, W), got {image_size!r}")
            image_size = tuple(check_int(owner, "image_size", s, 1) for s in image_size)
        self.image_size = image_size
        # RGB autoregresses R -> G -> B inside a pixel through three contiguous channel groups.
        self.color_groups = 3 if self.in_channels == 3 else 1

    def set_widths(self, hidden_channels, num_layers, min_layers: int, head_channels) -> None:
        """Check and keep ``hidden_channels``, ``num_layers`` and ``head_channels`` (None: twice
        the hidden width); RGB models split both widths into three colour groups."""
        owner = type(self).__name__
        self.hidden_channels = check_int(owner, "hidden_channels", hidden_channels, 1)
        self.num_layers = check_int(owner, "num_layers", num_layers, min_layers)
        self.head_channels = (
            2 * self.hidden_channels if head_channels is None else check_int(owner, "head_channels", head_channels, 1)
        )
        check_divisible(owner, "hidden_channels", self.hidden_channels, self.color_groups)
        check_divisible(owner, "head_channels", self.head_channels, self.color_groups)

    @property
    def config(self) -> dict:
        """JSON-able constructor kwargs: ``type(m)(**m.config)`` rebuilds the architecture."""
        return {
            "in_channels": self.in_channels,
            "levels": self.levels,
            "num_classes": self.num_classes,
            "image_size": None if self.image_size is None else list(self.image_size),
            **{key: getattr(self, key) for key in self.config_keys},
        }

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
        if batch and (bool((labels < 0).any()) or bool((labels >= self.num_classes).any())):
            raise ValueError(
                f"{owner}: labels must be in 0..{self.num_classes - 1}, got values in "
                f"[{labels.min().item()}, {labels.max().item()}]"
            )
        return labels.to(device=next(self.parameters()).device, dtype=torch.long)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
