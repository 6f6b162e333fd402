"""Classifier-free guidance (Ho & Salimans 2022) for class-conditional pixel models.

A model trained with ``class_dropout`` also knows ``p(x)`` through its "no class" label. Guidance
of weight ``w`` draws each sub-pixel from ``softmax((1 + w) * l_c - w * l_0)``, ``l_c`` the logits
given the asked class and ``l_0`` those given no class: it leans away from what every digit shares
towards what sets the asked one apart. ``w = 0`` is the model itself. The result is no longer the
model's likelihood, so guidance is for drawing only (``log_prob`` and ``eval`` never use it).

:class:`Guided` wraps a model as a module of the same kind, so both samplers run it unchanged: the
naive one calls its ``forward`` (two passes per step), and the cached engine runs a plan holding the
network twice, the second copy reading the "no class" biases, with the two heads' logits scaled by
``1 + w`` and ``-w`` and added before each draw (``pixelfast/sampling/plan.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from pixelfast._checks import check_guidance


class Guided(nn.Module):
    """``model`` under classifier-free guidance of weight ``weight`` (>= 0)."""

    def __init__(self, model: nn.Module, weight: float) -> None:
        super().__init__()
        no_class = getattr(model, "no_class", None)
        if no_class is None:
            raise ValueError(
                f"guidance needs a class-conditional model trained with a 'no class' label (GatedPixelCNN "
                f"with class_dropout > 0); {type(model).__name__} has none"
            )
        self.model = model
        self.weight = check_guidance("Guided", weight)
        self.no_class = no_class

    def __getattr__(self, name: str):
        # the wrapped model's attributes (in_channels, levels, num_classes, image_size, ...)
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None:  # not yet (or no longer) wrapping a model: e.g. while being copied
                raise
            return getattr(model, name)

    def check_input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        return self.model.check_input(x, labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        given = self.model(x, labels)
        unconditional = self.model(x, torch.full_like(labels, self.no_class))
        return (1.0 + self.weight) * given - self.weight * unconditional
