"""``GatedPixelCNN``: "Conditional Image Generation with PixelCNN Decoders" (van den Oord et al. 2016)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from pixelfast._checks import check_odd
from pixelfast.models.base import PixelModel
from pixelfast.models.config import ModelConfig
from pixelfast.nn.gated import GatedBlock
from pixelfast.nn.head import OutputHead


@dataclasses.dataclass(frozen=True)
class GatedPixelCNNConfig(ModelConfig):
    """:class:`GatedPixelCNN`'s options, its constructor's arguments in order."""

    in_channels: int = 1
    levels: int = 256
    hidden_channels: int = 48
    num_layers: int = 10
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_channels: int | None = None  # None: 2 * hidden_channels
    num_classes: int | None = None  # None: unconditional
    image_size: tuple[int, int] | None = None  # the size sampled by default
    class_dropout: float = 0.0  # > 0: trains a "no class" label too, for classifier-free guidance
    position_bias: bool = False  # learned per-row and per-column biases in every block (needs image_size)
    class_position_bias: bool = False  # those biases per class too (needs position_bias and num_classes)

    def __post_init__(self) -> None:
        self._check_data_options()
        self._check_widths(min_layers=1)
        self._set(
            kernel_size=check_odd(self.owner, "kernel_size", self.kernel_size, 3),
            first_kernel_size=check_odd(self.owner, "first_kernel_size", self.first_kernel_size, 3),
        )
        rate = self.class_dropout
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"{self.owner}: class_dropout must be a number in [0, 1), got {rate!r}")
        if rate and self.num_classes is None:
            raise ValueError(f"{self.owner}: class_dropout > 0 needs a class-conditional model (num_classes)")
        self._set(class_dropout=float(rate))
        if not isinstance(self.position_bias, bool):
            raise ValueError(f"{self.owner}: position_bias must be True or False, got {self.position_bias!r}")
        if self.position_bias and self.image_size is None:
            raise ValueError(f"{self.owner}: position_bias needs image_size (a bias per row and column of that size)")
        if not isinstance(self.class_position_bias, bool):
            raise ValueError(
                f"{self.owner}: class_position_bias must be True or False, got {self.class_position_bias!r}"
            )
        if self.class_position_bias and not (self.position_bias and self.num_classes is not None):
            raise ValueError(
                f"{self.owner}: class_position_bias needs position_bias=True and a class-conditional model "
                "(num_classes): it gives each class its own biases per row and column"
            )


class GatedPixelCNN(PixelModel):
    """Vertical + horizontal gated stacks with no blind spot, then the output head.

    * ``blocks[0]``: ``GatedBlock(in_channels, n, first_kernel_size, first=True)``: reads the scaled
      image with both stacks (vertical: rows above only; horizontal: mask A at the current pixel)
    * ``blocks[l]``, ``l = 1 .. num_layers - 1``: ``GatedBlock(n, n, kernel_size)`` (vertical reads
      the previous vertical features, current row included; horizontal mask B; residual)
    * ``head``: ``OutputHead(n, head_channels, in_channels, levels)`` on the last horizontal features

    ``n = hidden_channels``; for RGB the horizontal path is colour grouped (``n`` and
    ``head_channels`` divisible by 3). ``head_channels=None`` means ``2n``. With ``num_classes`` set,
    every block adds learned per-class biases to both stacks' gate inputs. With ``class_dropout > 0``
    too, there is one more label, ``no_class`` (``= num_classes``): training replaces each label by
    it with that probability, so the model also learns ``p(x)``, which classifier-free guidance
    (``pixelfast.sample(..., guidance=w)``) contrasts with ``p(x | label)``. With
    ``position_bias``, every block also adds a learned bias per image row and one per column to both
    stacks' gate inputs: beyond its receptive field's reach of the edges nothing else tells a layer
    where in the image it is (how far down a stroke should go, where a digit is centred); such a
    model takes only images of its ``image_size``. With ``class_position_bias`` too, each label
    (``no_class`` included) has its own such biases besides the shared ones: where a 6's loop or a
    1's foot should be differs by digit, and the receptive field alone rarely sees both ends.

    Receptive field of position ``(i, j)`` (``p1 = first_kernel_size // 2``, ``p = kernel_size // 2``,
    ``R = p1 + (num_layers - 1) * p``): rows ``i - R .. i - 1`` at columns ``j - R .. j + R``, and row
    ``i`` at columns ``j - R .. j - 1``, plus the earlier colours of ``(i, j)`` itself.
    """

    name = "GatedPixelCNN"
    Config = GatedPixelCNNConfig

    def __init__(self, *args, **kwargs) -> None:
        """The arguments are the fields of :class:`GatedPixelCNNConfig`, positional in that order."""
        super().__init__(*args, **kwargs)  # self.options: the checked GatedPixelCNNConfig

        n, g = self.hidden_channels, self.color_groups
        classes = None if self.num_classes is None else self.num_classes + (self.no_class is not None)
        size = self.image_size if self.position_bias else None
        per_class = self.class_position_bias
        self.blocks = nn.ModuleList(
            [
                GatedBlock(
                    self.in_channels, n, self.first_kernel_size, g, True, classes, size, class_position_bias=per_class
                )
            ]
            + [
                GatedBlock(n, n, self.kernel_size, g, False, classes, size, class_position_bias=per_class)
                for _ in range(self.num_layers - 1)
            ]
        )
        self.head = OutputHead(n, self.head_channels, self.in_channels, self.levels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: levels ``[B, C, H, W]`` (integers, or floats holding whole numbers); ``labels``: ``[B]``."""
        x, labels = self.prepare(x, labels)
        v = h = x
        for block in self.blocks:
            v, h = block(v, h, labels)
        return self.head(h)

    def check_input(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """:meth:`PixelModel.check_input`; with ``position_bias``, also the image size."""
        labels = super().check_input(x, labels)
        if self.position_bias and tuple(x.shape[2:]) != tuple(self.image_size):
            (h, w), (height, width) = self.image_size, x.shape[2:]
            raise ValueError(
                f"GatedPixelCNN: this model has biases per row and column of {h}x{w} images; got an "
                f"input of {height}x{width} (position_bias: its image_size only)"
            )
        return labels

    @property
    def no_class(self) -> int | None:
        """The "no class" label (``num_classes``) of a model trained with ``class_dropout``, else None."""
        return self.num_classes if self.class_dropout else None

    def loss(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`PixelModel.loss`; in training mode with ``class_dropout``, each label first becomes
        ``no_class`` with that probability (drawn with torch's global generator)."""
        if self.training and self.class_dropout and isinstance(labels, torch.Tensor):
            dropped = torch.rand(labels.shape, device=labels.device) < self.class_dropout
            labels = labels.masked_fill(dropped, self.no_class)
        return super().loss(x, labels)

    def fit_source_state(self, state: dict) -> dict:
        """For ``train(init_from=...)``: a source without the ``no_class`` label gets one, its biases
        (class biases, and class position biases) the mean of the classes' (a start for the
        unconditional model)."""
        own = self.state_dict()
        fitted = dict(state)
        per_class = ("v_class.weight", "h_class.weight", "_class_row", "_class_col")
        for key, value in state.items():
            if key.endswith(per_class) and key in own:
                if value.dim() == own[key].dim() and value.shape[0] + 1 == own[key].shape[0]:
                    fitted[key] = torch.cat([value, value.mean(0, keepdim=True)])
        return fitted

    def grown_from(self, new_keys: list[str]) -> None:
        """Called by ``train(init_from=...)`` after copying a shallower model's weights: a block
        with no copied weights gets a zero residual output (``h_res``), so it passes the horizontal
        stack through unchanged and the deeper model starts out equal to the source."""
        new = set(new_keys)
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                own = {f"blocks.{i}.{key}" for key in block.state_dict()}
                if not block.first and own <= new:
                    block.h_res.weight.zero_()
                    if block.h_res.bias is not None:
                        block.h_res.bias.zero_()
