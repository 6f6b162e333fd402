"""Drawing images from autoregressive pixel models: :func:`sample` checks arguments and picks a method."""

from pixelfast.sampling.api import METHODS, sample
from pixelfast.sampling.naive import draw_categorical, sample_naive

__all__ = ["METHODS", "sample", "sample_naive", "draw_categorical"]
