"""Lowering a user's own model: a ``torch.fx`` trace of its ``forward``, op by op, onto plan ops.

:mod:`pixelfast.sampling.plan` lowers the models its registry knows by their registered lowerings;
any other ``nn.Module`` comes here (:func:`lower_traced`). Its ``forward`` is traced symbolically
with every pixelfast layer as a leaf, and the graph is walked in order: each value gets a plan
buffer, registered layers are lowered by their own lowering (``lower_module``), the masked convs,
gates and embeddings by the plan builder, and the torch ops below by the engine's pointwise ops.
Anything else is refused with :class:`~pixelfast.sampling.plan.UnsupportedModelError` naming the
op and its line in ``forward``.

What a model must be (also in the README, "Your own models"):

* an ``nn.Module`` with pixelfast's model attributes ``in_channels`` (1 or 3), ``levels``,
  ``num_classes`` (None: unconditional) and ``image_size``, whose ``forward(x, labels)`` (``labels``
  may be left out of an unconditional model's ``forward``) is traceable by ``torch.fx``: no Python
  control flow on tensor values or shapes (no loop over pixels);
* it scales the levels ``x`` to [-1, 1] as ``PixelModel.prepare`` does: by calling it (a
  ``PixelModel`` subclass) or as ``x * (2 / (levels - 1)) - 1`` in any arrangement of
  ``.float()``/``.to()``, ``*``, ``/``, ``+``, ``-`` by numbers;
* its layers are pixelfast layers (``MaskedConv2d``, ``VerticalConv2d``, ``HorizontalConv2d``,
  ``GatedActivation``, ``ResidualBlock``, ``GatedBlock``, ``RowLSTM``, ``DiagonalBiLSTM``,
  ``PixelRNNBlock``, ``OutputHead``), ``nn.Embedding`` of the labels (added to features as
  ``emb(labels)[:, :, None, None]``, ``.view(B, n, 1, 1)`` or two ``unsqueeze(-1)``), ``nn.ReLU``,
  ``nn.ELU``, ``nn.Dropout``, ``nn.Identity``, in modules of the user's own that hold such layers;
* the ops between them are relu, elu (alpha 1), ``+`` and ``*`` of two feature maps of the same
  channels, ``torch.cat`` along channels, concat_elu (``elu(cat([x, -x], dim=1))``, found as that
  pattern) and dropout (the identity: a plan is the model in eval mode; ``forward`` is traced in eval
  mode);
* it returns the logits ``[B, levels, C, H, W]`` of an ``OutputHead``, or of its own head as
  ``y.view(B, C, levels, H, W).permute(0, 2, 1, 3, 4)`` (or ``.transpose(1, 2)``), ``y`` having
  ``C * levels`` channels, colour by colour, as ``OutputHead`` lays them out.

Phases: a value computed only from rows above the current one (the vertical stack's
``VerticalConv2d``, and ops on such values alone) is computed once per row (row phase); every other
value per pixel and colour sub-step. For an RGB model the per-pixel ops keep the R, G, B channel
blocks (colour groups) of the masked layers: pointwise ops work group by group, and channel
concatenation (``cat``, concat_elu), which would move channels between colour groups, is refused
on per-pixel values (it is allowed on the vertical stack, which has no colour order). The user's
model must itself be causal: the plan computes what ``forward`` computes, position by position.

``forward`` is run once, symbolically, each time a plan is made (side effects in it happen then).
"""

from __future__ import annotations

import inspect
import operator
import os
import re
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from pixelfast.models.base import PixelModel
from pixelfast.nn.gated import GatedActivation, GatedBlock, HorizontalConv2d, VerticalConv2d
from pixelfast.nn.head import OutputHead
from pixelfast.nn.lstm import DiagonalLSTM
from pixelfast.nn.masked_conv import MaskedConv2d
from pixelfast.sampling.plan import (
    LOWERINGS,
    PIXEL,
    ROW,
    Plan,
    PlanBuilder,
    UnsupportedModelError,
    lower_module,
    refuse_other_layers,
    supported_layers,
)

