"""``DCGAN``: a small class-conditional DCGAN ("Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks", Radford et al. 2016) beside the likelihood models,
trained by the same loop. It has no likelihood: it is compared by its samples alone."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pixelfast.models.latent import CHUNK, LatentConfig, LatentModel


@dataclasses.dataclass(frozen=True)
class DCGANConfig(LatentConfig):
    """:class:`DCGAN`'s options, its constructor's arguments in order."""

    in_channels: int = 1
    levels: int = 256
    hidden_channels: int = 64
    latent_dim: int = 64
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] = (28, 28)  # required: the one size the model draws

    def __post_init__(self) -> None:
        self._check_latent_options()


class Generator(nn.Module):
    """``z`` (joined by a learned label vector of ``latent_dim`` with ``num_classes``) -> images in
    [-1, 1], ``[B, C, H, W]``.

    ``project``: ``Linear`` to ``2h`` maps of ``grid`` size, BatchNorm, ReLU;
    ``ConvTranspose2d(2h, h, 3, stride=2, padding=1, output_padding=1)``, BatchNorm, ReLU;
    ``ConvTranspose2d(h, C, 3, stride=2, padding=1, output_padding=1)``, cropped to ``size``, tanh.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden_channels: int,
        out_channels: int,
        grid: tuple[int, int],
        size: tuple[int, int],
        num_classes: int | None,
    ) -> None:
        super().__init__()
        h = hidden_channels
        self.grid, self.size = tuple(grid), tuple(size)
        self.label_embedding = None if num_classes is None else nn.Embedding(num_classes, latent_dim)
        label = 0 if num_classes is None else latent_dim
        self.project = nn.Linear(latent_dim + label, 2 * h * grid[0] * grid[1], bias=False)  # BatchNorm's shift
        self.up = nn.Sequential(
            nn.BatchNorm2d(2 * h),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * h, h, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(),
            nn.ConvTranspose2d(h, out_channels, 3, stride=2, padding=1, output_padding=1),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_embedding is not None:
            z = torch.cat([z, self.label_embedding(labels).to(z.dtype)], dim=1)
        out = self.up(self.project(z).view(z.shape[0], -1, *self.grid))
        return torch.tanh(out[..., : self.size[0], : self.size[1]])


class Discriminator(nn.Module):
    """Images in [-1, 1] -> one logit each, ``[B]`` (high: real).

    ``Conv2d(C, h, 3, stride=2, padding=1)``, LeakyReLU(0.2), ``Conv2d(h, 2h, 3, stride=2,
    padding=1)``, LeakyReLU(0.2), flattened to ``f``; the logit is ``Linear(f)``, plus with
    ``num_classes`` the projection ``<embed(y), f>`` ("cGANs with Projection Discriminator", Miyato
    and Koyama 2018). No BatchNorm: the loss calls it on real and fake batches separately and once
    more with detached weights, which must all see the same function.
    """

    def __init__(self, in_channels: int, hidden_channels: int, grid: tuple[int, int], num_classes: int | None) -> None:
        super().__init__()
        h = hidden_channels
        features = 2 * h * grid[0] * grid[1]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(h, 2 * h, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.out = nn.Linear(features, 1)
        self.projection = None if num_classes is None else nn.Embedding(num_classes, features)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        f = self.features(images)
        logit = self.out(f).squeeze(1)
        if self.projection is not None:
            logit = logit + (self.projection(labels).to(f.dtype) * f).sum(dim=1)
        return logit


class DCGAN(LatentModel):
    """A generator and a discriminator, trained together by one optimizer.

    * ``generator``: :class:`Generator`, ``z ~ N(0, I)`` of ``latent_dim`` (and the label) up
      through two stride-2 kernel-3 ``ConvTranspose2d`` layers to an image in [-1, 1], which
      becomes levels by rounding ``(y + 1) / 2 * (levels - 1)``
    * ``discriminator``: :class:`Discriminator`, strided convs and LeakyReLU to one logit, with a
      label projection when class-conditional

    ``h = hidden_channels``. The weights start as in the paper (normal, std 0.02; BatchNorm scales
    around 1) and :attr:`optimizer_options` asks ``pixelfast.train``'s Adam for the paper's
    ``betas=(0.5, 0.999)``.

    :meth:`loss` is the non-saturating GAN loss of both players in one scalar, built so that one
    ``backward()`` gives each player only its own gradient (see :meth:`losses`): one optimizer step
    is a simultaneous update of both. ``forward`` is the discriminator's logit for levels ``x``.
    A GAN has no likelihood (``has_likelihood = False``): :func:`pixelfast.log_prob` and
    :func:`pixelfast.bits_per_dim` refuse it, and training reports its loss instead of bits/dim.
    """

    name = "DCGAN"
    Config = DCGANConfig
    has_likelihood = False
    optimizer_options = {"betas": (0.5, 0.999)}

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`DCGANConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked DCGANConfig

        grid = self.latent_grid
        self.generator = Generator(
            self.latent_dim, self.hidden_channels, self.in_channels, grid, self.image_size, self.num_classes
        )
        self.discriminator = Discriminator(self.in_channels, self.hidden_channels, grid, self.num_classes)
        self.apply(_paper_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's logit ``[B]`` for levels ``x`` (high: looks real)."""
        scaled, labels = self.prepare(x, labels)
        return self.discriminator(scaled, labels)

    def losses(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(discriminator_loss, generator_loss)`` for a batch of real levels ``x`` and fakes from
        ``z`` drawn with torch's global generator, both non-saturating logistic losses:

        * the discriminator's, ``softplus(-D(real)) + softplus(D(fake))``, on ``G(z).detach()``,
          so its gradient reaches the discriminator only;
        * the generator's, ``softplus(-D(G(z)))``, through the discriminator called with detached
          weights (``torch.func.functional_call``), so its gradient reaches the generator only.
        """
        real, labels = self.prepare(x, labels)
        fake = self.generator(self.normal((real.shape[0], self.latent_dim)), labels)
        d_real = self.discriminator(real, labels)
        d_fake = self.discriminator(fake.detach(), labels)
        discriminator_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        generator_loss = F.softplus(-functional_call(self.discriminator, frozen, (fake, labels))).mean()
        return discriminator_loss, generator_loss

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective: ``discriminator_loss + generator_loss`` (see :meth:`losses`)."""
        discriminator_loss, generator_loss = self.losses(x, labels)
        return discriminator_loss + generator_loss

    def to_levels(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] -> int64 levels: ``round((y + 1) / 2 * (levels - 1))``."""
        return torch.round((images + 1.0) * ((self.levels - 1) / 2)).clamp(0, self.levels - 1).long()

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images, int64 ``[n, C, H, W]``: ``to_levels(G(temperature * z, y))`` with
        ``z ~ N(0, I)`` drawn from ``generator`` (else torch's global one). ``temperature`` scales the
        latent's standard deviation: below 1 draws nearer the typical image, above 1 more varied
        ones (the GAN's output has no softmax to sharpen). ``labels``: int64 ``[n]`` for a
        class-conditional model. Call in eval mode (:func:`pixelfast.sample` does): BatchNorm then
        uses its running statistics, so an image does not depend on the others drawn with it.
        """
        n, labels, temperature = self.check_generate(n, labels, temperature)
        z = temperature * self.normal((n, self.latent_dim), generator)
        out = torch.empty((n, self.in_channels, *self.image_size), dtype=torch.int64, device=z.device)
        for start in range(0, n, CHUNK):
            rows = slice(start, start + CHUNK)
            out[rows] = self.to_levels(self.generator(z[rows], None if labels is None else labels[rows]))
        return out


def _paper_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv, linear and embedding weights ~ N(0, 0.02), BatchNorm scales
    ~ N(1, 0.02), every shift 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
    else:
        return
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
