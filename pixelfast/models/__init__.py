"""The autoregressive pixel models, and a registry to rebuild one from its name and config."""

from __future__ import annotations

import inspect

from torch import nn

from pixelfast.models.base import PixelModel
from pixelfast.models.gated_pixelcnn import GatedPixelCNN
from pixelfast.models.pixelcnn import PixelCNN
from pixelfast.models.pixelrnn import PixelRNN
from pixelfast.models.super_resolution import SuperResolution

MODELS: dict[str, type[PixelModel]] = {
    "PixelCNN": PixelCNN,
    "GatedPixelCNN": GatedPixelCNN,
    "PixelRNN": PixelRNN,
    "SuperResolution": SuperResolution,
}


def build_model(name: str, config: dict) -> nn.Module:
    """``MODELS[name](**config)``, with clear errors for an unknown name or unknown config keys."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if not isinstance(config, dict):
        raise TypeError(f"build_model: config must be a dict, got {type(config).__name__}")
    cls = MODELS[name]
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"build_model: unknown config keys for {name}: {', '.join(map(str, unknown))} "
            f"(accepted: {', '.join(sorted(known))})"
        )
    return cls(**config)


__all__ = ["MODELS", "PixelModel", "PixelCNN", "GatedPixelCNN", "PixelRNN", "SuperResolution", "build_model"]
