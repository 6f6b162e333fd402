"""Users' own models (issue 15, item 3): a model that is not in the package, built from pixelfast's
layers and the usual torch ops, runs on the cached engine through a torch.fx trace of its forward
(pixelfast/sampling/plan_fx.py); the models the registry knows keep their plans byte for byte."""

from __future__ import annotations

import hashlib

import pytest
import torch
from test_sampling_cached import jitter, random_image, random_labels
from user_models import ConcatEluGated, EluHeadPixelCNN

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelRNN
from pixelfast.sampling.plan import UnsupportedModelError, lower
from pixelfast.sampling.plan_format import OP_CODES, OP_FIELDS

# --- the registry's models: their plans are what they were before the traced lowering ---------


def deterministic(model):
    """Weights that do not depend on torch's random number generator, in float64."""
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.copy_((torch.arange(p.numel(), dtype=torch.float64).reshape(p.shape) * 0.37 + k) % 1.3 - 0.6)
    return model.double()


# Op fields added after the digests below were recorded: at their defaults, they are left out.
ADDED_FIELDS = ("period", "row_residue", "col_residue")


def program_as_recorded(program: list[int]) -> list[int]:
    """``program`` without :data:`ADDED_FIELDS`, which must hold their defaults."""
    fields = list(OP_FIELDS)
    drop = {fields.index(name) + 1 for name in ADDED_FIELDS}  # + 1: a record starts with its length
    out, at = [], 0
    while at < len(program):
        record = program[at : at + program[at]]
        assert [record[i] for i in sorted(drop)] == [OP_FIELDS[name] for name in ADDED_FIELDS]
        kept = [value for i, value in enumerate(record) if i not in drop]
        out += [len(kept), *kept[1:]]
        at += program[at]
    return out


def plan_digest(plan) -> str:
    digest = hashlib.sha256()
    digest.update(repr((plan.buffers, program_as_recorded(plan.program))).encode())
    for w in plan.weights:
        digest.update(repr((w.dtype, tuple(w.shape))).encode())
        digest.update(w.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# Recorded from the plans lower() wrote before models outside the registry could be lowered; the
# PixelCNN and PixelRNN ones again when pixel-phase convs' taps on rows above moved to the row phase.
REGISTRY_PLANS = {
    "pixelcnn-grey": (lambda: PixelCNN(1, 4, hidden_channels=3, num_layers=2, num_classes=3), "0ec9c386fee11107"),
    "pixelcnn-rgb": (lambda: PixelCNN(3, 4, hidden_channels=3, num_layers=1), "56a698ad4352f2ca"),
    "gated-grey": (lambda: GatedPixelCNN(1, 4, hidden_channels=3, num_layers=3, num_classes=3), "dc6bfed460790292"),
    "gated-rgb": (lambda: GatedPixelCNN(3, 4, hidden_channels=3, num_layers=2), "16add818f00dfb3c"),
    "row-rgb": (lambda: PixelRNN("row", 3, 4, hidden_channels=3, num_layers=2, num_classes=2), "4f3f2308df4a0399"),
    "diagonal-grey": (
        lambda: PixelRNN("diagonal", 1, 4, hidden_channels=3, num_layers=2, num_classes=2),
        "6fc8514dfa43cf6b",
    ),
}


@pytest.mark.parametrize("kind", list(REGISTRY_PLANS))
def test_the_registry_s_models_keep_their_plans_byte_for_byte(kind):
    make, digest = REGISTRY_PLANS[kind]
    assert plan_digest(lower(deterministic(make()))) == digest


# --- two models that are not in the package ----------------------------------------------------

MODELS = {
    "elu-head-grey": lambda: EluHeadPixelCNN(1, 5, hidden_channels=4, num_layers=2, num_classes=3),
    "elu-head-rgb": lambda: EluHeadPixelCNN(3, 5, hidden_channels=3, num_layers=1),
    "concat-elu-gated-grey": lambda: ConcatEluGated(1, 6, n=6, num_layers=3, num_classes=3),
    "concat-elu-vertical-rgb": lambda: ConcatEluGated(3, 6, n=6, num_layers=2, vertical_concat_elu_only=True),
}


def op_names(plan) -> list[str]:
    names, program, at = {code: name for name, code in OP_CODES.items()}, plan.program, 0
    found = []
    while at < len(program):
        found.append(names[program[at + 1]])
        at += program[at]
    return found


def test_the_user_models_use_the_new_ops():
    used = {name for make in MODELS.values() for name in op_names(lower(make()))}
    assert {"elu", "mul", "concat_elu", "cat"} <= used
    assert "cat" in op_names(lower(MODELS["concat-elu-gated-grey"]()))


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_incremental_logits_equal_the_forward_pass(kind, dtype):
    model = jitter(MODELS[kind](), scale=0.3, seed=3).to(dtype)
    x = random_image(model, 2, 5, 6, seed=4)
    labels = random_labels(model, 2, seed=4)
    with torch.no_grad():
        expected = model(x, labels)
    got = pixelfast.incremental_logits(model, x, labels)
    tolerance = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, expected, **tolerance)


@pytest.mark.parametrize("kind", list(MODELS))
def test_cached_draws_the_same_images_as_naive(kind):
    model = jitter(MODELS[kind](), scale=0.5, seed=5)
    kwargs = dict(size=(4, 5), labels=None, generator=7, progress=False)
    if model.num_classes is not None:
        kwargs["labels"] = [0, 2]
    naive = pixelfast.sample(model, 2, method="naive", **kwargs)
    cached = pixelfast.sample(model, 2, method="cached", **kwargs)
    assert torch.equal(naive, cached)


