"""pixelfast: fast training and sampling for autoregressive pixel models."""

from pixelfast import data, models, nn, ops
from pixelfast.evaluate import bits_per_dim, log_prob
from pixelfast.sampling import incremental_logits, sample, upscale

__version__ = "0.1.0"

__all__ = [
    "nn",
    "ops",
    "models",
    "data",
    "sample",
    "upscale",
    "incremental_logits",
    "log_prob",
    "bits_per_dim",
    "__version__",
]
