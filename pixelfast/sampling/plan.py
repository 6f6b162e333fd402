"""Lowering a model into the plan the compiled sampling engine runs (``csrc/sampler/plan.h``).

A plan is a list of buffers (activation maps the engine caches a few rows of) and a program of ops
over them, plus the packed weights those ops read: each conv becomes row *segments* of unmasked
taps (weights packed ``[taps * in, out]`` so one position is one small matrix product) and an
optional colour-masked centre tap. Only the taps a mask lets through are packed.

Row-phase ops run once per image row, before its pixels (the Gated PixelCNN's vertical stack,
which only sees rows above; the Diagonal BiLSTM's right-to-left scan of the row just finished);
pixel-phase ops run per pixel and colour sub-step. The layers are read
as they are; nothing here is imported by a layer or a model.

Each model and layer type the engine runs registers its lowering with :func:`lowers`, naming the
layer types it reads; the layers a model may contain derive from that. Ops are written in the wire
format of :mod:`pixelfast.sampling.plan_format`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from pixelfast.models.base import PixelModel
from pixelfast.models.gated_pixelcnn import GatedPixelCNN
from pixelfast.models.pixelcnn import PixelCNN
from pixelfast.models.pixelrnn import PixelRNN, PixelRNNBlock
from pixelfast.models.super_resolution import SuperResolution
from pixelfast.nn.gated import GatedActivation, GatedBlock, HorizontalConv2d, VerticalConv2d
from pixelfast.nn.head import OutputHead
from pixelfast.nn.lstm import DiagonalBiLSTM, DiagonalLSTM, RowLSTM, _ClassGates
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.nn.residual import ResidualBlock
from pixelfast.sampling.guidance import Guided
from pixelfast.sampling.plan_format import CENTRES, MAX_SEGMENTS, PHASES, encode_op

ROW, PIXEL = PHASES["row"], PHASES["pixel"]
NO_CENTRE, CENTRE_A, CENTRE_B = CENTRES["none"], CENTRES["a"], CENTRES["b"]


class UnsupportedModelError(ValueError):
    """The cached engine cannot run this model; the message names the model or layer."""


@dataclass
class Plan:
    weights: list[torch.Tensor] = field(default_factory=list)
    buffers: list[list[int]] = field(default_factory=list)  # [channels, rows, pad]
    program: list[int] = field(default_factory=list)

    def flat_buffers(self) -> list[int]:
        return [value for buffer in self.buffers for value in buffer]

    def cache_values_per_image(self, width: int) -> int:
        """The engine's cache size: sum over buffers of rows x (W + 2 pad) x channels (an upper bound:
        the engine keeps one position of a buffer that only the pixel being drawn reads)."""
        return sum(rows * (width + 2 * pad) * channels for channels, rows, pad in self.buffers)


class PlanBuilder:
    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.plan = Plan()
        self.dtype = dtype
        self.device = device
        self.condition_logits = False  # whether heads add the call's condition (super-resolution)
        # Guidance (see Guided's lowering): heads scale their logits by `logit_scale` and, with
        # `head_logits` a list, append their logits buffer to it instead of drawing; class biases
        # read row `forced_label` of their table whatever the image's label, when it is set.
        self.logit_scale = 1.0
        self.head_logits: list[int] | None = None
        self.forced_label: int | None = None
        # Where the ops written now run: (period, row residue, column residue); see on_grid.
        self.grid = (1, 0, 0)
        # The buffers some op writes so far, and those that a pixel-phase conv's taps on rows above,
        # moved to the row phase, fill (see conv).
        self._written: set[int] = set()
        self._hoisted_dst: set[int] = set()

    # --- buffers and weights -------------------------------------------------------------------

    def buffer(self, channels: int) -> int:
        self.plan.buffers.append([channels, 1, 0])
        return len(self.plan.buffers) - 1

    def weight(self, tensor: torch.Tensor) -> int:
        self.plan.weights.append(tensor.detach().to(self.device, self.dtype).contiguous())
        return len(self.plan.weights) - 1

    def _reads(self, src: int, dy: int, dx: int, cols: int, row_offset: int = 0) -> None:
        """Grow ``src``'s ring and padding so an op on row ``i + row_offset`` can read row
        ``i + row_offset + dy``, columns ``j + dx .. j + dx + cols - 1``."""
        buffer = self.plan.buffers[src]
        buffer[1] = max(buffer[1], 1 - dy - row_offset)
        buffer[2] = max(buffer[2], -dx, dx + cols - 1)

    @contextlib.contextmanager
    def on_grid(self, period: int, row_residue: int = 0, col_residue: int = 0):
        """The ops written inside run only at positions ``(r, j)`` with ``r % period == row_residue``
        and ``j % period == col_residue``: a map at ``1 / period`` of the image's size, stored at
        full-size coordinates (see PixelCNN++'s lowering)."""
        saved, self.grid = self.grid, (period, row_residue, col_residue)
        try:
            yield
        finally:
            self.grid = saved

    def _op(self, name: str, phase: int, dst: int, src: int, groups: int, segments=(), **fields) -> None:
        """Append op ``name``; the header fields it leaves out take plan_format's defaults."""
        if len(segments) > MAX_SEGMENTS:
            raise UnsupportedModelError(
                f"a kernel with {len(segments)} runs of taps exceeds the engine's {MAX_SEGMENTS}"
            )
        period, row_residue, col_residue = self.grid
        if period != 1:
            fields = dict(period=period, row_residue=row_residue, col_residue=col_residue, **fields)
        writes = {dst, fields["cell"]} if name == "lstm_cell" else {dst}
        if phase == ROW and writes & self._hoisted_dst:  # it would overwrite what the conv filled
            raise AssertionError(f"plan: a row-phase {name} writes buffer {dst}, which a hoisted conv fills")
        self._written |= writes
        self.plan.program.extend(encode_op(name, segments, phase=phase, dst=dst, src=src, groups=groups, **fields))

    # --- ops -----------------------------------------------------------------------------------

    def conv(
        self,
        dst,
        src,
        phase,
        groups,
        taps,
        centre=None,
        mask=NO_CENTRE,
        bias=None,
        accumulate=False,
        row_offset=0,
        reverse=False,
    ):
        """``taps``: ``(dy, dx, weight [out, in, cols])`` runs of one kernel row; ``centre``: ``[out, in]``.
        ``accumulate`` adds into ``dst``; ``row_offset``/``reverse``: see :meth:`lstm_cell`.

        A pixel-phase conv's taps on rows above (and its bias) read only finished rows: they become
        a row-phase conv over the whole row, which the CPU engine runs as a few large matrix
        products instead of one small one per pixel, and the pixel-phase conv adds the rest. Only
        when this conv is the first op to write ``dst`` (so that nothing overwrites the row-phase
        part before the pixel-phase one adds to it) and runs at every position of its own row.
        """
        hoist = (
            phase == PIXEL
            and not accumulate
            and row_offset == 0
            and not reverse
            and self.grid[0] == 1
            and dst not in self._written
            and any(dy < 0 for dy, _, _ in taps)
        )
        segments = []
        self._reads(src, 0, 0, 1, row_offset)
        self._reads(dst, 0, 0, 1, row_offset)
        for dy, dx, w in taps:
            cols = w.shape[2]
            self._reads(src, dy, dx, cols, row_offset)
            packed = w.permute(2, 1, 0).reshape(cols * w.shape[1], w.shape[0])  # [(tap, in), out]
            segments.append((dy, dx, cols, self.weight(packed)))
        centre_index = self.weight(centre.t()) if centre is not None and mask != NO_CENTRE else -1
        bias_index = self.weight(bias) if bias is not None else -1
        if hoist:  # after the row-phase ops written so far, which include what writes src's rows
            above = [segment for segment in segments if segment[0] < 0]
            self._op("conv", ROW, dst, src, 1, above, bias=bias_index)
            self._hoisted_dst.add(dst)
            segments = [segment for segment in segments if segment[0] >= 0]
            bias_index, accumulate = -1, True
            if not segments and centre_index < 0:
                return
        self._op(
            "conv",
            phase,
            dst,
            src,
            groups,
            segments,
            centre=mask if centre_index >= 0 else NO_CENTRE,
            centre_weight=centre_index,
            bias=bias_index,
            accumulate=accumulate,
            row_offset=row_offset,
            reverse=reverse,
        )

    def masked_conv(self, dst, src, layer: MaskedConv2d, phase=PIXEL, row_offset=0, reverse=False, scale=1.0):
        """``layer``'s conv, its weight and bias times ``scale``."""
        w, k = layer.weight * scale, layer.kernel_size
        bias = layer.bias * scale if layer.bias is not None else None
        c = k // 2
        taps = [(r - c, -c, w[:, :, r, :]) for r in range(c)]
        if c > 0:
            taps.append((0, -c, w[:, :, c, :c]))
        mask = CENTRE_A if layer.mask_type == "A" else CENTRE_B
        self.conv(
            dst,
            src,
            phase,
            layer.color_groups,
            taps,
            w[:, :, c, c],
            mask,
            bias,
            row_offset=row_offset,
            reverse=reverse,
        )

    def vertical_conv(self, dst, src, layer: VerticalConv2d):
        w, p = layer.weight, layer.kernel_size // 2
        taps = [(r - p, -p, w[:, :, r, :]) for r in range(w.shape[2])]  # rows i-p .. i-1 (or .. i)
        self.conv(dst, src, ROW, 1, taps, bias=layer.bias)

    def horizontal_conv(self, dst, src, layer: HorizontalConv2d, accumulate=False):
        w, p = layer.weight, layer.kernel_size // 2
        mask = CENTRE_A if layer.mask_type == "A" else CENTRE_B
        taps = [(0, -p, w[:, :, 0, :p])]
        self.conv(dst, src, PIXEL, layer.color_groups, taps, w[:, :, 0, p], mask, layer.bias, accumulate)

    def relu(self, dst, src, groups, phase=PIXEL):
        self._op("relu", phase, dst, src, groups)

    def elu(self, dst, src, groups, phase=PIXEL):
        """``dst = elu(src)`` (alpha 1)."""
        self._op("elu", phase, dst, src, groups)

    def mul(self, dst, src, groups, phase=PIXEL):
        """``dst *= src``."""
        self._op("mul", phase, dst, src, groups)

    def concat_elu(self, dst, src, phase=PIXEL):
        """``dst = elu(cat([src, -src], channels))``: one group (the engine refuses more), so a
        pixel-phase one only in a grey model."""
        self._op("concat_elu", phase, dst, src, 1)

    def cat(self, dst, first, second, phase=PIXEL):
        """``dst = cat([first, second], channels)``: one group, as :meth:`concat_elu`."""
        self._reads(second, 0, 0, 1)
        self._op("cat", phase, dst, first, 1, cell=second)

    def add(self, dst, src, groups, phase=PIXEL, src_dy=0, copy=False):
        """``dst += src`` (``dst = src`` when ``copy``), ``src`` read ``-src_dy`` rows up (zero above
        the image)."""
        self._reads(src, src_dy, 0, 1)
        self._op("add", phase, dst, src, groups, src_dy=src_dy, accumulate=not copy)

    def lstm_cell(self, hidden, gates, cell, groups, prev, phase=PIXEL, row_offset=0, reverse=False):
        """``hidden, cell <- LSTM(gates, cell at (r + prev[0], j + prev[1]))`` at ``(r, j)``.

        Row-phase ops run at row ``r = i + row_offset`` (``-1``: the row just finished), columns
        right to left when ``reverse``: a right-to-left scan of a finished row.
        """
        self._reads(cell, prev[0], min(prev[1], 0), abs(prev[1]) + 1, row_offset)
        self._reads(hidden, 0, 0, 1, row_offset)
        self._op(
            "lstm_cell",
            phase,
            hidden,
            gates,
            groups,
            cell=cell,
            prev_dy=prev[0],
            prev_dx=prev[1],
            row_offset=row_offset,
            reverse=reverse,
        )

    def gate(self, dst, src, groups, phase=PIXEL):
        self._op("gate", phase, dst, src, groups)

    def sigmoid_gate(self, dst, src, groups, phase=PIXEL):
        """``dst = a * sigmoid(b)`` for ``src`` = ``[a, b]`` per group (PixelCNN++'s gated residual)."""
        self._op("sigmoid_gate", phase, dst, src, groups)

    def mixture(self, logits, params, channels):
        """``logits``' group ``g`` = colour ``g``'s level log-probabilities under the discretized
        logistic mixture ``params``, given the pixel's colours drawn before it."""
        self._op("mixture", PIXEL, logits, params, channels)

    def class_bias(self, dst, embedding: nn.Embedding, groups, phase=PIXEL, row_offset=0, reverse=False):
        table = embedding.weight
        if self.forced_label is not None:  # every label reads the forced row
            table = table[self.forced_label].expand_as(table)
        self._op(
            "class_bias",
            phase,
            dst,
            -1,
            groups,
            table=self.weight(table),
            row_offset=row_offset,
            reverse=reverse,
        )

    def position_bias(self, dst, table: torch.Tensor, groups, phase=PIXEL):
        """``dst += table[r, j]`` at position ``(r, j)`` (``table``: ``[H, W, channels]``)."""
        self._op("position_bias", phase, dst, -1, groups, table=self.weight(table))

    def class_position_bias(self, dst, table: torch.Tensor, groups, phase=PIXEL):
        """``dst += table[label, r, j]`` (``table``: ``[labels, H, W, channels]``); with
        ``forced_label`` set, every image reads that label's part (a plain position bias)."""
        if self.forced_label is not None:
            self.position_bias(dst, table[self.forced_label], groups, phase)
        else:
            self._op("class_position_bias", phase, dst, -1, groups, table=self.weight(table))

    def condition(self, dst, groups):
        """``dst += condition`` at each position: the engine call's per-image input map."""
        self._op("condition", PIXEL, dst, -1, groups)

    def head(self, features: int, head: OutputHead, groups: int) -> None:
        """The output head and the draw; with ``condition_logits`` set, the call's condition is added
        to the logits first."""
        hidden_in = self.buffer(self.plan.buffers[features][0])
        self.relu(hidden_in, features, groups)
        hidden = self.buffer(head.hidden.out_channels)
        self.masked_conv(hidden, hidden_in, head.hidden)
        self.relu(hidden, hidden, groups)
        logits = self.buffer(head.out.out_channels)
        self.masked_conv(logits, hidden, head.out, scale=self.logit_scale)
        if self.condition_logits:
            self.condition(logits, groups)
        if self.head_logits is not None:
            self.head_logits.append(logits)
        else:
            self.sample(logits, groups)

    def sample(self, logits: int, groups: int) -> None:
        """Draw (or teacher-force) each colour from its group of ``logits`` into buffer 0, the image."""
        self._op("sample", PIXEL, 0, logits, groups)


# --- the lowering registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class Lowering:
    lower: Callable  # (module, builder, *input buffers) -> its output buffers
    reads: tuple[type, ...]  # the layer types it reads directly inside the module
    check: Callable[[nn.Module], None] | None  # a model's own refusals, instead of the layer walk


LOWERINGS: dict[type, Lowering] = {}  # by the exact type of the model or layer


def lowers(kind: type, *, reads: tuple[type, ...] = (), check: Callable[[nn.Module], None] | None = None):
    """Register the decorated function as the lowering of ``kind``, a model (a PixelModel) or a layer.

    ``reads``: the layer types it reads inside the module; the layers a model may contain are these
    and, through each registered layer among them, what that layer's lowering reads. ``check``: a
    model's own refusals, run instead of that layer walk (a model around another model).
    """

    def register(function: Callable) -> Callable:
        LOWERINGS[kind] = Lowering(function, tuple(reads), check)
        return function

    return register


def lower_module(module: nn.Module, b: PlanBuilder, *buffers):
    """Append the ops of ``module`` by its registered lowering; returns its output buffers."""
    return LOWERINGS[type(module)].lower(module, b, *buffers)


def supported_layers(kind: type) -> frozenset[type]:
    """The layer types a ``kind`` model may contain: what its lowering reads, transitively."""
    layers, todo = set(), list(LOWERINGS[kind].reads)
    while todo:
        layer = todo.pop()
        if layer not in layers:
            layers.add(layer)
            todo.extend(LOWERINGS[layer].reads if layer in LOWERINGS else ())
    return frozenset(layers)


def _is_registered_model(kind: type) -> bool:
    """A model the registry lowers: a PixelModel, or a model around another model (its own check)."""
    return kind in LOWERINGS and (issubclass(kind, PixelModel) or LOWERINGS[kind].check is not None)


def _models_lowered_from_layers() -> list[type]:
    """The models the engine runs as they are (a model with its own check wraps one of these)."""
    return [kind for kind, entry in LOWERINGS.items() if issubclass(kind, PixelModel) and entry.check is None]


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` naming the model or the first layer the engine cannot run.

    A model the registry knows is checked by its layers; any other by lowering a trace of its
    ``forward`` (:mod:`pixelfast.sampling.plan_fx`), which names the first op it cannot run.
    """
    kind = type(model)
    entry = LOWERINGS.get(kind) if _is_registered_model(kind) else None
    if entry is None:
        from pixelfast.sampling.plan_fx import lower_traced

        lower_traced(model, _models_lowered_from_layers())
        return
    if entry.check is not None:
        entry.check(model)
        return
    refuse_other_layers(model, supported_layers(kind), kind.__name__)


def refuse_other_layers(module: nn.Module, allowed: frozenset[type], owner: str, prefix: str = "") -> None:
    """Raise :class:`UnsupportedModelError` naming the first layer inside ``module`` (its name
    after ``prefix``) whose type is not ``allowed``; ``owner`` names the model in the message."""
    for name, layer in module.named_modules():
        if layer is not module and type(layer) not in allowed:
            raise UnsupportedModelError(
                f"the cached engine does not support layer '{prefix}{name}' ({type(layer).__name__}) "
                f"in {owner}; use method='naive'"
            )


def lower(model: nn.Module) -> Plan:
    """The plan of ``model`` (its weights copied and packed), or :class:`UnsupportedModelError`.

    Models the registry knows are lowered by their registered lowering; any other ``nn.Module`` by a
    trace of its ``forward`` (see :func:`pixelfast.sampling.plan_fx.lower_traced` for what it must be).
    """
    kind = type(model)
    if not _is_registered_model(kind):
        from pixelfast.sampling.plan_fx import lower_traced

        return lower_traced(model, _models_lowered_from_layers())
    check_supported(model)
    parameter = next(model.parameters())
    if parameter.dtype not in (torch.float32, torch.float64):
        raise UnsupportedModelError(f"the cached engine runs float32 or float64 models, not {parameter.dtype}")
    builder = PlanBuilder(parameter.dtype, parameter.device)
    builder.buffer(model.in_channels)  # buffer 0: the scaled image
    with torch.no_grad():
        lower_module(model, builder)
    return builder.plan


# --- models and layers, each lowered by its registration ----------------------------------------


@lowers(OutputHead, reads=(MaskedConv2d,))
def _lower_output_head(head: OutputHead, b: PlanBuilder, features: int, g: int) -> None:
    b.head(features, head, g)


@lowers(ResidualBlock, reads=(MaskedConv2d, nn.Embedding))
def _lower_residual_block(block: ResidualBlock, b: PlanBuilder, features: int, g: int) -> int:
    relu_in = b.buffer(block.channels)
    b.relu(relu_in, features, g)
    squeezed = b.buffer(block.hidden_channels)
    b.masked_conv(squeezed, relu_in, block.conv_in)
    b.relu(squeezed, squeezed, g)
    mixed = b.buffer(block.hidden_channels)
    b.masked_conv(mixed, squeezed, block.conv)
    if block.class_bias is not None:
        b.class_bias(mixed, block.class_bias, g)
    b.relu(mixed, mixed, g)
    summed = b.buffer(block.channels)
    b.masked_conv(summed, mixed, block.conv_out)
    b.add(summed, features, g)
    return summed


@lowers(PixelCNN, reads=(MaskedConv2d, ResidualBlock, OutputHead, nn.ModuleList))
def _lower_pixelcnn(model: PixelCNN, b: PlanBuilder) -> None:
    g = model.color_groups
    features = b.buffer(model.input_conv.out_channels)
    b.masked_conv(features, 0, model.input_conv)
    for block in model.blocks:
        features = lower_module(block, b, features, g)
    lower_module(model.head, b, features, g)


@lowers(GatedBlock, reads=(VerticalConv2d, HorizontalConv2d, GatedActivation, MaskedConv2d, nn.Embedding))
def _lower_gated_block(
    block: GatedBlock, b: PlanBuilder, vertical: int, horizontal: int, g: int, vertical_read: bool
) -> tuple[int, int]:
    """Both stacks' outputs; ``vertical_read``: whether a later block reads the vertical one."""
    two_n, n = 2 * block.channels, block.channels
    # Vertical stack, once per row: it sees only rows above, so the whole row is known.
    v_pre = b.buffer(two_n)
    b.vertical_conv(v_pre, vertical, block.v_conv)
    if block.v_class is not None:
        b.class_bias(v_pre, block.v_class, 1, ROW)
    if block.v_row is not None:
        _position_bias(block, "v", b, v_pre, 1, ROW)
    link = b.buffer(two_n)
    b.masked_conv(link, v_pre, block.v_to_h, ROW)
    if vertical_read:
        v_out = b.buffer(n)
        b.gate(v_out, v_pre, block.v_gate.color_groups, ROW)
        vertical = v_out
    # Horizontal stack, per pixel and colour.
    h_pre = b.buffer(two_n)
    b.horizontal_conv(h_pre, horizontal, block.h_conv)
    b.add(h_pre, link, g)
    if block.h_class is not None:
        b.class_bias(h_pre, block.h_class, g)
    if block.h_row is not None:
        _position_bias(block, "h", b, h_pre, g)
    gated = b.buffer(n)
    b.gate(gated, h_pre, g)
    h_out = b.buffer(n)
    b.masked_conv(h_out, gated, block.h_res)
    if not block.first:
        b.add(h_out, horizontal, g)
    return vertical, h_out


def _position_bias(block: GatedBlock, stack: str, b: PlanBuilder, dst: int, groups: int, phase=PIXEL) -> None:
    """A block's position biases for ``stack``: one table, or one per label."""
    table = block.position_table(stack)
    (b.position_bias if table.dim() == 3 else b.class_position_bias)(dst, table, groups, phase)


@lowers(GatedPixelCNN, reads=(GatedBlock, OutputHead, nn.ModuleList))
def _lower_gated(model: GatedPixelCNN, b: PlanBuilder) -> None:
    g = model.color_groups
    vertical = horizontal = 0  # both stacks start from the image
    last = len(model.blocks) - 1
    for index, block in enumerate(model.blocks):
        # the last block's vertical output is never read
        vertical, horizontal = lower_module(block, b, vertical, horizontal, g, index < last)
    lower_module(model.head, b, horizontal, g)


@lowers(RowLSTM, reads=(HorizontalConv2d, _ClassGates, nn.Embedding))
def _lower_row_lstm(lstm: RowLSTM, b: PlanBuilder, features: int, g: int) -> int:
    """Row LSTM, per pixel: gates from the row's left part (masked) and the previous row's states."""
    h = lstm.hidden_channels
    gates, hidden, cell = b.buffer(4 * h), b.buffer(h), b.buffer(h)
    p = lstm.kernel_size // 2
    # The previous row's states first: a conv of rows above alone, it runs in the row phase.
    b.conv(gates, hidden, PIXEL, g, [(-1, -p, lstm.state_to_state)], bias=lstm.bias)
    b.horizontal_conv(gates, features, lstm.input_to_state, accumulate=True)
    if lstm.class_gates.embedding is not None:
        b.class_bias(gates, lstm.class_gates.embedding, g)
    b.lstm_cell(hidden, gates, cell, g, prev=(-1, 0))  # c(i, j) = f c(i - 1, j) + i g
    return hidden


@lowers(DiagonalLSTM, reads=(MaskedConv2d, _ClassGates, nn.Embedding))
def _lower_diagonal_lstm(lstm: DiagonalLSTM, b: PlanBuilder, features: int, g: int, left_to_right: bool) -> int:
    """One Diagonal LSTM direction. Left to right it advances per pixel: the state at (i, j) reads
    (i - 1, j) and (i, j - 1). Right to left (on the mirrored map) the state at (i, j) reads
    (i - 1, j) and (i, j + 1), so row i can only run once it is finished: a row-phase scan of row
    i - 1, columns right to left, at the start of row i, which is where it is used (shifted down)."""
    h = lstm.hidden_channels
    gates, hidden, cell = b.buffer(4 * h), b.buffer(h), b.buffer(h)
    side = -1 if left_to_right else 1
    where = dict(phase=PIXEL) if left_to_right else dict(phase=ROW, row_offset=-1, reverse=True)
    b.masked_conv(gates, features, lstm.input_to_state, **where)
    w = lstm.state_to_state
    taps = [(-1, 0, w[:, :, 0:1]), (0, side, w[:, :, 1:2])]
    b.conv(
        gates,
        hidden,
        where["phase"],
        g,
        taps,
        bias=lstm.bias,
        accumulate=True,
        row_offset=where.get("row_offset", 0),
        reverse=where.get("reverse", False),
    )
    if lstm.class_gates.embedding is not None:
        b.class_bias(gates, lstm.class_gates.embedding, g, **where)
    b.lstm_cell(hidden, gates, cell, g, prev=(0, side), **where)
    return hidden


@lowers(DiagonalBiLSTM, reads=(DiagonalLSTM,))
def _lower_diagonal_bilstm(lstm: DiagonalBiLSTM, b: PlanBuilder, features: int, g: int) -> int:
    left = lower_module(lstm.left_to_right, b, features, g, True)
    right = lower_module(lstm.right_to_left, b, features, g, False)
    states = b.buffer(lstm.hidden_channels)
    b.add(states, left, g, copy=True)
    b.add(states, right, g, src_dy=-1)  # the right-to-left states, shifted down one row
    return states


@lowers(PixelRNNBlock, reads=(RowLSTM, DiagonalBiLSTM, MaskedConv2d))
def _lower_pixelrnn_block(block: PixelRNNBlock, b: PlanBuilder, features: int, g: int) -> int:
    states = lower_module(block.lstm, b, features, g)
    summed = b.buffer(block.proj.out_channels)
    b.masked_conv(summed, states, block.proj)
    b.add(summed, features, g)
    return summed


@lowers(PixelRNN, reads=(MaskedConv2d, PixelRNNBlock, OutputHead, nn.ModuleList))
def _lower_pixelrnn(model: PixelRNN, b: PlanBuilder) -> None:
    g = model.color_groups
    features = b.buffer(model.input_conv.out_channels)
    b.masked_conv(features, 0, model.input_conv)
    for block in model.blocks:
        features = lower_module(block, b, features, g)
    lower_module(model.head, b, features, g)


def _check_super_resolution(model: SuperResolution) -> None:
    if model.prior is None:
        raise UnsupportedModelError(
            f"the cached engine runs super-resolution models with a prior; this one (objective="
            f"{model.objective!r}) has none: its sub-pixels are independent given the low-resolution image"
        )
    if type(model.prior) not in LOWERINGS:  # a prior of the user's own: not lowered from a trace here
        raise UnsupportedModelError(
            f"the cached engine runs super-resolution models whose prior is one of "
            f"{', '.join(k.__name__ for k in _models_lowered_from_layers())}, not {type(model.prior).__name__}"
        )
    check_supported(model.prior)


@lowers(SuperResolution, check=_check_super_resolution)
def _lower_super_resolution(model: SuperResolution, b: PlanBuilder) -> None:
    """The prior's plan, its head adding the engine call's condition, ``A(x)`` (computed once per
    image by the conditioning network, outside the engine), to the prior's logits before each draw."""
    b.condition_logits = True
    lower_module(model.prior, b)


def _check_guided(model: Guided) -> None:
    if type(model.model) not in LOWERINGS or not issubclass(type(model.model), PixelModel):
        raise UnsupportedModelError(
            f"the cached engine guides models it lowers by their layers, not {type(model.model).__name__}"
        )
    check_supported(model.model)


@lowers(Guided, check=_check_guided)
def _lower_guided(model: Guided, b: PlanBuilder) -> None:
    """The network twice over the same image: once with the images' labels and the head's logits
    times ``1 + w``, once with every class bias at the "no class" row and the logits times ``-w``;
    the second logits are added to the first, which are drawn from."""
    b.head_logits = []
    b.logit_scale = 1.0 + model.weight
    lower_module(model.model, b)
    b.logit_scale, b.forced_label = -model.weight, model.no_class
    lower_module(model.model, b)
    given, unconditional = b.head_logits
    b.head_logits, b.logit_scale, b.forced_label = None, 1.0, None
    groups = model.model.color_groups
    b.add(given, unconditional, groups)
    b.sample(given, groups)


# PixelCNN++'s lowering lives in its own module; importing it registers it.
from pixelfast.sampling import plan_pixelcnn_plus_plus  # noqa: E402, F401
