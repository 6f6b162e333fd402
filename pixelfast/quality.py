"""Sample quality without the internet: a digit classifier trained on the training split, the
accuracy of class-conditional samples under it, and a Fréchet distance in its feature space.

The Fréchet distance is FID's formula (Heusel et al. 2017) with this small classifier's 128 features
in place of Inception's: the distance between two Gaussians fitted to the features of two sets of
images, ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``. 0 for identical sets;
like FID it is biased upwards for small sets, so compare numbers computed with the same counts.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelfast.experiments import _check_digits, _check_labelled_digits, fit_classifier


class DigitScorer(nn.Module):
    """A small CNN for 28x28 grey digits (levels scaled to [0, 1]): two 3x3 conv + max-pool stages
    (32 and 64 channels), a 128-wide hidden layer (the :meth:`features`), then 10 logits."""

    feature_size = 128

    def __init__(self, levels: int = 256) -> None:
        super().__init__()
        self.levels = levels
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, self.feature_size),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_size, 10)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.to(torch.float32) / (self.levels - 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_digit_scorer(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    levels: int = 256,
    epochs: int = 6,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> DigitScorer:
    """:class:`DigitScorer` trained by Adam on ``images [N, 1, 28, 28]`` (levels) and ``labels [N]``;
    the same arguments give the same weights (on one machine)."""
    labels = _check_labelled_digits(images, labels, levels, "train_digit_scorer")
    return fit_classifier(
        lambda: DigitScorer(levels), images, labels, epochs, batch_size, lr, seed, progress, "train_digit_scorer"
    )


@torch.no_grad()
def digit_features(scorer: DigitScorer, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``scorer``'s features of ``images [N, 1, 28, 28]`` (levels), float64 ``[N, 128]``."""
    _check_digits(images, scorer.levels, "digit_features: images")
    was_training = scorer.training
    scorer.eval()
    try:
        parts = [scorer.features(images[s : s + batch_size]) for s in range(0, images.shape[0], batch_size)]
    finally:
        scorer.train(was_training)
    return torch.cat(parts).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a [N, D]`` and ``b [M, D]``
    (means and unbiased covariances), computed in float64."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() != 2 or b.dim() != 2:
        raise ValueError("frechet_distance: a and b must be 2-D tensors of features [N, D]")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: a has {a.shape[1]} features per row, b {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"frechet_distance: each set needs >= 2 rows, got {a.shape[0]} and {b.shape[0]}")
    a, b = a.double(), b.double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("frechet_distance: the features hold NaN or infinity")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    # tr((S_a^1/2 S_b S_a^1/2)^1/2): the inner matrix is symmetric positive semi-definite, so its
    # square root's trace is the sum of the square roots of its eigenvalues (round-off clipped at 0).
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    inner = root_a @ cov_b @ root_a
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)
