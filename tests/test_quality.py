"""The sample-quality score: the digit scorer and the Fréchet distance in its feature space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelfast.data import as_tensors, mnist_digits
from pixelfast.experiments import accuracy
from pixelfast.quality import DigitScorer, digit_features, frechet_distance, train_digit_scorer


def frechet_ref(a: np.ndarray, b: np.ndarray) -> float:
    """FID's formula the other way round: tr((S_a S_b)^1/2) as the sum of the square roots of the
    (real, non-negative) eigenvalues of the product S_a S_b."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    eigenvalues = np.linalg.eigvals(cov_a @ cov_b)
    cross = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


@pytest.mark.parametrize("dims, rows_a, rows_b, seed", [(1, 5, 7, 0), (4, 30, 20, 1), (16, 200, 90, 2), (9, 6, 50, 3)])
def test_frechet_distance_matches_the_eigenvalue_form(dims, rows_a, rows_b, seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dims, dims))
    a = rng.normal(size=(rows_a, dims)) @ mix
    b = rng.normal(size=(rows_b, dims)) @ mix.T * 1.5 + 0.7
    got = frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(frechet_ref(a, b), rel=1e-6, abs=1e-8)


def test_frechet_distance_of_independent_coordinates_has_the_closed_form():
    # Diagonal covariances: sum over coordinates of (m_a - m_b)^2 + (s_a - s_b)^2 (s the deviations).
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [2.0, 3.0]])  # means 1, 2; variances 4/3, 4/3
    b = torch.tensor([[3.0, 0.0], [7.0, 0.0], [3.0, 2.0], [7.0, 2.0]])  # means 5, 1; variances 16/3, 4/3
    expected = (1 - 5) ** 2 + (2 - 1) ** 2 + (np.sqrt(4 / 3) - np.sqrt(16 / 3)) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_is_zero_for_one_set_and_grows_with_a_shift():
    features = torch.randn(100, 8, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(features, features) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(features, features + 0.5) == pytest.approx(8 * 0.25, rel=1e-6)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (torch.zeros(5), torch.zeros(5, 1), "2-D tensors"),
        (torch.zeros(5, 2), torch.zeros(5, 3), "2 features per row, b 3"),
        (torch.zeros(1, 2), torch.zeros(5, 2), ">= 2 rows"),
        (torch.full((3, 2), float("nan")), torch.zeros(5, 2), "NaN or infinity"),
    ],
)
def test_frechet_distance_refuses_bad_features(a, b, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(a, b)


@pytest.fixture(scope="module")
def digits():
    return as_tensors(mnist_digits("train")), as_tensors(mnist_digits("test"))


@pytest.fixture(scope="module")
def scorer(digits):
    (images, labels), _ = digits
    return train_digit_scorer(images[:1500], labels[:1500], epochs=3, progress=False)


def test_the_scorer_recognises_held_out_digits(scorer, digits):
    _, (test_images, test_labels) = digits
    assert accuracy(scorer, test_images.long(), test_labels) >= 0.85  # 0.96 when trained on all 4,500
    assert digit_features(scorer, test_images[:7]).shape == (7, DigitScorer.feature_size)


def test_real_digits_are_closer_than_blurred_ones_and_blurred_closer_than_noise(scorer, digits):
    (images, _), (test_images, _) = digits
    held_out = digit_features(scorer, test_images)
    real = frechet_distance(digit_features(scorer, images[:1000]), held_out)
    blurred = F.avg_pool2d(test_images.float(), 3, 1, 1).round().to(torch.uint8)
    blur = frechet_distance(digit_features(scorer, blurred), held_out)
    noise = torch.randint(0, 256, (500, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert real < blur / 4 < frechet_distance(digit_features(scorer, noise), held_out) / 4


def test_the_same_seed_trains_the_same_scorer(digits):
    (images, labels), _ = digits
    first = train_digit_scorer(images[:200], labels[:200], epochs=1, seed=3, progress=False)
    again = train_digit_scorer(images[:200], labels[:200], epochs=1, seed=3, progress=False)
    other = train_digit_scorer(images[:200], labels[:200], epochs=1, seed=4, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(first.parameters(), again.parameters()))
    assert not torch.equal(first.head.weight, other.head.weight)


def test_the_scorer_refuses_what_is_not_digits(scorer):
    with pytest.raises(ValueError, match=r"\[N, 1, 28, 28\]"):
        digit_features(scorer, torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="labels must be"):
        train_digit_scorer(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2, 10]), progress=False)
