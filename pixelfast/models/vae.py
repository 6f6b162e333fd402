"""``ConvVAE``: a convolutional variational autoencoder ("Auto-Encoding Variational Bayes", Kingma
and Welling 2014) whose output is a categorical over the same levels as the autoregressive models',
so its bound is in the same bits/dim."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_int
from pixelfast.models.latent import CHUNK, LatentConfig, LatentModel


@dataclasses.dataclass(frozen=True)
class ConvVAEConfig(LatentConfig):
    """:class:`ConvVAE`'s options, its constructor's arguments in order."""

    in_channels: int = 1
    levels: int = 256
    hidden_channels: int = 32
    latent_dim: int = 16
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] = (28, 28)  # required: the one size the model encodes and draws

    def __post_init__(self) -> None:
        self._check_latent_options()


class ConvVAE(LatentModel):
    """``q(z | x, y)``, a diagonal Gaussian from strided convolutions; ``p(x | z, y)``, a softmax over
    the levels for every sub-pixel (independent given ``z``) from transposed convolutions;
    ``p(z) = N(0, I)``.

    * ``encoder``: ``Conv2d(C, h, 3, stride=2, padding=1)``, ReLU, ``Conv2d(h, 2h, 3, stride=2,
      padding=1)``, ReLU, on the scaled image: ``2h`` maps of ``latent_grid`` size, flattened
    * ``posterior``: ``Linear`` from those features to the mean and log-variance of ``z``
      (``latent_dim`` each)
    * ``decoder_input``: ``Linear`` from ``z`` to ``2h`` maps of ``latent_grid`` size
    * ``decoder``: ReLU, ``ConvTranspose2d(2h, h, 3, stride=2, padding=1, output_padding=1)``, ReLU,
      the same ``h -> h``, ReLU, ``Conv2d(h, C * levels, 1)``; cropped to ``image_size`` (see
      :mod:`pixelfast.models.latent`) and laid out as logits ``[B, levels, C, H, W]``, like the
      autoregressive models' forward
    * ``label_embedding`` (with ``num_classes``): a learned vector of ``h`` per class, joined to the
      encoder's features and to ``z``, so both ``q`` and ``p`` are class-conditional

    ``h = hidden_channels``. The training loss is the negative evidence lower bound (ELBO) per
    sub-pixel in nats, so the bits/dim that training and :func:`pixelfast.bits_per_dim` report are
    an upper bound on the model's true negative log-likelihood; :meth:`importance_weighted_nats`
    gives a tighter bound.
    """

    name = "ConvVAE"
    Config = ConvVAEConfig

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`ConvVAEConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked ConvVAEConfig

        h, c = self.hidden_channels, self.in_channels
        grid_h, grid_w = self.latent_grid
        features = 2 * h * grid_h * grid_w
        label = 0 if self.num_classes is None else h
        self.label_embedding = None if self.num_classes is None else nn.Embedding(self.num_classes, h)
        self.encoder = nn.Sequential(
            nn.Conv2d(c, h, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, 2 * h, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.posterior = nn.Linear(features + label, 2 * self.latent_dim)
        self.decoder_input = nn.Linear(self.latent_dim + label, features)
        self.decoder = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(2 * h, h, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(h, h, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.Conv2d(h, c * self.levels, 1),
        )

    # --- the two halves ---------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of ``q(z | x, y)``, each ``[B, latent_dim]``, for levels ``x``."""
        scaled, labels = self.prepare(x, labels)
        return self._posterior(scaled, labels)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]`` of ``p(x | z, y)`` for latents ``z [B, latent_dim]``."""
        owner = type(self).__name__
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError(f"{owner}: z must be a float tensor [B, {self.latent_dim}], got {z!r:.80}")
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{owner}: z must be [B, {self.latent_dim}] (latent_dim), got shape {tuple(z.shape)}")
        labels = self._check_labels(labels, z.shape[0])
        param = next(self.parameters())
        return self._decode(z.to(device=param.device, dtype=param.dtype), labels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]`` of the reconstruction of ``x`` from one ``z`` drawn from
        ``q(z | x, y)`` (torch's global generator)."""
        scaled, labels = self.prepare(x, labels)
        mean, log_var = self._posterior(scaled, labels)
        return self._decode(mean + torch.exp(0.5 * log_var) * self.normal(mean.shape), labels)

    # --- bounds on ln p(x | y), per image in nats -------------------------------------------------

    def elbo_nats(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The evidence lower bound of each image, ``[B]`` in nats (``<= ln p(x | y)``, the sign of
        :func:`pixelfast.log_prob`): ``E_q[ln p(x | z, y)] - KL(q(z | x, y) || N(0, I))``, the first
        term from one ``z`` per image (drawn from ``generator``, else torch's global one), the KL in
        closed form."""
        scaled, labels = self.prepare(x, labels)
        target = x.to(scaled.device).long()
        mean, log_var = self._posterior(scaled, labels)
        z = mean + torch.exp(0.5 * log_var) * self.normal(mean.shape, generator)
        reconstruction = -F.cross_entropy(self._decode(z, labels), target, reduction="none").sum(dim=(1, 2, 3))
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(dim=1)
        return reconstruction - kl

    def importance_weighted_nats(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        samples: int = 100,
        *,
        generator: torch.Generator | None = None,
        batch_size: int = 4 * CHUNK,
    ) -> torch.Tensor:
        """The importance-weighted bound of each image ("Importance Weighted Autoencoders", Burda et
        al. 2016), ``[B]`` float64 in nats: ``ln (1/K) sum_k p(x, z_k | y) / q(z_k | x, y)`` over
        ``K = samples`` draws ``z_k ~ q``. It is ``<= ln p(x | y)`` and, in expectation, ``>=`` the
        ELBO, rising to ``ln p(x | y)`` as ``K`` grows; ``K = 1`` is the ELBO in expectation.

        The decoder runs on at most ``batch_size`` (image, sample) pairs at a time, so memory does
        not grow with ``samples``; run it under ``torch.no_grad()`` to score.
        """
        owner = f"{type(self).__name__}.importance_weighted_nats"
        samples = check_int(owner, "samples", samples, 1)
        batch_size = check_int(owner, "batch_size", batch_size, 1)
        scaled, labels = self.prepare(x, labels)
        target = x.to(scaled.device).long()
        mean, log_var = self._posterior(scaled, labels)
        std = torch.exp(0.5 * log_var)
        log_weights = torch.empty(x.shape[0], samples, dtype=torch.float64, device=scaled.device)
        images = max(1, min(x.shape[0], batch_size))
        for first in range(0, x.shape[0], images):
            rows = slice(first, first + images)
            block = target[rows].shape[0]
            per_pass = max(1, batch_size // block)
            for start in range(0, samples, per_pass):
                k = min(per_pass, samples - start)
                eps = self.normal((k, block, self.latent_dim), generator)
                z = mean[rows] + std[rows] * eps  # [k, block, latent_dim]
                repeat = None if labels is None else labels[rows].repeat(k)
                logits = self._decode(z.reshape(k * block, -1), repeat)
                nats = F.cross_entropy(logits, target[rows].repeat(k, 1, 1, 1), reduction="none")
                reconstruction = -nats.sum(dim=(1, 2, 3)).view(k, block)
                # ln p(z) - ln q(z | x): the 2 pi terms cancel, and (z - mean) / std is eps
                prior_ratio = -0.5 * z.square().sum(-1) + 0.5 * (eps.square() + log_var[rows]).sum(-1)
                log_weights[rows, start : start + k] = (reconstruction + prior_ratio).t().double()
        return torch.logsumexp(log_weights, dim=1) - math.log(samples)

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective: the negative ELBO per sub-pixel in nats (the reconstruction's
        cross entropy plus the KL spread over the ``C * H * W`` sub-pixels), mean over the batch."""
        return -self.elbo_nats(x, labels).mean() / (self.in_channels * self.image_size[0] * self.image_size[1])

    # --- drawing ----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        n: int,
        labels: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``n`` images, int64 ``[n, C, H, W]``: ``z ~ N(0, I)``, then every sub-pixel drawn from
        ``softmax(logits / temperature)`` of ``p(x | z, y)`` (``temperature`` sharpens or flattens
        the output distribution, as for the autoregressive models; it does not scale ``z``).

        All random numbers come from ``generator`` (else torch's global one): the ``n`` latents
        first, then one uniform per sub-pixel turned into a level by the inverse CDF, as the
        autoregressive samplers do. ``labels``: int64 ``[n]`` for a class-conditional model. Call
        in eval mode (:func:`pixelfast.sample` does).
        """
        from pixelfast.sampling.categorical import categorical, draw_uniforms

        n, labels, temperature = self.check_generate(n, labels, temperature)
        z = self.normal((n, self.latent_dim), generator)
        uniforms = draw_uniforms((n, self.in_channels, *self.image_size), generator, z.device)
        out = torch.empty(uniforms.shape, dtype=torch.int64, device=z.device)
        for start in range(0, n, CHUNK):
            rows = slice(start, start + CHUNK)
            logits = self._decode(z[rows], None if labels is None else labels[rows])
            draws = categorical(logits.movedim(1, -1).reshape(-1, self.levels), temperature, uniforms[rows].reshape(-1))
            out[rows] = draws.view(out[rows].shape)
        return out

    # --- layers -----------------------------------------------------------------------------------

    def _with_label(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.label_embedding is None:
            return features
        return torch.cat([features, self.label_embedding(labels).to(features.dtype)], dim=1)

    def _posterior(self, scaled: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.posterior(self._with_label(self.encoder(scaled), labels))
        return out[:, : self.latent_dim], out[:, self.latent_dim :]

    def _decode(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        grid_h, grid_w = self.latent_grid
        features = self.decoder_input(self._with_label(z, labels)).view(z.shape[0], -1, grid_h, grid_w)
        out = self.crop(self.decoder(features))
        b, _, height, width = out.shape
        return out.reshape(b, self.in_channels, self.levels, height, width).permute(0, 2, 1, 3, 4)
