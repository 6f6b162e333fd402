"""Drawing images from autoregressive pixel models: :func:`sample` checks arguments and picks a method."""

from pixelfast.sampling.api import METHODS, sample
from pixelfast.sampling.cached import incremental_logits, sample_cached
from pixelfast.sampling.categorical import draw_categorical
from pixelfast.sampling.naive import sample_naive
from pixelfast.sampling.plan import UnsupportedModelError, lower
from pixelfast.sampling.upscale import upscale

__all__ = [
    "METHODS",
    "sample",
    "upscale",
    "sample_naive",
    "sample_cached",
    "incremental_logits",
    "lower",
    "UnsupportedModelError",
    "draw_categorical",
]
