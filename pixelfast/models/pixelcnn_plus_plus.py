"""``PixelCNNPlusPlus``: "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
Likelihood and Other Modifications" (Salimans, Karpathy, Chen, Kingma 2017)."""

from __future__ import annotations

import dataclasses
import numbers

import torch
from torch import nn

from pixelfast._checks import check_int
from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig
from pixelfast.nn.gated_resnet import GatedResNet
from pixelfast.nn.logistic_mixture import DiscretizedLogisticMixture
from pixelfast.nn.shifted_conv import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
)

RESOLUTIONS = 3  # the U-net's: full, half and quarter size

# The paper's 2.92 bits/dim CIFAR-10 model: unconditional, 3x32x32, 256 levels.
PRESETS: dict[str, dict] = {
    "cifar10": dict(
        in_channels=3,
        levels=256,
        nr_resnet=5,
        nr_filters=160,
        nr_logistic_mix=10,
        dropout=0.5,
        num_classes=None,
        image_size=(32, 32),
    ),
}


@dataclasses.dataclass(frozen=True)
class PixelCNNPlusPlusConfig(ModelConfig):
    """:class:`PixelCNNPlusPlus`'s options, its constructor's arguments in order. The defaults are
    the paper's CIFAR-10 model (see :data:`PRESETS`) but for ``image_size``."""

    in_channels: int = 3
    levels: int = 256
    nr_resnet: int = 5  # gated ResNet blocks per resolution (one more in the down pass's last two)
    nr_filters: int = 160
    nr_logistic_mix: int = 10
    dropout: float = 0.5  # in every gated block, in training
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] | None = None  # the size sampled by default

    def __post_init__(self) -> None:
        self._check_data_options()
        owner = self.owner
        self._set(
            nr_resnet=check_int(owner, "nr_resnet", self.nr_resnet, 1),
            nr_filters=check_int(owner, "nr_filters", self.nr_filters, 1),
            nr_logistic_mix=check_int(owner, "nr_logistic_mix", self.nr_logistic_mix, 1),
        )
        p = self.dropout
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0.0 <= p < 1.0):
            raise ValueError(f"{owner}: dropout must be a number in [0, 1), got {p!r}")
        self._set(dropout=float(p))


