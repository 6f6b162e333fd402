"""``ModelConfig``: a model's options as one frozen dataclass, the single place they are written.

A model's config class (``GatedPixelCNNConfig`` for ``GatedPixelCNN``, also ``GatedPixelCNN.Config``)
lists every option as a field, in the constructor's positional order and with its default, and
checks them in ``__post_init__``. From it derive the constructor (``GatedPixelCNN(*args, **kwargs)``
builds the config), the attributes (``model.hidden_channels`` reads ``model.options``), the
checkpoint's ``config`` dict (:meth:`ModelConfig.to_dict`) and the keys ``build_model``, ``train``
and the command line accept (:meth:`ModelConfig.names`). ``repr(GatedPixelCNN.Config())`` shows the
options with their defaults.
"""

from __future__ import annotations

import dataclasses

from pixelfast._checks import check_color_groups, check_int

# Field metadata: ``{SAVED: False}`` marks a runtime switch (PixelRNN's ``fused``), accepted like any
# option but no part of the architecture, so not written into checkpoints.
SAVED = "saved"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the models' configs. It has no fields: each model lists all of its own, since the
    positional order differs (``PixelRNN`` takes ``kind`` first). Every model has ``in_channels``
    and ``levels``; the shared checks below read the fields a model has."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names: the keyword arguments the model and ``build_model`` accept."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @property
    def owner(self) -> str:
        """The model's name, which starts every error message (the class name without ``Config``)."""
        return type(self).__name__.removesuffix("Config")

    @property
    def color_groups(self) -> int:
        """RGB autoregresses R -> G -> B inside a pixel through three contiguous channel groups."""
        return 3 if self.in_channels == 3 else 1

    def to_dict(self) -> dict:
        """The JSON-able ``config`` a checkpoint stores: the saved fields, with tuples as lists.
        ``type(model)(**config)`` rebuilds the architecture."""
        values = dataclasses.asdict(self)  # a deep copy: changing it leaves the model alone
        return {
            field.name: list(values[field.name]) if isinstance(values[field.name], tuple) else values[field.name]
            for field in dataclasses.fields(self)
            if field.metadata.get(SAVED, True)
        }

    # --- for ``__post_init__`` ----------------------------------------------------------------

    def _set(self, **values) -> None:
        """Store checked (normalised) values: the dataclass is frozen to everyone else."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _check_data_options(self) -> None:
        """``in_channels`` (1 or 3), ``levels``, ``num_classes`` (where the model has it; None:
        unconditional) and ``image_size`` (None or (H, W), kept as a tuple)."""
        owner = self.owner
        in_channels = check_color_groups(owner, self.in_channels, "in_channels")  # grey or R, G, B
        self._set(in_channels=in_channels, levels=check_int(owner, "levels", self.levels, 2))
        if "num_classes" in self.names() and self.num_classes is not None:
            self._set(num_classes=check_int(owner, "num_classes", self.num_classes, 1))
        if self.image_size is not None:
            if not isinstance(self.image_size, (tuple, list)) or len(self.image_size) != 2:
                raise ValueError(f"{owner}: image_size must be None or (H, W), got {self.image_size!r}")
            self._set(image_size=tuple(check_int(owner, "image_size", s, 1) for s in self.image_size))

    def _check_widths(self, min_layers: int) -> None:
        """``hidden_channels``, ``num_layers`` and ``head_channels`` (None: twice the hidden width);
        RGB models split both widths into three colour groups."""
        owner = self.owner
        hidden = check_int(owner, "hidden_channels", self.hidden_channels, 1)
        self._set(
            hidden_channels=hidden,
            num_layers=check_int(owner, "num_layers", self.num_layers, min_layers),
            head_channels=2 * hidden
            if self.head_channels is None
            else check_int(owner, "head_channels", self.head_channels, 1),
        )
        for name in ("hidden_channels", "head_channels"):
            if getattr(self, name) % self.color_groups:
                raise ValueError(
                    f"{owner}: with 3 input channels the features are split into R, G, B groups, so "
                    f"{name} must be divisible by 3, got {getattr(self, name)}"
                )
