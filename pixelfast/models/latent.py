"""``LatentModel``: what the latent-variable models (the VAE, the GAN) share.

They draw a whole image at once from a latent vector ``z``, not sub-pixel by sub-pixel, so
:func:`pixelfast.sample` calls their :meth:`LatentModel.generate` instead of an autoregressive
sampler. ``z`` is a vector, read by a fully connected layer into a grid of ``ceil(H / 4) x
ceil(W / 4)`` features, so each model has one image size (``image_size``, required). Two stride-2
kernel-3 transposed convolutions take that grid up to ``4 ceil(H / 4) x 4 ceil(W / 4)``; the
output keeps its top-left ``H x W`` (a crop only when ``H`` or ``W`` is not a multiple of 4).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from pixelfast._checks import check_int, check_temperature
from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig

# Images decoded at once by ``generate`` (and by the VAE's importance-weighted bound, as its
# default): bounds the memory of the [n, levels, C, H, W] logits.
CHUNK = 64


@dataclasses.dataclass(frozen=True)
class LatentConfig(ModelConfig):
    """Base of the latent models' configs: the checks of ``hidden_channels``, ``latent_dim`` and
    the required ``image_size``. No fields: each model lists its own."""

    def _check_latent_options(self) -> None:
        owner = self.owner
        if self.image_size is None:
            raise ValueError(
                f"{owner}: image_size=(H, W) is required: the latent is a vector read by a fully "
                "connected layer, so the model has one image size"
            )
        self._check_data_options()
        self._set(
            hidden_channels=check_int(owner, "hidden_channels", self.hidden_channels, 1),
            latent_dim=check_int(owner, "latent_dim", self.latent_dim, 1),
        )


class LatentModel(PixelModel):
    """Base of the models that draw whole images from a latent ``z ~ N(0, I)``.

    Subclasses implement :meth:`generate`. Inputs must be ``image_size`` images.
    """

    @property
    def latent_grid(self) -> tuple[int, int]:
        """``(ceil(H / 4), ceil(W / 4))``: the feature grid the latent is read into, the size two
        stride-2 convolutions bring an ``H x W`` image down to."""
        height, width = self.image_size
        return math.ceil(height / 4), math.ceil(width / 4)

    def crop(self, features: torch.Tensor) -> torch.Tensor:
        """The top-left ``image_size`` of the decoder's ``4 ceil(H / 4) x 4 ceil(W / 4)`` output."""
        height, width = self.image_size
        return features[..., :height, :width]

    def check_input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        labels = super().check_input(x, labels)
        if tuple(x.shape[2:]) != tuple(self.image_size):
            height, width = self.image_size
            raise ValueError(
                f"{type(self).__name__}: x must be [B, {self.in_channels}, {height}, {width}] (image_size: "
                f"the latent is a vector, so the model has one size), got shape {tuple(x.shape)}"
            )
        return labels

    def normal(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal noise of ``shape`` on the model's device and in its dtype, drawn on the
        generator's device (so a CPU seed works with a model on a GPU), or from torch's global
        generator when ``generator`` is None."""
        param = next(self.parameters())
        if generator is None:
            return torch.randn(shape, device=param.device, dtype=param.dtype)
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=param.dtype)
        return noise.to(param.device)

    def check_generate(self, n, labels: torch.Tensor | None, temperature) -> tuple[int, torch.Tensor | None, float]:
        """``generate``'s arguments checked: ``n`` as an int, the labels as int64 on the model's
        device (one per image; None for an unconditional model), ``temperature`` as a float."""
        owner = type(self).__name__
        n = check_int(f"{owner}.generate", "n", n, 1)
        temperature = check_temperature(f"{owner}.generate", temperature)
        return n, self._check_labels(labels, n), temperature

    def generate(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images of levels, int64 ``[n, C, H, W]``; see the subclasses for ``temperature``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement generate")
