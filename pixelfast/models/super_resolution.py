"""``SuperResolution``: "Pixel Recursive Super Resolution" (Dahl, Norouzi, Shlens 2017).

``p(y_i | x, y_<i) = softmax(A_i(x) + B_i(y_<i))``: ``A`` are logits from a conditioning network
that sees the whole low-resolution image ``x``, ``B`` the logits of an autoregressive prior over the
high-resolution image ``y``. The same class also trains the conditioning network alone, the
baselines the paper argues against (``objective="independent"`` or ``"l2"``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_int
from pixelfast.data import downsample
from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig
from pixelfast.models.gated_pixelcnn import GatedPixelCNN
from pixelfast.models.pixelcnn import PixelCNN
from pixelfast.models.pixelrnn import PixelRNN
from pixelfast.nn.conditioning import ConditioningNetwork

PRIORS: dict[str, type[PixelModel]] = {"GatedPixelCNN": GatedPixelCNN, "PixelCNN": PixelCNN, "PixelRNN": PixelRNN}
OBJECTIVES = ("joint", "independent", "l2")


@dataclasses.dataclass(frozen=True)
class SuperResolutionConfig(ModelConfig):
    """:class:`SuperResolution`'s options, its constructor's arguments in order. Not
    class-conditional: there is no ``num_classes``."""

    in_channels: int
    levels: int
    scale: int = 4
    prior: str | None = "GatedPixelCNN"  # a key of PRIORS; None when objective != "joint"
    # the prior's own options (its Config's fields) but in_channels, levels, num_classes and
    # image_size, which this model sets; kept as given ({} without a prior)
    prior_config: dict | None = None
    conditioning_channels: int = 32
    conditioning_blocks: int = 4
    objective: str = "joint"  # one of OBJECTIVES
    conditioning_loss: float = 1.0
    image_size: tuple[int, int] | None = None  # the high-resolution size trained on

    def __post_init__(self) -> None:
        self._check_data_options()
        owner = self.owner
        self._set(
            scale=check_int(owner, "scale", self.scale, 1),
            conditioning_channels=check_int(owner, "conditioning_channels", self.conditioning_channels, 1),
            conditioning_blocks=check_int(owner, "conditioning_blocks", self.conditioning_blocks, 0),
        )
        if self.objective not in OBJECTIVES:
            raise ValueError(f"{owner}: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        loss = self.conditioning_loss
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss < 0:
            raise ValueError(f"{owner}: conditioning_loss must be a finite number >= 0, got {loss!r}")
        self._set(conditioning_loss=float(loss))
        prior, prior_config = self.prior, self.prior_config
        if self.objective != "joint":
            prior, prior_config = None, None  # the conditioning network alone
        elif prior not in PRIORS:
            raise ValueError(f"{owner}: prior must be one of {sorted(PRIORS)}, got {prior!r}")
        if prior_config is not None and not isinstance(prior_config, dict):
            raise TypeError(f"{owner}: prior_config must be a dict of the prior's arguments, got {prior_config!r}")
        prior_config = dict(prior_config or {})
        fixed = sorted({"in_channels", "levels", "num_classes", "image_size"} & set(prior_config))
        if fixed:
            raise ValueError(f"{owner}: prior_config cannot set {fixed}; the super-resolution model sets them")
        self._set(prior=prior, prior_config=prior_config)


class SuperResolution(PixelModel):
    """A conditioning network on the low-resolution image plus an autoregressive prior.

    * ``conditioning``: :class:`~pixelfast.nn.conditioning.ConditioningNetwork` (a ResNet of
      ``conditioning_blocks`` blocks, ``conditioning_channels`` wide, then one stride-2 kernel-3
      ``ConvTranspose2d`` per doubling up to ``scale``), ending in ``A [B, levels, C, H, W]``.
    * ``prior``: ``PRIORS[prior](in_channels, levels, **prior_config)``, unconditional, any size.

    ``objective``:

    * ``"joint"`` (the paper's model): ``forward(y, x) = A(x) + B(y)``; the loss is the cross
      entropy of the sum plus ``conditioning_loss`` times the cross entropy of ``A`` alone (the
      paper's 1.0 makes the conditioning network learn on its own; 0.0 trains the sum only).
    * ``"independent"``: no prior; ``forward(y, x) = A(x)``, a softmax per sub-pixel, trained by
      the cross entropy of ``A``.
    * ``"l2"``: no prior; the network outputs one value per sub-pixel, the predicted level ``m``
      (on the [-1, 1] input scale), trained by the mean squared error to ``y``. Its logits are a
      discretised Gaussian around ``m`` with one learned width ``sigma`` (in levels),
      ``-(k - m)^2 / (2 sigma^2)``: ``sigma`` alone is fitted by their cross entropy (``m``
      detached), so the mean is pure L2 regression and bits/dim still mean something. Its point
      prediction is the argmax of the logits, the level nearest ``m``.

    ``x`` is ``[B, C, h, w]``, ``y`` is ``[B, C, scale * h, scale * w]``: any size works. Training
    and evaluation take ``x = pixelfast.data.downsample(y, scale)`` (see :meth:`inputs`).
    ``image_size`` records the high-resolution size trained on. The model is not class-conditional.
    """

    name = "SuperResolution"
    Config = SuperResolutionConfig
    num_classes = None  # never class-conditional

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`SuperResolutionConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked SuperResolutionConfig

        # `self.prior` is the prior model; the option of that name (`prior_name`) names it
        prior = self.options.prior
        self.prior = (
            None
            if prior is None
            else PRIORS[prior](in_channels=self.in_channels, levels=self.levels, **self.prior_config)
        )

        out_channels = self.in_channels if self.objective == "l2" else self.in_channels * self.levels
        self.conditioning = ConditioningNetwork(
            self.in_channels, out_channels, self.scale, self.conditioning_channels, self.conditioning_blocks
        )
        # l2: the width (in levels, as a log) of the discretised Gaussian read off the predicted level,
        # starting at a quarter of the range
        self.log_sigma = nn.Parameter(torch.tensor(math.log(self.levels / 4))) if self.objective == "l2" else None

    @property
    def prior_name(self) -> str | None:
        """The prior's name (the ``prior`` option; ``model.prior`` is the prior model itself)."""
        return self.options.prior

    # --- the two halves -------------------------------------------------------------------------

    def conditioning_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``A(x)``: logits ``[B, levels, C, scale * h, scale * w]`` for the low-resolution ``x``."""
        self._check_levels(x)
        scaled, _ = self.prepare(x, None)
        out = self.conditioning(scaled)
        if self.objective == "l2":
            return self._gaussian_logits(self._predicted_level(out))
        b, _, height, width = out.shape
        return out.view(b, self.in_channels, self.levels, height, width).permute(0, 2, 1, 3, 4)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]`` of ``y`` (levels ``[B, C, H, W]``) given ``x`` (levels
        ``[B, C, H / scale, W / scale]``): ``A(x) + B(y)``, or ``A(x)`` without a prior."""
        self.check_pair(y, x)
        logits = self.conditioning_logits(x)
        return logits if self.prior is None else logits + self.prior(y)

    def inputs(self, images: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """What training and evaluation pass to ``forward`` for high-resolution ``images``:
        ``(images, downsample(images, scale))``."""
        self._check_labels(labels, images.shape[0])
        return images, downsample(images, self.scale)

    def loss(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The training objective (mean over sub-pixels), see the class docstring."""
        self.check_pair(y, x)
        target = y.to(next(self.parameters()).device).long()
        if self.objective == "l2":
            scaled, _ = self.prepare(x, None)
            mean = self._predicted_level(self.conditioning(scaled))
            half = (self.levels - 1) / 2
            regression = F.mse_loss(mean / half - 1.0, target / half - 1.0)  # on the [-1, 1] scale
            return regression + F.cross_entropy(self._gaussian_logits(mean.detach()), target)
        conditioning = self.conditioning_logits(x)
        if self.prior is None:
            return F.cross_entropy(conditioning, target)
        loss = F.cross_entropy(conditioning + self.prior(y), target)
        if self.conditioning_loss:
            loss = loss + self.conditioning_loss * F.cross_entropy(conditioning, target)
        return loss

    # --- checks and the l2 head -----------------------------------------------------------------

    def check_pair(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """Raise a clear error unless ``y`` and ``x`` are levels of this model with ``y`` exactly
        ``scale`` times the size of ``x``."""
        owner = type(self).__name__
        self._check_levels(y)
        self._check_levels(x)
        expected = (x.shape[0], self.in_channels, self.scale * x.shape[2], self.scale * x.shape[3])
        if tuple(y.shape) != expected:
            raise ValueError(
                f"{owner}: with scale={self.scale}, a low-resolution x of shape {tuple(x.shape)} needs a "
                f"high-resolution y of shape {expected}, got {tuple(y.shape)}"
            )

    def _predicted_level(self, out: torch.Tensor) -> torch.Tensor:
        return (out + 1.0) * ((self.levels - 1) / 2)  # the [-1, 1] scale back to levels

    def _gaussian_logits(self, mean: torch.Tensor) -> torch.Tensor:
        """``-(k - mean)^2 / (2 sigma^2)`` for every level ``k``: ``[B, levels, C, H, W]``."""
        levels = torch.arange(self.levels, device=mean.device, dtype=mean.dtype).view(1, -1, 1, 1, 1)
        return -((levels - mean.unsqueeze(1)) ** 2) / (2 * torch.exp(2 * self.log_sigma))