class PixelCNNPlusPlus(PixelModel):
    """Two shifted streams through a three-resolution U-net, then a discretized logistic mixture.

    Streams (:mod:`pixelfast.nn.shifted_conv`): ``u`` reads the rows above each pixel, ``ul`` those
    and the pixels to its left, so together they see the whole past, with no blind spot and no mask.

    * ``u_init``: ``DownShiftedConv2d(C + 1, n, 2x3)`` of the scaled image and a channel of ones (so
      the zero padding differs from the image), shifted down; ``ul_init_above`` (1x3, shifted down)
      plus ``ul_init_left`` (``DownRightShiftedConv2d``, 2x1, shifted right) start ``ul``
    * up pass, at each of the 3 resolutions: ``nr_resnet`` pairs of :class:`~pixelfast.nn.GatedResNet`
      (``up_u[r][i]`` on ``u``; ``up_ul[r][i]`` on ``ul``, reading ``u``), then, but at the last,
      ``downsample_u[r]`` / ``downsample_ul[r]``: stride-2 shifted convs (2x3, 2x2). Every map the
      up pass makes is kept for the down pass.
    * down pass, from the smallest resolution: ``nr_resnet`` pairs, then ``nr_resnet + 1`` at the
      two larger ones (``down_u[r][i]`` reads ``u`` and the matching up-pass ``u``; ``down_ul[r][i]``
      reads ``ul``, the new ``u`` and the matching up-pass ``ul``), between them ``upsample_u[r]`` /
      ``upsample_ul[r]``: stride-2 transposed shifted convs (``ConvTranspose2d``, cropped to the
      skip connection's size, so any image size works)
    * ``head``: :class:`~pixelfast.nn.DiscretizedLogisticMixture` on ``elu(ul)``: a 1x1 conv to the
      mixture's ``nr_logistic_mix`` weights, means, log-scales (and RGB coupling coefficients),
      turned into logits ``[B, levels, C, H, W]``: for each sub-pixel the log-probability of every
      level under the mixture, given the pixel's earlier colours taken from ``x``

    ``n = nr_filters``. Each gated block applies ``dropout`` in training and, with ``num_classes``,
    a learned per-class bias. ``F.cross_entropy(model(x), x)`` is the mixture's negative
    log-likelihood per sub-pixel, so the loss, bits/dim, ``log_prob`` and the naive sampler are those
    of every other model. :meth:`cifar10` builds the paper's 2.92 bits/dim CIFAR-10 configuration.
    """

    name = "PixelCNNPlusPlus"
    Config = PixelCNNPlusPlusConfig

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`PixelCNNPlusPlusConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked PixelCNNPlusPlusConfig

        n, c, p = self.nr_filters, self.in_channels, self.dropout

        def blocks(shift: str, aux: int, count: int) -> nn.ModuleList:
            return nn.ModuleList(GatedResNet(n, shift, aux, p, self.num_classes) for _ in range(count))

        def per_resolution(make) -> nn.ModuleList:
            return nn.ModuleList(make(r) for r in range(RESOLUTIONS))

        self.u_init = DownShiftedConv2d(c + 1, n, (2, 3), shift_down=True)
        self.ul_init_above = DownShiftedConv2d(c + 1, n, (1, 3), shift_down=True)
        self.ul_init_left = DownRightShiftedConv2d(c + 1, n, (2, 1), shift_right=True)
        self.up_u = per_resolution(lambda r: blocks("down", 0, self.nr_resnet))
        self.up_ul = per_resolution(lambda r: blocks("down_right", n, self.nr_resnet))
        self.downsample_u = nn.ModuleList(DownShiftedConv2d(n, n, (2, 3), stride=2) for _ in range(RESOLUTIONS - 1))
        self.downsample_ul = nn.ModuleList(
            DownRightShiftedConv2d(n, n, (2, 2), stride=2) for _ in range(RESOLUTIONS - 1)
        )
        depth = [self.nr_resnet] + [self.nr_resnet + 1] * (RESOLUTIONS - 1)  # smallest resolution first
        self.down_u = per_resolution(lambda r: blocks("down", n, depth[r]))
        self.down_ul = per_resolution(lambda r: blocks("down_right", 2 * n, depth[r]))
        self.upsample_u = nn.ModuleList(DownShiftedConvTranspose2d(n, n, (2, 3), 2) for _ in range(RESOLUTIONS - 1))
        self.upsample_ul = nn.ModuleList(
            DownRightShiftedConvTranspose2d(n, n, (2, 2), 2) for _ in range(RESOLUTIONS - 1)
        )
        self.head = DiscretizedLogisticMixture(n, c, self.levels, self.nr_logistic_mix)

    @classmethod
    def cifar10(cls, **overrides) -> PixelCNNPlusPlus:
        """The paper's CIFAR-10 model (2.92 bits/dim): :data:`PRESETS` ``["cifar10"]``, with
        ``overrides`` (e.g. ``num_classes=10`` for the class-conditional one)."""
        return cls(**{**PRESETS["cifar10"], **overrides})

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: levels ``[B, C, H, W]`` (integers, or floats holding whole numbers); ``labels``: ``[B]``."""
        x, labels = self.prepare(x, labels)
        return self.head(self._features(x, labels), x)

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective, the mean cross entropy per sub-pixel of ``forward(x, labels)``,
        computed as the paper does: the mixture at the observed levels only
        (:func:`~pixelfast.nn.logistic_mixture.logistic_mixture_nll`), not at every level."""
        x, labels = self.prepare(x, labels)
        return self.head.nll(self._features(x, labels), x).sum() / x.numel()

    def mixture_params(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mixture's raw parameters ``[B, P, H, W]`` for ``x``, as the head lays them out (see
        :func:`pixelfast.nn.logistic_mixture.logistic_mixture_logits`)."""
        x, labels = self.prepare(x, labels)
        return self.head.params(self._features(x, labels))

    def _features(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The ``ul`` stream's last map, from ``x`` scaled to [-1, 1]."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u = self.u_init(x)
        ul = self.ul_init_above(x) + self.ul_init_left(x)
        us, uls = [u], [ul]  # every map of the up pass, for the down pass
        for r in range(RESOLUTIONS):
            for u_block, ul_block in zip(self.up_u[r], self.up_ul[r]):
                u = u_block(u, labels=labels)
                ul = ul_block(ul, u, labels)
                us.append(u)
                uls.append(ul)
            if r < RESOLUTIONS - 1:
                u, ul = self.downsample_u[r](u), self.downsample_ul[r](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for r in range(RESOLUTIONS):
            for u_block, ul_block in zip(self.down_u[r], self.down_ul[r]):
                u = u_block(u, us.pop(), labels)
                ul = ul_block(ul, torch.cat([u, uls.pop()], dim=1), labels)
            if r < RESOLUTIONS - 1:
                size = tuple(us[-1].shape[2:])
                u, ul = self.upsample_u[r](u, size), self.upsample_ul[r](ul, size)
        assert not us and not uls, "every up-pass map is read once by the down pass"
        return ul
