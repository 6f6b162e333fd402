"""The shipped digits model, measured: do its class-conditional samples show the asked digit?

A logistic-regression classifier (``pixelfast.experiments.train_logistic_classifier``) is trained on
the 4,500 training digits; the shipped Gated PixelCNN draws 1,000 samples (100 per class, seed 0)
at each temperature (and with classifier-free guidance 1), and the fraction the classifier labels as
asked is the agreement. The same run times the draw (cached engine) against the naive sampler's
per-sub-pixel forward passes.

Run: ``pytest bench/bench_shipped_model.py`` (the agreement prints at the end, in the summary).
"""

from __future__ import annotations

import importlib.resources

import pytest
from benchutil import SMALL

from pixelfast.checkpoint import load_model
from pixelfast.cli import default_checkpoint
from pixelfast.data import mnist_digits
from pixelfast.experiments import class_agreement, train_logistic_classifier

COUNT = 100 if SMALL else 1000
# (temperature, classifier-free guidance): the model itself at three temperatures, and guided
CASES = ((1.0, 0.0), (0.9, 0.0), (0.8, 0.0), (1.0, 1.0))


@pytest.fixture(scope="module")
def setup():
    with importlib.resources.as_file(default_checkpoint()) as path:
        model = load_model(path)
    train, test = mnist_digits("train"), mnist_digits("test")
    return model, train_logistic_classifier(train.images, train.labels), test


@pytest.mark.parametrize("temperature, guidance", CASES)
def test_shipped_model_class_agreement(benchmark, setup, temperature, guidance):
    model, classifier, test = setup
    guided = f", guidance {guidance:g}" if guidance else ""
    benchmark.group = f"shipped model: {COUNT} class-conditional samples at T={temperature}{guided}"
    result = benchmark.pedantic(
        lambda: class_agreement(
            model,
            classifier,
            count=COUNT,
            temperatures=(temperature,),
            seed=0,
            test_images=test.images,
            test_labels=test.labels,
            progress=False,
            guidance=guidance,
        ),
        rounds=1,
        iterations=1,
        warmup_rounds=0,
    )
    benchmark.extra_info["report"] = (
        f"shipped model, T={temperature}{guided}: {result.fractions[temperature]:.3f} of {COUNT} samples "
        f"show the asked digit (classifier {result.classifier_accuracy:.3f} on the held-out digits)"
    )
    assert 0.0 <= result.fractions[temperature] <= 1.0
    assert result.samples[temperature].shape == (COUNT, 1, 28, 28)