# torch modules the walk lowers itself (besides pixelfast's layers) and containers it traces into
_TORCH_LAYERS = (nn.ReLU, nn.ELU, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Embedding)
_CONTAINERS = (nn.ModuleList, nn.ModuleDict, nn.Sequential)
_DROPOUTS = (nn.Dropout, nn.Dropout2d)


class _Refused(Exception):
    """Raised by an op's lowering: why the engine cannot run this node (reported with its place)."""


def scaled_input(x: torch.Tensor) -> torch.Tensor:
    """The image as ``PixelModel.prepare`` scales it; the trace records a ``prepare`` call as this."""
    raise RuntimeError("scaled_input stands for PixelModel.prepare in a traced graph; it is never called")


# --- the values of the graph ------------------------------------------------------------------


@dataclass
class _Buf:
    """An activation map in a plan buffer, computed in ``phase``; ``fresh``: written by the op that
    made it for this value alone, so that the value's only user may write into it."""

    index: int
    phase: int
    fresh: bool = False


@dataclass
class _Raw:
    """The raw levels ``x`` times ``scale`` plus ``shift`` (the input before it reaches a layer)."""

    scale: float = 1.0
    shift: float = 0.0


@dataclass
class _Labels:
    pass


@dataclass
class _ClassRows:
    """``embedding(labels)``, ``dims`` dimensions so far (2; 4 once broadcastable to a map)."""

    embedding: nn.Embedding
    dims: int = 2


@dataclass
class _Shape:
    """A size or a shape (its value unknown at lowering; only ever passed to view/reshape)."""


@dataclass
class _Negated:
    value: object


@dataclass
class _Cat:
    """``torch.cat(items, dim=1)``, concatenated only when used (elu of ``[x, -x]`` is concat_elu)."""

    items: list
    done: _Buf | None = None


@dataclass
class _Grouped:
    """Logits features viewed as ``[B, C, levels, H, W]``."""

    buf: _Buf


@dataclass
class _Logits:
    """The logits ``[B, levels, C, H, W]`` of ``buf``, or already drawn from (an OutputHead)."""

    buf: _Buf | None


@dataclass
class _Tuple:
    items: tuple


@dataclass
class _Opaque:
    """A value the walk does not lower (a module attribute, an unused argument): refused when used."""

    what: str


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- the walk -----------------------------------------------------------------------------------


