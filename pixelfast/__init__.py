"""pixelfast: fast training and sampling for autoregressive pixel models."""

from pixelfast import nn, ops

__version__ = "0.1.0"

__all__ = ["nn", "ops", "__version__"]
