"""Saving level images as a PNG grid (torchvision ``make_grid`` / ``save_image``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pixelfast.data import check_level_values


def to_unit_range(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Levels ``0..levels-1`` -> floats in ``[0, 1]`` (level ``levels-1`` is white)."""
    check_level_values(images, levels, "images")
    return images.detach().cpu().to(torch.float32) / (levels - 1)


def save_grid(images: torch.Tensor, path: str | os.PathLike, levels: int, nrow: int = 8, padding: int = 2) -> Path:
    """Write ``images [N, C, H, W]`` (levels) as one PNG grid, ``nrow`` images per row."""
    from torchvision.utils import make_grid, save_image  # torchvision is slow to import

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"save_grid: images must be [N, 1 or 3, H, W], got {shape}")
    if nrow < 1:
        raise ValueError(f"save_grid: nrow must be >= 1, got {nrow}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"save_grid: folder {str(path.parent)!r} does not exist")
    grid = make_grid(to_unit_range(images, levels), nrow=nrow, padding=padding, pad_value=0.5)
    save_image(grid, path, format="png")
    return path