@dataclass
class _Walk:
    model: nn.Module
    builder: PlanBuilder
    graph: fx.Graph
    env: dict = field(default_factory=dict)
    sampled: bool = False

    @property
    def groups(self) -> int:
        return int(self.model.in_channels)

    def channels(self, buf: _Buf) -> int:
        return self.builder.plan.buffers[buf.index][0]

    def new(self, channels: int, phase: int) -> _Buf:
        return _Buf(self.builder.buffer(channels), phase, fresh=True)

    def op_groups(self, phase: int, channels: int) -> int:
        """A pointwise op's groups: one in the row phase, one per colour per pixel."""
        if phase == ROW:
            return 1
        if channels % self.groups:
            raise _Refused(
                f"an RGB model's per-pixel features need channels divisible by 3 (its colour groups), got {channels}"
            )
        return self.groups

    # values

    def value(self, arg):
        if isinstance(arg, fx.Node):
            return self.env[arg]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self.value(a) for a in arg)
        return arg

    def buf(self, value) -> _Buf:
        """``value`` as a feature map in a buffer (the scaled image is buffer 0)."""
        if isinstance(value, _Buf):
            return value
        if isinstance(value, _Raw):
            scale = 2.0 / (self.model.levels - 1)
            if abs(value.scale - scale) > 1e-9 * scale or abs(value.shift + 1.0) > 1e-9:
                raise _Refused(
                    f"the layers get the input scaled as {value.scale:g} * x + {value.shift:g}; the engine feeds them "
                    f"x * 2 / (levels - 1) - 1 = {scale:g} * x - 1, as PixelModel.prepare scales it"
                )
            return _Buf(0, PIXEL)
        if isinstance(value, _Cat):
            return self.concatenate(value)
        if isinstance(value, _Negated):
            raise _Refused("negation (-x) is supported only in concat_elu, elu(cat([x, -x], dim=1))")
        if isinstance(value, _Opaque):
            raise _Refused(f"{value.what} is not a feature map the engine computes")
        if isinstance(value, (_Logits, _Grouped)):
            raise _Refused("the logits can only be returned")
        if value is None:
            raise _Refused("got None where a feature map is needed (labels of an unconditional model?)")
        raise _Refused(f"the engine has no feature map for {type(value).__name__.strip('_').lower()} {value!r}")

    def writable(self, arg, value: _Buf, phase: int) -> bool:
        """Whether the op of the current node may write into ``value``'s buffer: ``arg``'s only user,
        a buffer made for it alone, of the op's phase."""
        return (
            isinstance(arg, fx.Node)
            and len(arg.users) == 1
            and value.fresh
            and value.index != 0
            and value.phase == phase
        )

    def alias(self, arg):
        """The value of ``arg`` passed on unchanged (dropout, identity, a dtype cast): writable by its
        user only if ``arg`` has no other user."""
        value = self.value(arg)
        if isinstance(value, _Buf) and not (isinstance(arg, fx.Node) and len(arg.users) == 1):
            return _Buf(value.index, value.phase)
        return value

    def target(self, arg, value: _Buf, phase: int) -> _Buf:
        """The buffer a pointwise op writes: ``value``'s own when it may, else a new one."""
        if self.writable(arg, value, phase):
            return value
        return self.new(self.channels(value), phase)

    # ops

    def unary(self, name: str, arg, in_place: bool = False) -> _Buf:
        if in_place and not (isinstance(arg, fx.Node) and len(arg.users) == 1):
            raise _Refused("an in-place op on a value that is also read elsewhere")
        x = self.buf(self.value(arg))
        out = self.target(arg, x, x.phase)
        getattr(self.builder, name)(out.index, x.index, self.op_groups(x.phase, self.channels(x)), phase=x.phase)
        return out

    def binary(self, name: str, a_arg, b_arg) -> _Buf:
        a, b = self.value(a_arg), self.value(b_arg)
        if name == "add" and isinstance(b, _ClassRows):
            a, b, a_arg, b_arg = b, a, b_arg, a_arg
        if name == "add" and isinstance(a, _ClassRows):
            return self.class_bias(a, b_arg)
        a, b = self.buf(a), self.buf(b)
        if self.channels(a) != self.channels(b):
            raise _Refused(f"operands of {self.channels(a)} and {self.channels(b)} channels (no broadcasting)")
        phase = ROW if a.phase == b.phase == ROW else PIXEL
        groups = self.op_groups(phase, self.channels(a))
        if not self.writable(a_arg, a, phase) and self.writable(b_arg, b, phase):
            a, b = b, a  # both ops commute
        elif not self.writable(a_arg, a, phase):
            out = self.new(self.channels(a), phase)
            self.builder.add(out.index, a.index, groups, phase, copy=True)
            a = out
        getattr(self.builder, name)(a.index, b.index, groups, phase)
        return a

    def class_bias(self, rows: _ClassRows, arg) -> _Buf:
        if rows.dims != 4:
            raise _Refused("a class embedding is added to features as emb(labels)[:, :, None, None]")
        x = self.buf(self.value(arg))
        if self.channels(x) != rows.embedding.embedding_dim:
            raise _Refused(
                f"a class embedding of {rows.embedding.embedding_dim} channels added to {self.channels(x)} channels"
            )
        out = self.target(arg, x, x.phase)
        if out is not x:
            self.builder.add(out.index, x.index, self.op_groups(x.phase, self.channels(x)), x.phase, copy=True)
        self.builder.class_bias(out.index, rows.embedding, self.op_groups(x.phase, self.channels(x)), x.phase)
        return out

    def cat_phase(self, items: list[_Buf]) -> int:
        phase = ROW if all(item.phase == ROW for item in items) else PIXEL
        if phase == PIXEL and self.groups > 1:
            raise _Refused(
                "concatenating an RGB model's per-pixel features along channels moves channels between its "
                "colour groups (R, G, B blocks); the engine concatenates per-pixel features of grey models only "
                "(and the vertical stack's features, which have no colour order)"
            )
        return phase

    def concatenate(self, cat: _Cat) -> _Buf:
        if cat.done is None:
            items = [self.buf(item) for item in cat.items]
            phase = self.cat_phase(items)
            out = items[0]
            for item in items[1:]:
                joined = self.new(self.channels(out) + self.channels(item), phase)
                self.builder.cat(joined.index, out.index, item.index, phase)
                out = joined
            cat.done = _Buf(out.index, out.phase)  # never written in place: the cat may have other users
        return cat.done

    def elu(self, arg, alpha=1.0, in_place: bool = False) -> _Buf:
        if alpha != 1.0:
            raise _Refused(f"elu with alpha={alpha} (the engine's elu has alpha 1)")
        value = self.value(arg)
        if isinstance(value, _Cat) and value.done is None and len(value.items) == 2:
            first, second = value.items
            if isinstance(second, _Negated) and not isinstance(first, (_Negated, _Cat)):
                x, negated = self.buf(first), self.buf(second.value)
                if x.index == negated.index:  # concat_elu: elu(cat([x, -x]))
                    phase = self.cat_phase([x])
                    out = self.new(2 * self.channels(x), phase)
                    self.builder.concat_elu(out.index, x.index, phase)
                    return out
        return self.unary("elu", arg, in_place)


