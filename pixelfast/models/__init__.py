"""The autoregressive pixel models, the latent-variable baselines (a VAE and a GAN) beside them, and
a registry to rebuild one from its name and config."""

from __future__ import annotations

from torch import nn

from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig
from pixelfast.models.dcgan import DCGAN, DCGANConfig
from pixelfast.models.gated_pixelcnn import GatedPixelCNN, GatedPixelCNNConfig
from pixelfast.models.pixelcnn import PixelCNN, PixelCNNConfig
from pixelfast.models.pixelcnn_plus_plus import PixelCNNPlusPlus, PixelCNNPlusPlusConfig
from pixelfast.models.pixelrnn import PixelRNN, PixelRNNConfig
from pixelfast.models.super_resolution import SuperResolution, SuperResolutionConfig
from pixelfast.models.vae import ConvVAE, ConvVAEConfig

MODELS: dict[str, type[PixelModel]] = {
    "PixelCNN": PixelCNN,
    "GatedPixelCNN": GatedPixelCNN,
    "PixelRNN": PixelRNN,
    "PixelCNNPlusPlus": PixelCNNPlusPlus,
    "SuperResolution": SuperResolution,
    "ConvVAE": ConvVAE,
    "DCGAN": DCGAN,
}


def build_model(name: str, config: dict) -> nn.Module:
    """``MODELS[name](**config)``, with clear errors for an unknown name or unknown config keys."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if not isinstance(config, dict):
        raise TypeError(f"build_model: config must be a dict, got {type(config).__name__}")
    cls = MODELS[name]
    known = cls.Config.names()
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(
            f"build_model: unknown config keys for {name}: {', '.join(map(str, unknown))} "
            f"(accepted: {', '.join(sorted(known))})"
        )
    return cls(**config)


__all__ = [
    "MODELS",
    "ModelConfig",
    "PixelModel",
    "PixelCNN",
    "PixelCNNConfig",
    "GatedPixelCNN",
    "GatedPixelCNNConfig",
    "PixelRNN",
    "PixelRNNConfig",
    "PixelCNNPlusPlus",
    "PixelCNNPlusPlusConfig",
    "SuperResolution",
    "SuperResolutionConfig",
    "ConvVAE",
    "ConvVAEConfig",
    "DCGAN",
    "DCGANConfig",
    "build_model",
]