def test_dropout_in_eval_mode_is_ignored():
    """A model in training mode (its dropout active) is sampled in eval mode; the plan is the same
    with any dropout probability, and a plan made in training mode is the eval-mode one."""
    model = jitter(EluHeadPixelCNN(1, 5, hidden_channels=4, num_layers=1, dropout=0.9), seed=6)
    plain = EluHeadPixelCNN(1, 5, hidden_channels=4, num_layers=1, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    assert lower(model).program == lower(plain).program
    model.train()
    assert lower(model).program == lower(plain).program
    assert model.training and model.dropout.training  # the modes are put back
    kwargs = dict(size=(4, 4), generator=3, progress=False)
    assert torch.equal(pixelfast.sample(model, 2, method="cached", **kwargs), pixelfast.sample(plain, 2, **kwargs))
    assert model.training


# --- what the engine cannot run is named --------------------------------------------------------


class SigmoidHead(EluHeadPixelCNN):
    def forward(self, x, labels=None):
        x, labels = self.prepare(x, labels)
        y = self.out(torch.sigmoid(self.hidden(self.input_conv(x))))
        b, _, height, width = y.shape
        return y.view(b, self.in_channels, self.levels, height, width).permute(0, 2, 1, 3, 4)


class PixelLoop(EluHeadPixelCNN):
    def forward(self, x, labels=None):
        x, labels = self.prepare(x, labels)
        y = self.out(self.hidden(self.input_conv(x)))
        for i in range(y.shape[2]):  # a Python loop over the rows
            y[:, :, i] = y[:, :, i] * 2
        b, _, height, width = y.shape
        return y.view(b, self.in_channels, self.levels, height, width).permute(0, 2, 1, 3, 4)


def test_an_unsupported_op_is_named_and_auto_falls_back_to_naive():
    model = jitter(SigmoidHead(1, 4, hidden_channels=3, num_layers=0), seed=1)
    with pytest.raises(UnsupportedModelError, match=r"SigmoidHead: torch\.sigmoid at forward line \d+"):
        lower(model)
    with pytest.raises(UnsupportedModelError, match=r"torch\.sigmoid"):
        pixelfast.sample(model, 1, size=(3, 3), method="cached", progress=False)
    with pytest.warns(UserWarning, match=r"falling back to the naive sampler: .*torch\.sigmoid"):
        auto = pixelfast.sample(model, 2, size=(3, 3), generator=2, progress=False)
    assert torch.equal(auto, pixelfast.sample(model, 2, size=(3, 3), generator=2, method="naive", progress=False))


def test_a_python_loop_over_pixels_is_named():
    with pytest.raises(UnsupportedModelError, match=r"cannot trace PixelLoop\.forward .* forward line \d+"):
        lower(PixelLoop(1, 4, hidden_channels=3, num_layers=0))


class Unscaled(ConcatEluGated):
    def forward(self, x, labels=None):
        return self.head(self.blocks[0](x.float(), x.float())[1])


def test_an_input_not_scaled_as_prepare_scales_it_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"layer 'blocks.0' \(GatedBlock\).* scaled as 1 \* x \+ 0"):
        lower(Unscaled(num_layers=1))


def test_concatenating_an_rgb_model_s_per_pixel_features_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"torch\.nn\.functional\.elu .*moves channels between its colour"):
        lower(ConcatEluGated(3, 6, n=6, num_layers=2))


def test_an_unknown_layer_is_named_before_forward_runs():
    model = ConcatEluGated(num_layers=2)
    model.v_mix[0] = torch.nn.Conv2d(12, 6, 1)
    with pytest.raises(UnsupportedModelError, match=r"layer 'v_mix.0' \(Conv2d\) in ConcatEluGated"):
        lower(model)
    model = ConcatEluGated(num_layers=2)
    model.blocks[1].h_res = torch.nn.Identity()
    with pytest.raises(UnsupportedModelError, match=r"layer 'blocks.1.h_res' \(Identity\)"):
        lower(model)


def test_the_engine_checks_the_new_ops():
    from pixelfast.sampling.cached import run_engine
    from pixelfast.sampling.plan import PlanBuilder

    def plan_with(op):
        b = PlanBuilder(torch.float64, torch.device("cpu"))
        b.buffer(1)
        b.weight(torch.zeros(1))  # the engine wants one
        logits = b.buffer(4)
        op(b)
        b.sample(logits, 1)
        return b.plan

    image = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    args = (image, torch.zeros_like(image, dtype=torch.bool), torch.zeros(image.shape, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="concat_elu needs one group and twice"):
        run_engine(plan_with(lambda b: b.concat_elu(b.buffer(3), 0)), *args, None, 1.0, 4, False)
    with pytest.raises(RuntimeError, match="cat needs one group and its sources' channels"):
        run_engine(plan_with(lambda b: b.cat(b.buffer(3), 0, 0)), *args, None, 1.0, 4, False)
    with pytest.raises(RuntimeError, match="relu/elu/add/mul needs equal channel counts"):
        run_engine(plan_with(lambda b: b.mul(b.buffer(2), 0, 1)), *args, None, 1.0, 4, False)
