"""The naive sampler and ``pixelfast.sample``'s argument checks.

Most tests use ``ChainStub``, a model whose logits we control: sub-pixel k (in sampling order:
raster over pixels, then R, G, B) prefers the level ``(x[k-1] + 1 + label) % levels``. At a low
temperature the only possible sample is that chain, which pins down order, conditioning, labels
and completion exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelfast.sampling import draw_categorical, sample

# The stubs below are no model the cached engine can lower, so method="auto" falls back to the
# naive sampler with a warning; that warning is tested on its own (test_sampling_cached.py).
pytestmark = pytest.mark.filterwarnings("ignore:sample. falling back to the naive sampler:UserWarning")


class ChainStub(nn.Module):
    def __init__(self, in_channels=1, levels=4, num_classes=None, image_size=(3, 4), sharpness=5.0):
        super().__init__()
        self.in_channels = in_channels
        self.levels = levels
        self.num_classes = num_classes
        self.image_size = image_size
        self.sharpness = sharpness
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the stub a device
        self.calls = 0
        self.seen = []  # (training, grad enabled) at each call

    def forward(self, x, labels=None):
        self.calls += 1
        self.seen.append((self.training, torch.is_grad_enabled()))
        n, c, h, w = x.shape
        flat = x.long().permute(0, 2, 3, 1).reshape(n, -1)  # sampling order: i, j, then colour
        previous = torch.cat([torch.full((n, 1), -1, device=x.device), flat[:, :-1]], dim=1)
        target = previous + 1
        if labels is not None:
            target = target + labels.view(n, 1)
        target = target % self.levels
        logits = self.sharpness * F.one_hot(target, self.levels).float() + self.anchor
        return logits.view(n, h, w, c, self.levels).permute(0, 4, 3, 1, 2)


def chain(n, c, h, w, levels, start=None, labels=None):
    """The image the chain rule implies: level k of the flattened order is k + 1 + label... mod levels."""
    k = torch.arange(c * h * w)
    add = torch.zeros(n, 1, dtype=torch.long) if labels is None else torch.as_tensor(labels).view(n, 1)
    flat = (k.view(1, -1) * (1 + add) + add) % levels  # x_k = (x_{k-1} + 1 + a), x_{-1} = -1
    return flat.view(n, h, w, c).permute(0, 3, 1, 2)


# --- categorical draws ------------------------------------------------------------------------


def test_draw_categorical_matches_softmax_frequencies():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    for temperature in (1.0, 2.0):
        draws = draw_categorical(logits, temperature, g)
        freq = torch.bincount(draws, minlength=4).double() / draws.numel()
        expected = torch.softmax(logits[0].double() / temperature, 0)
        assert torch.allclose(freq, expected, atol=0.015)


def test_draw_categorical_low_temperature_is_argmax():
    g = torch.Generator().manual_seed(1)
    # Gaps of at least 0.01 between the best two logits: 100 / temperature in the exponent.
    logits = torch.stack([torch.randperm(7, generator=g) for _ in range(500)]).float() * 0.01 - 3.0
    draws = draw_categorical(logits, 1e-4, torch.Generator().manual_seed(2))
    assert torch.equal(draws, logits.argmax(1))


def test_draw_categorical_rejects_nan_logits():
    with pytest.raises(RuntimeError, match="non-finite"):
        draw_categorical(torch.tensor([[0.0, float("nan")]]), 1.0, None)


# --- order, conditioning, temperature ---------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_low_temperature_follows_the_chain_in_raster_then_rgb_order(channels, device):
    stub = ChainStub(in_channels=channels, levels=5, image_size=(3, 4))
    out = sample(stub, 2, temperature=1e-3, generator=0, progress=False, device=device)
    assert out.dtype == torch.uint8 and out.shape == (2, channels, 3, 4) and out.device.type == device.type
    assert torch.equal(out.long().cpu(), chain(2, channels, 3, 4, 5))
    assert stub.calls == channels * 3 * 4  # one full network run per sub-pixel


def test_temperature_controls_how_often_the_mode_is_drawn():
    levels, sharpness = 4, 1.5
    stub = ChainStub(levels=levels, image_size=(4, 4), sharpness=sharpness)

    def agreement(temperature):
        out = sample(stub, 200, temperature=temperature, generator=3, progress=False).long()
        flat = out.permute(0, 2, 3, 1).reshape(200, -1)
        previous = torch.cat([torch.full((200, 1), -1), flat[:, :-1]], 1)
        return ((previous + 1) % levels == flat).double().mean().item()

    def mode_probability(temperature):
        e = math.exp(sharpness / temperature)
        return e / (e + levels - 1)

    for temperature in (0.5, 1.0, 4.0):
        assert agreement(temperature) == pytest.approx(mode_probability(temperature), abs=0.04)
    assert agreement(0.01) == 1.0


def test_same_seed_same_images_different_seed_different_images():
    stub = ChainStub(levels=16, image_size=(4, 4), sharpness=0.0)  # uniform: all randomness
    a = sample(stub, 3, generator=7, progress=False)
    b = sample(stub, 3, generator=torch.Generator().manual_seed(7), progress=False)
    c = sample(stub, 3, generator=8, progress=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    torch.manual_seed(5)
    d = sample(stub, 3, progress=False)
    torch.manual_seed(5)
    assert torch.equal(d, sample(stub, 3, progress=False))  # generator=None: torch's global RNG


def test_runs_in_eval_mode_without_grad_and_restores_the_mode():
    stub = ChainStub()
    stub.train()
    sample(stub, 1, generator=0, progress=False)
    assert stub.training
    assert set(stub.seen) == {(False, False)}
    stub.eval()
    sample(stub, 1, generator=0, progress=False)
    assert not stub.training


# --- labels -----------------------------------------------------------------------------------


def test_labels_condition_every_image():
    stub = ChainStub(levels=7, num_classes=3, image_size=(2, 3))
    out = sample(stub, 4, labels=[2, 0, 1, 2], temperature=1e-3, generator=0, progress=False)
    assert torch.equal(out.long(), chain(4, 1, 2, 3, 7, labels=[2, 0, 1, 2]))
    one = sample(stub, 2, labels=1, temperature=1e-3, generator=0, progress=False)
    assert torch.equal(one.long(), chain(2, 1, 2, 3, 7, labels=[1, 1]))
    as_tensor = sample(stub, 2, labels=torch.tensor([1, 1]), temperature=1e-3, generator=0, progress=False)
    assert torch.equal(as_tensor, one)


def test_default_labels_cycle_through_the_classes():
    stub = ChainStub(levels=7, num_classes=3, image_size=(2, 2))
    out = sample(stub, 5, temperature=1e-3, generator=0, progress=False)
    assert torch.equal(out.long(), chain(5, 1, 2, 2, 7, labels=[0, 1, 2, 0, 1]))


@pytest.mark.parametrize(
    "num_classes, labels, error, match",
    [
        (None, [0, 1], ValueError, "unconditional"),
        (3, [0, 1, 2], ValueError, "3 labels for n=2"),
        (3, [0, 3], ValueError, r"0\.\.2"),
        (3, [-1, 0], ValueError, r"0\.\.2"),
        (3, torch.tensor([0.0, 1.0]), TypeError, "integer"),
        (3, [0.5, 1], TypeError, "ints"),
        (3, True, TypeError, "bool"),
        (3, torch.zeros(2, 1, dtype=torch.long), ValueError, "1-D"),
    ],
)
def test_bad_labels_fail_before_any_work(num_classes, labels, error, match):
    stub = ChainStub(num_classes=num_classes)
    with pytest.raises(error, match=match):
        sample(stub, 2, labels=labels, progress=False)
    assert stub.calls == 0


# --- completion -------------------------------------------------------------------------------


def test_completion_keeps_known_sub_pixels_and_continues_the_chain():
    levels = 6
    stub = ChainStub(in_channels=3, levels=levels, image_size=(4, 3))
    image = torch.randint(0, levels, (2, 3, 4, 3), generator=torch.Generator().manual_seed(0))
    known = torch.zeros(4, 3, dtype=torch.bool)
    known[:2] = True  # the top half
    out = sample(stub, 2, image=image, known=known, temperature=1e-3, generator=0, progress=False).long()
    assert torch.equal(out[:, :, :2], image[:, :, :2])
    flat = out.permute(0, 2, 3, 1).reshape(2, -1)
    start = 2 * 3 * 3  # first unknown sub-pixel in sampling order
    assert torch.equal(flat[:, start:], (flat[:, start - 1 : -1] + 1) % levels)
    assert stub.calls == 2 * 3 * 3  # known sub-pixels cost no network run


def test_completion_with_a_per_image_mask_and_one_shared_image():
    stub = ChainStub(levels=9, image_size=(3, 3), sharpness=0.0)
    image = torch.arange(9).view(1, 3, 3).float()  # whole-number floats are accepted
    known = torch.rand(3, 1, 3, 3, generator=torch.Generator().manual_seed(4)) < 0.5
    for seed in range(3):
        out = sample(stub, 3, image=image, known=known, generator=seed, progress=False)
        expanded = image.expand(3, 1, 3, 3).to(torch.uint8)
        assert torch.equal(out[known], expanded[known])
    everything = torch.ones(3, 3, dtype=torch.bool)
    stub.calls = 0
    full = sample(stub, 2, image=image, known=everything, generator=0, progress=False)
    assert torch.equal(full, image.expand(2, 1, 3, 3).to(torch.uint8)) and stub.calls == 0


@pytest.mark.parametrize(
    "image, known, error, match",
    [
        (torch.zeros(1, 3, 3, dtype=torch.long), None, ValueError, "without known"),
        (None, torch.ones(3, 3, dtype=torch.bool), ValueError, "without image"),
        (torch.zeros(2, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.bool), ValueError, "shape"),
        (torch.zeros(3, 1, 3, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.bool), ValueError, "shape"),
        (torch.zeros(1, 3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.bool), ValueError, "shape"),
        (torch.zeros(1, 3, 3, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool), TypeError, "dtype"),
        (torch.full((1, 3, 3), 4), torch.ones(3, 3, dtype=torch.bool), ValueError, r"0\.\.3"),
        (torch.full((1, 3, 3), -1), torch.ones(3, 3, dtype=torch.bool), ValueError, r"0\.\.3"),
        (torch.full((1, 3, 3), 0.5), torch.ones(3, 3, dtype=torch.bool), ValueError, "whole"),
        (torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(3, 3), TypeError, "bool"),
        (torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.bool), ValueError, "broadcast"),
        (torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(3, dtype=torch.bool), ValueError, "broadcast"),
    ],
)
def test_bad_completion_arguments_fail_before_any_work(image, known, error, match):
    stub = ChainStub(image_size=(3, 3))
    with pytest.raises(error, match=match):
        sample(stub, 2, image=image, known=known, progress=False)
    assert stub.calls == 0


def test_out_of_range_values_outside_the_known_mask_are_ignored():
    stub = ChainStub(levels=4, image_size=(2, 2))
    image = torch.tensor([[[1, -1], [99, 99]]])  # placeholders where unknown
    known = torch.tensor([[True, False], [False, False]])
    out = sample(stub, 1, image=image, known=known, temperature=1e-3, generator=0, progress=False)
    assert out.flatten().tolist() == [1, 2, 3, 0]


# --- other argument checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"n": 2.0}, TypeError, "n must be an int"),
        ({"n": True}, TypeError, "n must be an int"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1.0}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": float("inf")}, ValueError, "temperature"),
        ({"temperature": "1"}, TypeError, "temperature"),
        ({"method": "fast"}, ValueError, "method"),
        ({"size": (3, 0)}, ValueError, "positive"),
        ({"size": (3, 3, 3)}, ValueError, r"\(H, W\)"),
        ({"generator": "seed"}, TypeError, "generator"),
        ({"generator": -1}, ValueError, "seed"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_bad_arguments_fail_before_any_work(kwargs, error, match):
    stub = ChainStub()
    arguments = {"n": 2, "progress": False, **kwargs}
    n = arguments.pop("n")
    with pytest.raises(error, match=match):
        sample(stub, n, **arguments)
    assert stub.calls == 0


def test_size_defaults_to_the_model_and_is_required_without_it():
    stub = ChainStub(image_size=(2, 5))
    assert sample(stub, 1, progress=False).shape == (1, 1, 2, 5)
    assert sample(stub, 1, size=3, progress=False).shape == (1, 1, 3, 3)
    stub.image_size = None
    with pytest.raises(ValueError, match="size"):
        sample(stub, 1, progress=False)
    assert sample(stub, 1, size=(2, 3), progress=False).shape == (1, 1, 2, 3)


def test_wrong_logit_shape_and_too_many_levels_are_clear_errors():
    class Short(ChainStub):
        def forward(self, x, labels=None):
            return super().forward(x, labels)[:, :-1]  # one level short

    with pytest.raises(RuntimeError, match="logits of shape"):
        sample(Short(levels=4, image_size=(2, 2)), 1, progress=False)
    stub = ChainStub(levels=4, image_size=(2, 2))
    stub.levels = 300
    with pytest.raises(ValueError, match="uint8"):
        sample(stub, 1, progress=False)


def test_not_a_pixel_model_is_refused():
    with pytest.raises(TypeError, match="lacks the attributes"):
        sample(nn.Linear(2, 2), 1, size=(2, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        sample(lambda x: x, 1, size=(2, 2))


def test_cached_refuses_a_model_it_cannot_run_and_auto_falls_back_to_naive():
    stub = ChainStub(image_size=(2, 2))
    with pytest.raises(ValueError, match="does not support ChainStub"):
        sample(stub, 1, method="cached", progress=False)
    assert stub.calls == 0
    with pytest.warns(UserWarning, match="naive"):
        auto = sample(stub, 2, method="auto", generator=1, progress=False)
    assert torch.equal(auto, sample(stub, 2, method="naive", generator=1, progress=False))


# --- a real model -----------------------------------------------------------------------------


def _tiny_gated(num_classes=3):
    from pixelfast.models import GatedPixelCNN

    torch.manual_seed(0)
    return GatedPixelCNN(
        in_channels=3, levels=4, hidden_channels=6, num_layers=2, num_classes=num_classes, image_size=(4, 3)
    )


@pytest.mark.parametrize("method", ["naive", "cached"])
def test_gated_pixelcnn_low_temperature_sample_is_the_greedy_decoding(method, device):
    model = _tiny_gated().to(device)
    labels = torch.tensor([0, 2], device=device)
    out = sample(model, 2, labels=labels, temperature=1e-4, generator=0, progress=False, method=method)
    # Causality: the logits the sampler saw at each sub-pixel equal those of one pass over the result.
    with torch.no_grad():
        logits = model(out.long(), labels)
    assert torch.equal(logits.argmax(1), out.long())


def test_gated_pixelcnn_samples_are_reproducible_and_keep_known_pixels(device):
    model = _tiny_gated().to(device)
    a = sample(model, 3, generator=11, progress=False)
    assert a.shape == (3, 3, 4, 3) and a.dtype == torch.uint8 and int(a.max()) <= 3
    assert torch.equal(a, sample(model, 3, generator=11, progress=False))
    known = torch.zeros(4, 3, dtype=torch.bool)
    known[:2] = True
    completed = sample(model, 3, image=a, known=known, generator=12, progress=False)
    assert torch.equal(completed[:, :, :2], a[:, :, :2])