# --- what each node lowers to ------------------------------------------------------------------


def _module_call(walk: _Walk, node: fx.Node, module: nn.Module):
    args = [walk.value(a) for a in node.args]
    b, g = walk.builder, walk.groups
    kind = type(module)
    if isinstance(module, _DROPOUTS) or kind is nn.Identity:
        return walk.alias(node.args[0])
    if kind is nn.ReLU:
        return walk.unary("relu", node.args[0], module.inplace)
    if kind is nn.ELU:
        return walk.elu(node.args[0], module.alpha, module.inplace)
    if kind is nn.Embedding:
        if not isinstance(args[0], _Labels):
            raise _Refused("an embedding is looked up only with forward's labels")
        if module.max_norm is not None:
            raise _Refused("an embedding with max_norm (the engine adds the table's rows as they are)")
        return _ClassRows(module)
    if kind is MaskedConv2d:
        x = walk.buf(args[0])
        if x.phase == PIXEL and module.color_groups != g:
            raise _Refused(f"a per-pixel MaskedConv2d of color_groups={module.color_groups} in a model of {g} colours")
        out = walk.new(module.out_channels, x.phase)
        b.masked_conv(out.index, x.index, module, phase=x.phase)
        return out
    if kind is VerticalConv2d:
        x = walk.buf(args[0])
        if module.include_current_row and x.phase != ROW:
            raise _Refused(
                "a VerticalConv2d with include_current_row=True reads the current row, so its input must come "
                "from the vertical stack (rows above only), not from per-pixel features"
            )
        out = walk.new(module.out_channels, ROW)
        b.vertical_conv(out.index, x.index, module)
        return out
    if kind is HorizontalConv2d:
        if module.color_groups != g:
            raise _Refused(f"a HorizontalConv2d of color_groups={module.color_groups} in a model of {g} colours")
        x = walk.buf(args[0])
        out = walk.new(module.out_channels, PIXEL)
        b.horizontal_conv(out.index, x.index, module)
        return out
    if kind is GatedActivation:
        x = walk.buf(args[0])
        if x.phase == PIXEL and module.color_groups != g:
            raise _Refused(
                f"a per-pixel GatedActivation of color_groups={module.color_groups} in a model of {g} colours"
            )
        out = walk.new(walk.channels(x) // 2, x.phase)
        b.gate(out.index, x.index, module.color_groups if x.phase == ROW else g, x.phase)
        return out
    if kind is OutputHead:
        if module.image_channels != walk.model.in_channels or module.levels != walk.model.levels:
            raise _Refused(
                f"an OutputHead for {module.image_channels} channels of {module.levels} levels in a model of "
                f"{walk.model.in_channels} channels of {walk.model.levels} levels"
            )
        lower_module(module, b, walk.buf(args[0]).index, g)  # the head draws
        walk.sampled = True
        return _Logits(None)
    if getattr(module, "color_groups", g) != g:
        raise _Refused(f"a layer of color_groups={module.color_groups} in a model of {g} colours")
    if kind is GatedBlock:
        return _gated_block(walk, node, module, args)
    if kind is DiagonalLSTM:  # on its own it runs left to right
        return _Buf(lower_module(module, b, walk.buf(args[0]).index, g, True), PIXEL, fresh=True)
    if kind in LOWERINGS and not issubclass(kind, PixelModel):  # features -> features, per pixel
        return _Buf(lower_module(module, b, walk.buf(args[0]).index, g), PIXEL, fresh=True)
    raise _Refused("no lowering for this layer")


def _gated_block(walk: _Walk, node: fx.Node, block: GatedBlock, args) -> _Tuple:
    vertical, horizontal = walk.buf(args[0]), walk.buf(args[1])
    if not block.first and vertical.phase != ROW:
        raise _Refused(
            "a GatedBlock after the first reads its vertical input at the current row, so that input must be a "
            "vertical-stack output (the first item a GatedBlock returns), not per-pixel features"
        )
    vertical_read = any(user.target is operator.getitem and user.args[1] == 0 and user.users for user in node.users)
    v_out, h_out = lower_module(block, walk.builder, vertical.index, horizontal.index, walk.groups, vertical_read)
    v_value = _Buf(v_out, ROW, fresh=True) if vertical_read else _Opaque("the vertical output nothing reads")
    return _Tuple((v_value, _Buf(h_out, PIXEL, fresh=True)))


def _affine(value: _Raw, scale: float = 1.0, shift: float = 0.0) -> _Raw:
    return _Raw(value.scale * scale, value.shift * scale + shift)


def _arithmetic(walk: _Walk, name: str, node: fx.Node, a_arg, b_arg):
    """``a <name> b`` for add, sub, mul, truediv (and their reflected forms, already swapped)."""
    a, b = walk.value(a_arg), walk.value(b_arg)
    if isinstance(a, _Shape) or isinstance(b, _Shape):
        return _Shape()
    if isinstance(a, _Raw) and _number(b) or isinstance(b, _Raw) and _number(a):
        raw, number, first = (a, b, True) if isinstance(a, _Raw) else (b, a, False)
        if name == "add":
            return _affine(raw, 1.0, number)
        if name == "sub":
            return _affine(raw, 1.0, -number) if first else _affine(raw, -1.0, number)
        if name == "mul":
            return _affine(raw, number)
        if name == "truediv" and first:
            return _affine(raw, 1.0 / number)
    if _number(a) or _number(b):
        raise _Refused("arithmetic with a number on feature maps (the engine has no such op)")
    if name in ("add", "mul"):
        return walk.binary(name, a_arg, b_arg)
    raise _Refused(f"{name} of two feature maps (the engine adds and multiplies them only)")


def _index(walk: _Walk, value, index):
    if isinstance(value, _Shape):
        return _Shape()
    if isinstance(value, _Tuple) and isinstance(index, int):
        return value.items[index]
    if isinstance(value, _ClassRows) and value.dims == 2 and isinstance(index, tuple):
        full = slice(None)
        if index in ((full, full, None, None), (Ellipsis, None, None)):
            return _ClassRows(value.embedding, 4)
    raise _Refused(f"indexing {index!r} (the engine indexes tuples, and class embeddings as [:, :, None, None])")


def _view(walk: _Walk, value, shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if isinstance(value, _ClassRows) and value.dims == 2 and len(shape) == 4 and tuple(shape[2:]) == (1, 1):
        return _ClassRows(value.embedding, 4)
    if isinstance(value, _Buf) and len(shape) == 5:
        c, levels = walk.model.in_channels, walk.model.levels
        if tuple(shape[1:3]) == (c, levels) and walk.channels(value) == c * levels:
            return _Grouped(value)
    raise _Refused(
        "a view or reshape other than the logits' y.view(B, C, levels, H, W) of a map of C * levels channels "
        "(or a class embedding's view(B, n, 1, 1))"
    )


def _function_call(walk: _Walk, node: fx.Node):
    target, args, kwargs = node.target, node.args, node.kwargs
    if target is scaled_input:
        return _Buf(0, PIXEL)
    if target is fx._symbolic_trace._assert_is_none:
        return None
    if target is getattr:
        value = walk.value(args[0])
        if args[1] == "shape":
            return _Shape()
        return _Opaque(f"attribute {args[1]!r}") if not isinstance(value, _Raw) else _Opaque("an input attribute")
    if target is operator.getitem:
        return _index(walk, walk.value(args[0]), walk.value(args[1]))
    if target in (F.relu, torch.relu):
        return walk.unary("relu", args[0], _in_place(node, walk.model))
    if target is F.elu:
        return walk.elu(args[0], kwargs.get("alpha", args[1] if len(args) > 1 else 1.0), _in_place(node, walk.model))
    if target in (F.dropout, F.dropout2d):
        return walk.alias(args[0])
    if target in (operator.neg, torch.neg):
        value = walk.value(args[0])
        return _affine(value, -1.0) if isinstance(value, _Raw) else _Negated(value)
    if target in (torch.cat, torch.concat, torch.concatenate):
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if dim not in (1, -3):
            raise _Refused(f"concatenation along dim={dim} (the engine concatenates channels, dim=1)")
        return _Cat(list(walk.value(args[0])))
    names = {
        operator.add: "add",
        operator.iadd: "add",
        torch.add: "add",
        operator.mul: "mul",
        operator.imul: "mul",
        torch.mul: "mul",
        operator.sub: "sub",
        operator.isub: "sub",
        torch.sub: "sub",
        operator.truediv: "truediv",
        torch.div: "truediv",
    }
    if target in names:
        if set(kwargs) - {"alpha"} or kwargs.get("alpha", 1) != 1 or len(args) != 2:
            raise _Refused("only the two-operand form")
        return _arithmetic(walk, names[target], node, args[0], args[1])
    raise _Refused("no lowering for this function")


def _method_call(walk: _Walk, node: fx.Node):
    name, args, kwargs = node.target, node.args, node.kwargs
    value = walk.value(args[0])
    rest = [walk.value(a) for a in args[1:]]
    if name in ("float", "double", "to", "type", "type_as", "contiguous") and isinstance(value, (_Raw, _Buf)):
        return walk.alias(args[0])  # dtype and device: the engine computes in the model's
    if name == "size" or name == "dim":
        return _Shape()
    if name == "relu":
        return walk.unary("relu", args[0])
    if name in ("add", "mul", "sub", "div") and len(args) == 2 and not kwargs:
        return _arithmetic(walk, "truediv" if name == "div" else name, node, args[0], args[1])
    if name == "neg":
        return _affine(value, -1.0) if isinstance(value, _Raw) else _Negated(value)
    if name in ("view", "reshape"):
        return _view(walk, value, rest)
    if name == "unsqueeze" and isinstance(value, _ClassRows) and rest and rest[0] in (-1, value.dims):
        return _ClassRows(value.embedding, value.dims + 1)
    if isinstance(value, _Grouped):
        dims = tuple(rest[0]) if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else tuple(rest)
        if name == "permute" and dims == (0, 2, 1, 3, 4) or name == "transpose" and set(dims) == {1, 2}:
            return _Logits(value.buf)
    raise _Refused("no lowering for this method")


def _output(walk: _Walk, node: fx.Node) -> None:
    value = walk.value(node.args[0])
    if not isinstance(value, _Logits):
        raise _Refused(
            "forward must return the logits of an OutputHead, or of its own head as "
            "y.view(B, C, levels, H, W).permute(0, 2, 1, 3, 4) with y of C * levels channels"
        )
    if value.buf is not None:
        if walk.builder.condition_logits:
            walk.builder.condition(value.buf.index, walk.groups)
        walk.builder.sample(value.buf.index, walk.groups)
        walk.sampled = True


# --- naming a node ---------------------------------------------------------------------------


def _describe(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"layer '{node.target}' ({type(model.get_submodule(node.target)).__name__})"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "get_attr":
        return f"attribute '{node.target}'"
    if node.op == "output":
        return "the returned value"
    target = node.target
    name = getattr(target, "__name__", repr(target))
    for module, prefix in ((torch, "torch"), (F, "torch.nn.functional"), (operator, "operator")):
        if getattr(module, name, None) is target:
            return f"{prefix}.{name}"
    return f"{getattr(target, '__module__', None) or '?'}.{getattr(target, '__qualname__', name)}"


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def _place(filename: str, line, function: str) -> str:
    return f"{function} line {line} ({os.path.basename(filename)})"


def _where(node: fx.Node) -> str:
    frames = _FRAME.findall(node.stack_trace or "")
    return f" at {_place(*frames[0])}" if frames else ""


# --- tracing -------------------------------------------------------------------------------------

_trace_lock = threading.Lock()


def _fx_layers() -> tuple[type, ...]:
    """The layer types a traced model may call: every registered layer, what they read, and the torch
    layers the walk lowers."""
    layers = {kind for kind in LOWERINGS if not issubclass(kind, PixelModel)}
    layers |= {MaskedConv2d, VerticalConv2d, HorizontalConv2d, GatedActivation}
    return tuple(layers) + _TORCH_LAYERS


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple[type, ...], stack_traces: bool) -> None:
        super().__init__()
        self.record_stack_traces = stack_traces  # slow the first time (imports), so only to name a line
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in self.leaves or super().is_leaf_module(m, module_qualified_name)


def _check_layers(model: nn.Module, leaves: tuple[type, ...], runs: list[type]) -> None:
    """Refuse a model with a layer the walk cannot lower before tracing it, and a model with no
    pixelfast layer at all (its ``forward`` is then not run)."""
    name = type(model).__name__
    found = False

    def walk(module: nn.Module, prefix: str) -> None:
        nonlocal found
        for child_name, child in module.named_children():
            path, kind = prefix + child_name, type(child)
            if kind in leaves:
                found = found or kind not in _TORCH_LAYERS
                if kind in LOWERINGS:  # its lowering reads these layers
                    refuse_other_layers(child, supported_layers(kind), name, prefix=path + ".")
                continue
            own = not kind.__module__.startswith(("torch.", "pixelfast."))
            if issubclass(kind, _CONTAINERS) or own and not issubclass(kind, PixelModel):
                walk(child, path + ".")
                continue
            raise UnsupportedModelError(
                f"the cached engine does not support layer '{path}' ({kind.__name__}) in {name}; use method='naive'"
            )

    walk(model, "")
    if not found:
        names = ", ".join(k.__name__ for k in runs)
        raise UnsupportedModelError(
            f"the cached engine does not support {name} (it runs {names}, and models built from pixelfast's "
            f"layers); use method='naive'"
        )


def _trace(model: nn.Module, leaves: tuple[type, ...], stack_traces: bool = False) -> fx.Graph:
    """``model.forward`` traced with pixelfast's layers as leaves, in eval mode, a ``PixelModel``'s
    ``prepare`` recorded as :func:`scaled_input`; dead values removed."""
    name = type(model).__name__
    parameters = list(inspect.signature(type(model).forward).parameters)[1:]
    concrete = {parameters[1]: None} if model.num_classes is None and len(parameters) > 1 else None
    training = [(m, m.training) for m in model.modules() if m.training]
    own_prepare = isinstance(model, PixelModel) and type(model).prepare is PixelModel.prepare

    def prepare(x, labels):
        if isinstance(x, fx.Proxy):
            return x.tracer.create_proxy("call_function", scaled_input, (x,), {}), labels
        return PixelModel.prepare(model, x, labels)  # another thread's real call

    with _trace_lock:
        try:
            for module, _ in training:
                module.training = False
            if own_prepare:
                model.__dict__["prepare"] = prepare
            graph = _Tracer(leaves, stack_traces).trace(model, concrete_args=concrete)
        except Exception as error:  # noqa: BLE001 - any failure of the user's forward under tracing
            import traceback

            frames = traceback.extract_tb(error.__traceback__)
            user = [f for f in frames if f"{os.sep}torch{os.sep}" not in f.filename and f.filename != __file__]
            where = f" at {_place(user[-1].filename, user[-1].lineno, user[-1].name)}" if user else ""
            raise UnsupportedModelError(
                f"the cached engine cannot trace {name}.forward with torch.fx{where} ({type(error).__name__}: "
                f"{error}); forward must have no Python control flow on tensor values or shapes (no loop over "
                f"pixels); use method='naive'"
            ) from error
        finally:
            if own_prepare:
                model.__dict__.pop("prepare", None)
            for module, mode in training:
                module.training = mode
    _remove_dead_code(graph, model)
    return graph


def _in_place(node: fx.Node, model: nn.Module) -> bool:
    """Whether ``node`` writes into its input (Tensor.relu_, inplace=True)."""
    if node.op == "call_method" and str(node.target).endswith("_"):
        return True
    if node.op == "call_module":
        return bool(getattr(model.get_submodule(node.target), "inplace", False))
    return bool(node.kwargs.get("inplace", False))


def _remove_dead_code(graph: fx.Graph, model: nn.Module) -> None:
    """Remove the values nothing reads (an unused shape, a stack's unread output), keeping in-place ops."""
    for node in reversed(graph.nodes):
        if node.op in ("placeholder", "output") or node.users or _in_place(node, model):
            continue
        if node.op == "call_function" and node.target is fx._symbolic_trace._assert_is_none:
            continue
        graph.erase_node(node)


def lower_traced(model: nn.Module, runs: list[type] = ()) -> Plan:
    """The plan of a model the registry does not know, lowered from a trace of its ``forward``;
    :class:`UnsupportedModelError` names the layer or op (and its line in ``forward``) it cannot run.

    What the model must be: see this module's docstring (``runs``: the registry's models, named in
    the message refusing a model with no pixelfast layer).
    """
    name = type(model).__name__
    missing = [a for a in ("in_channels", "levels", "num_classes") if not hasattr(model, a)]
    if missing:
        raise UnsupportedModelError(f"the cached engine cannot run {name}: it lacks the attributes {missing}")
    if model.in_channels not in (1, 3):
        raise UnsupportedModelError(
            f"the cached engine cannot run {name}: it has {model.in_channels} channels, not 1 or 3"
        )
    leaves = _fx_layers()
    _check_layers(model, leaves, list(runs))
    parameter = next(model.parameters())
    if parameter.dtype not in (torch.float32, torch.float64):
        raise UnsupportedModelError(f"the cached engine runs float32 or float64 models, not {parameter.dtype}")
    graph = _trace(model, leaves)
    builder = PlanBuilder(parameter.dtype, parameter.device)
    builder.buffer(model.in_channels)  # buffer 0: the scaled image
    walk = _Walk(model, builder, graph)
    placeholders = 0
    with torch.no_grad():
        for node in graph.nodes:
            try:
                if node.op == "placeholder":
                    placeholders += 1
                    kinds = {1: _Raw(), 2: None if model.num_classes is None else _Labels()}
                    walk.env[node] = kinds.get(placeholders, _Opaque(f"forward's argument {node.target!r}"))
                elif node.op == "call_module":
                    walk.env[node] = _module_call(walk, node, model.get_submodule(node.target))
                elif node.op == "call_function":
                    walk.env[node] = _function_call(walk, node)
                elif node.op == "call_method":
                    walk.env[node] = _method_call(walk, node)
                elif node.op == "get_attr":
                    walk.env[node] = _Opaque(f"the attribute '{node.target}' used in forward")
                elif node.op == "output":
                    _output(walk, node)
            except _Refused as reason:
                traced = {n.name: n for n in _trace(model, leaves, stack_traces=True).nodes}  # for the line
                where = _where(traced[node.name]) if node.name in traced else ""
                raise UnsupportedModelError(
                    f"the cached engine cannot run {name}: {_describe(model, node)}{where} (fx node "
                    f"'{node.name}'): {reason}; use method='naive'"
                ) from None
    if not walk.sampled:
        raise UnsupportedModelError(f"the cached engine cannot run {name}: forward never returns logits")
    return builder.plan
