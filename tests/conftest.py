"""Shared test fixtures: the device every op, layer, model and engine test runs on.

``device`` is parametrized over ``cpu`` and ``cuda``; the CUDA case runs when a GPU is present and
pixelfast was built with CUDA, and is skipped (with the reason) otherwise. So ``python -m pytest`` on
a GPU machine checks the CUDA path too, and ``python -m pytest -k cuda`` checks only that.

Every test runs in full fp32 (TF32 off for cuBLAS and cuDNN, as :func:`pixelfast.sample` does), so
the reference convolutions on a GPU compute what the compiled ops compute; ``tolerance`` gives the
comparisons' tolerances per dtype and device (``devices.py``).
"""

from __future__ import annotations

import os

import hypothesis
import pytest
import torch
from devices import DEVICES

from pixelfast.sampling.precision import full_fp32

# HYPOTHESIS_PROFILE=ci (set by .ci/run): the same examples on every run, so that CI's verdict on a
# commit does not depend on what a random search drew that time; locally the search goes on exploring.
hypothesis.settings.register_profile("ci", derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _full_fp32():
    with full_fp32():
        yield
