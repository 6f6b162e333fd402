"""The discretized logistic mixture of PixelCNN++ (Salimans et al. 2017), as per-sub-pixel logits.

Per pixel the network gives a mixture of ``K`` components, shared by the colours: weights ``pi_k``
and, per colour ``c``, a logistic of mean ``mu_ck`` and log-scale ``log s_ck``; for RGB three
coefficients ``alpha_k, beta_k, gamma_k`` (through tanh) couple the colours within a component:

    mean_R = mu_R,   mean_G = mu_G + alpha * r,   mean_B = mu_B + beta * r + gamma * g

with ``r, g`` the pixel's earlier colours, scaled to [-1, 1] as the network's input is (level ``v``
of ``L`` at ``2 v / (L - 1) - 1``). Level ``v`` is the bin ``[x - 1/(L-1), x + 1/(L-1)]`` around its
value ``x``, the first and last bins running out to -inf and +inf, so each component's bins hold
all of its mass. A bin too thin to compute as a difference of CDFs (under 1e-5) takes the density
at its centre times its width, as in the paper.

:func:`logistic_mixture_logits` turns the parameters into what every pixelfast model returns: logits
``[B, L, C, H, W]``, here the log-probability of each level of sub-pixel ``c`` given the pixel's
earlier colours taken from the image (teacher forcing):

    logits_c[l] = log sum_k pi_k prod_{c' < c} P_c'k(x_c') P_ck(l)  -  log P(x_<c)

(``log_softmax`` over the levels gives the second term), so ``cross_entropy(logits, x)`` is exactly
the mixture's negative log-likelihood per sub-pixel, and drawing R, then G, then B from the logits
draws from the mixture.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pixelfast._checks import check_color_groups, check_int

# Per-image work is C * K * levels * H * W values; the batch is split so one piece stays under this.
CHUNK_VALUES = 1 << 25
MIN_LOG_SCALE = -7.0  # the paper's floor on the log-scales
THIN_BIN = 1e-5  # below this CDF difference a bin's probability is its centre density times its width


def mixture_channels(image_channels: int, num_mix: int) -> int:
    """The parameters' channels: ``K`` weights, ``C K`` means and ``C K`` log-scales, and for RGB
    ``3 K`` coupling coefficients (``10 K`` for RGB, ``3 K`` for grey)."""
    return num_mix * (1 + 2 * image_channels + (3 if image_channels == 3 else 0))


def logistic_mixture_logits(params: torch.Tensor, x: torch.Tensor, levels: int, num_mix: int) -> torch.Tensor:
    """Logits ``[B, levels, C, H, W]`` (log-probabilities) of the mixture ``params [B, P, H, W]``
    given the image ``x [B, C, H, W]`` scaled to [-1, 1] (for the earlier colours of each pixel).

    ``params``' channels: ``K`` weight logits, then the means ``[C, K]``, the log-scales ``[C, K]`` and,
    for RGB, the coefficients ``[3, K]`` (alpha, beta, gamma), each block colour-major. Computed in
    float32 (float64 for float64 inputs), outside autocast.
    """
    _check_params("logistic_mixture_logits", params, x, num_mix)
    dtype = torch.promote_types(params.dtype, torch.float32)
    with torch.autocast(params.device.type, enabled=False):
        params, x = params.to(dtype), x.to(dtype)
        step = max(1, CHUNK_VALUES // max(1, x[:1].numel() * num_mix * levels))
        pieces = [_logits(p, v, levels, num_mix) for p, v in zip(params.split(step), x.split(step))]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _logits(params: torch.Tensor, x: torch.Tensor, levels: int, k: int) -> torch.Tensor:
    log_pi, means, log_scales = _unpack(params, x, k)
    log_p = bin_log_probs(means, log_scales, levels)  # [B, C, K, L, H, W]
    # Each component's log-probability of the pixel's earlier colours, as they are in x.
    observed = log_p.gather(3, _level_index(x, levels)[:, :, None, None].expand(-1, -1, k, 1, -1, -1)).squeeze(3)
    earlier = torch.cat([torch.zeros_like(observed[:, :1]), observed[:, :-1].cumsum(dim=1)], dim=1)
    weights = log_pi[:, None] + earlier  # log pi_k P_k(x_<c): the unnormalised posterior over components
    joint = torch.logsumexp(weights[:, :, :, None] + log_p, dim=2)  # [B, C, L, H, W]
    return F.log_softmax(joint, dim=2).transpose(1, 2)


def logistic_mixture_nll(params: torch.Tensor, x: torch.Tensor, levels: int, num_mix: int) -> torch.Tensor:
    """``-log p(pixel)`` in nats ``[B, H, W]``: the paper's loss, ``-log sum_k pi_k prod_c P_ck(x_c)``,
    evaluated at the observed levels only (``K C`` bins per pixel instead of the logits' ``K C L``).

    Its sum over the pixels is the sum of ``cross_entropy(logistic_mixture_logits(...), x)`` over the
    sub-pixels wherever each component's bins sum to one, which they do but for the thin bins'
    approximation (a change far below float32's resolution of the loss); training uses it for speed.
    Arguments as :func:`logistic_mixture_logits`, ``x`` scaled to [-1, 1].
    """
    _check_params("logistic_mixture_nll", params, x, num_mix)
    dtype = torch.promote_types(params.dtype, torch.float32)
    with torch.autocast(params.device.type, enabled=False):
        params, x = params.to(dtype), x.to(dtype)
        log_pi, means, log_scales = _unpack(params, x, num_mix)
        index = _level_index(x, levels)[:, :, None]  # [B, C, 1, H, W]
        centred = (index.to(means.dtype) * (2.0 / (levels - 1)) - 1.0) - means
        plus, minus, inner = _bin_parts(centred, log_scales, levels)
        first = plus - F.softplus(plus)  # level 0: the bin runs down to -inf
        last = -F.softplus(minus)  # the top level: up to +inf
        log_p = torch.where(index == 0, first, torch.where(index == levels - 1, last, inner))  # [B, C, K, H, W]
        return -torch.logsumexp(log_pi + log_p.sum(dim=1), dim=1)


def _check_params(owner: str, params: torch.Tensor, x: torch.Tensor, num_mix: int) -> None:
    b, channels, height, width = x.shape
    expected = mixture_channels(channels, num_mix)
    if params.dim() != 4 or tuple(params.shape) != (b, expected, height, width):
        raise ValueError(
            f"{owner}: params must be [{b}, {expected}, {height}, {width}] for {channels} "
            f"colour(s) and {num_mix} components, got {tuple(params.shape)}"
        )


def _unpack(params: torch.Tensor, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log pi [B, K, H, W]``, the means (moved by the earlier colours for RGB) and the log-scales
    ``[B, C, K, H, W]``."""
    channels = x.shape[1]
    log_pi = F.log_softmax(params[:, :k], dim=1)
    means = params[:, k : k + channels * k].unflatten(1, (channels, k))
    log_scales = params[:, k + channels * k : k + 2 * channels * k].unflatten(1, (channels, k))
    if channels == 3:
        alpha, beta, gamma = torch.tanh(params[:, k + 2 * channels * k :].unflatten(1, (3, k))).unbind(1)
        r, g = x[:, 0:1], x[:, 1:2]  # broadcast over the components
        means = torch.stack([means[:, 0], means[:, 1] + alpha * r, means[:, 2] + beta * r + gamma * g], dim=1)
    return log_pi, means, log_scales


def _level_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    """The levels of ``x`` scaled to [-1, 1], as int64."""
    return ((x.detach() + 1) * ((levels - 1) / 2)).round().long().clamp(0, levels - 1)


def _bin_parts(centred: torch.Tensor, log_scales: torch.Tensor, levels: int) -> tuple:
    """For bins of ``levels`` ``centred`` on (centre - mean), the log-scales floored at
    :data:`MIN_LOG_SCALE`: the scaled upper and lower edges, and the log-mass of an inner bin (the
    CDF difference, or the centre density times the width where that difference is under
    :data:`THIN_BIN`)."""
    log_scales = log_scales.clamp(min=MIN_LOG_SCALE)
    inv_scale = torch.exp(-log_scales)
    half = 1.0 / (levels - 1)  # half a bin
    plus = inv_scale * (centred + half)
    minus = inv_scale * (centred - half)
    mid = inv_scale * centred
    log_mid_mass = mid - log_scales - 2.0 * F.softplus(mid) - math.log((levels - 1) / 2)  # density x width
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    return plus, minus, torch.where(delta > THIN_BIN, torch.log(delta.clamp(min=1e-12)), log_mid_mass)


def bin_log_probs(means: torch.Tensor, log_scales: torch.Tensor, levels: int) -> torch.Tensor:
    """``log P(level l)`` of each logistic ``[..., K, H, W]``: ``[..., K, levels, H, W]``."""
    centres = torch.arange(levels, device=means.device, dtype=means.dtype) * (2.0 / (levels - 1)) - 1.0
    centred = centres.view(levels, 1, 1) - means.unsqueeze(-3)
    plus, minus, inner = _bin_parts(centred, log_scales.unsqueeze(-3), levels)
    first = plus[..., :1, :, :] - F.softplus(plus[..., :1, :, :])  # log CDF(upper edge of bin 0)
    last = -F.softplus(minus[..., -1:, :, :])  # log (1 - CDF(lower edge of the last bin))
    return torch.cat([first, inner[..., 1:-1, :, :], last], dim=-3)


class DiscretizedLogisticMixture(nn.Module):
    """The output layer: ``params = out(elu(features))``, a 1x1 conv to :func:`mixture_channels`
    maps, then :func:`logistic_mixture_logits`. Being 1x1 it reads only its own position; the
    earlier colours come from the image."""

    def __init__(self, in_channels: int, image_channels: int, levels: int, num_mix: int) -> None:
        super().__init__()
        owner = "DiscretizedLogisticMixture"
        self.image_channels = check_color_groups(owner, image_channels, "image_channels")
        self.levels = check_int(owner, "levels", levels, 2)
        self.num_mix = check_int(owner, "num_mix", num_mix, 1)
        self.out = nn.Conv2d(in_channels, mixture_channels(image_channels, num_mix), 1)

    def params(self, features: torch.Tensor) -> torch.Tensor:
        """The mixture's raw parameters ``[B, P, H, W]`` (laid out as :func:`logistic_mixture_logits` reads)."""
        return self.out(F.elu(features))

    def forward(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]``; ``x``: the image scaled to [-1, 1]."""
        return logistic_mixture_logits(self.params(features), x, self.levels, self.num_mix)

    def nll(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``-log p(pixel)`` in nats ``[B, H, W]`` (:func:`logistic_mixture_nll`); ``x`` scaled to [-1, 1]."""
        return logistic_mixture_nll(self.params(features), x, self.levels, self.num_mix)

    def extra_repr(self) -> str:
        return f"image_channels={self.image_channels}, levels={self.levels}, num_mix={self.num_mix}"
