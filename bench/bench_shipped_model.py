"""The shipped digits model, measured: do its class-conditional samples show the asked digit?

A logistic-regression classifier (``pixelfast.experiments.train_logistic_classifier``) is trained on
the 4,500 training digits; the shipped Gated PixelCNN draws 1,000 samples (100 per class, seed 0)
at each temperature, and the fraction the classifier labels as asked is the agreement. The same
run times the draw (cached engine) against the naive sampler's per-sub-pixel forward passes.

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
TEMPERATURES = (1.0, 0.9, 0.8)


@pytest.fixture(scope="module")
def setup():
    with importlib.resources.as_file(default_checkpoint()) as path:
        model = load_model(path)
    train, test = mnist_digits("train"), mnist_digits("test")
    return model, train_logistic_classifier(train.images, train.labels), test


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_shipped_model_class_agreement(benchmark, setup, temperature):
    model, classifier, test = setup
    benchmark.group = f"shipped model: {COUNT} class-conditional samples at T={temperature}"
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
        ),
        rounds=1,
        iterations=1,
        warmup_rounds=0,
    )
    benchmark.extra_info["report"] = (
        f"shipped model, T={temperature}: {result.fractions[temperature]:.3f} of {COUNT} samples show the asked "
        f"digit (classifier {result.classifier_accuracy:.3f} on the held-out digits)"
    )
    assert 0.0 <= result.fractions[temperature] <= 1.0
    assert result.samples[temperature].shape == (COUNT, 1, 28, 28)
