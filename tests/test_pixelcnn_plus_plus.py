"""PixelCNN++: causality, the discretized logistic mixture against the paper's formula, training,
the CIFAR-10 preset, config errors, the command line and sampling (naive; the cached engine refuses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from causality import all_positions, assert_sees_immediate_past, check_causal, earlier, levels_image
from hypothesis import given, settings, strategies as st
from PIL import Image

import pixelfast
from pixelfast import cli
from pixelfast.checkpoint import load_checkpoint, load_model
from pixelfast.evaluate import log_prob
from pixelfast.models import MODELS, PixelCNNPlusPlus, PixelCNNPlusPlusConfig, build_model
from pixelfast.models.pixelcnn_plus_plus import PRESETS
from pixelfast.nn import logistic_mixture_logits, logistic_mixture_nll
from pixelfast.nn.logistic_mixture import mixture_channels


def small(in_channels=3, levels=8, nr_resnet=1, nr_filters=6, nr_logistic_mix=3, seed=0, **kwargs):
    """A small float64 model, dropout off unless asked (class biases randomised to be visible)."""
    torch.manual_seed(seed)
    kwargs.setdefault("dropout", 0.0)
    model = PixelCNNPlusPlus(in_channels, levels, nr_resnet, nr_filters, nr_logistic_mix, **kwargs).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "class_bias" in name:
                param.normal_()
    return model


# --- the reference: the paper's loss, written out in plain PyTorch ---------------------------------


def discretized_mix_logistic_nll_ref(params, x, levels, nr_mix, colours=None):
    """``-log p(x)`` per pixel ``[B, H, W]`` under the discretized logistic mixture ``params``, straight
    from the paper (its code's ``discretized_mix_logistic_loss``): all colours of a pixel at once,
    ``-log sum_k pi_k prod_c P_ck(x_c)``, the means of G and B moved by the earlier colours' values.

    ``params [B, P, H, W]``: ``K`` weight logits, the means ``[C, K]``, the log-scales ``[C, K]`` and for
    RGB the coefficients ``[3, K]``. ``x``: levels ``[B, C, H, W]``. ``colours``: only the first
    ``colours`` colours (their marginal, e.g. 1: R alone); default all.
    """
    b, c, h, w = x.shape
    k = nr_mix
    p = params.double().permute(0, 2, 3, 1)  # channels last, as the paper's code
    logit_probs = p[..., :k]
    means = p[..., k : k + c * k].reshape(b, h, w, c, k)
    log_scales = torch.clamp(p[..., k + c * k : k + 2 * c * k].reshape(b, h, w, c, k), min=-7.0)
    xs = (x.double() * (2.0 / (levels - 1)) - 1.0).permute(0, 2, 3, 1).unsqueeze(-1)  # [B, H, W, C, 1]
    if c == 3:
        coeffs = torch.tanh(p[..., k + 2 * c * k :].reshape(b, h, w, 3, k))
        m2 = means[..., 1, :] + coeffs[..., 0, :] * xs[..., 0, :]
        m3 = means[..., 2, :] + coeffs[..., 1, :] * xs[..., 0, :] + coeffs[..., 2, :] * xs[..., 1, :]
        means = torch.stack([means[..., 0, :], m2, m3], dim=3)
    centered_x = xs - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / (levels - 1))
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / (levels - 1))
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # level 0: the bin runs down to -inf
    log_one_minus_cdf_min = -F.softplus(min_in)  # the top level: up to +inf
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    inner = torch.where(
        cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid - np.log((levels - 1) / 2)
    )
    log_probs = torch.where(xs < -0.999, log_cdf_plus, torch.where(xs > 0.999, log_one_minus_cdf_min, inner))
    log_probs = log_probs[..., :colours, :].sum(dim=3) + torch.log_softmax(logit_probs, dim=-1)
    return -torch.logsumexp(log_probs, dim=-1)


def random_params(b, c, h, w, k, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, mixture_channels(c, k), h, w, generator=g, dtype=torch.float64) * scale


def scaled(x, levels):
    return x.double() * (2.0 / (levels - 1)) - 1.0


# --- (1) causality -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, size, options",
    [
        (1, (5, 6), dict(nr_resnet=1, nr_filters=6, nr_logistic_mix=2)),
        (3, (5, 6), dict(nr_resnet=1, nr_filters=6, nr_logistic_mix=3)),
        (3, (7, 5), dict(nr_resnet=2, nr_filters=4, nr_logistic_mix=1, num_classes=3)),
        (1, (3, 9), dict(nr_resnet=2, nr_filters=5, nr_logistic_mix=4, levels=256)),
    ],
)
def test_causal_for_every_subpixel_with_no_blind_spot(channels, size, options, device):
    options = {"levels": 4, **options}
    model = small(channels, **options).to(device)
    height, width = size
    labels = torch.tensor([1]) if model.num_classes else None
    positions = all_positions(channels, height, width)
    depends = check_causal(model, height, width, positions, labels=labels)
    assert_sees_immediate_past(depends, positions)
    if height * width <= 30:  # small enough for the U-net to see all of the past
        for k, (c, i, j) in enumerate(positions):
            missing = earlier(c, i, j, channels, height, width) & ~depends[k]
            assert not missing.any(), f"{(c, i, j)} does not see {missing.nonzero().tolist()}"


@settings(max_examples=25, deadline=None)
@given(
    channels=st.sampled_from([1, 3]),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    nr_resnet=st.integers(1, 2),
    levels=st.sampled_from([2, 5, 256]),
    data=st.data(),
)
def test_logits_ignore_the_present_and_future_values(channels, height, width, nr_resnet, levels, data):
    # Values, not gradients: the earlier colours also pick the components' posterior (a lookup).
    model = small(channels, levels, nr_resnet, nr_filters=4, nr_logistic_mix=2, seed=data.draw(st.integers(0, 9)))
    c = data.draw(st.integers(0, channels - 1))
    i, j = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    x = levels_image(2, channels, height, width, levels=levels, seed=data.draw(st.integers(0, 99)))
    later = ~earlier(c, i, j, channels, height, width)  # (c, i, j) itself and everything after it
    other = levels_image(2, channels, height, width, levels=levels, seed=1000)
    changed = torch.where(later, other, x)
    before, after = model(x), model(changed)
    torch.testing.assert_close(after[:, :, c, i, j], before[:, :, c, i, j], rtol=0, atol=1e-10)


# --- (2), (3) the likelihood against the paper's formula --------------------------------------------


@pytest.mark.parametrize("channels, levels, k", [(1, 256, 3), (3, 256, 5), (3, 7, 2), (1, 2, 1), (3, 16, 1)])
def test_cross_entropy_is_the_papers_negative_log_likelihood(channels, levels, k):
    model = small(channels, levels, nr_logistic_mix=k, num_classes=2).eval()
    x = levels_image(3, channels, 5, 4, levels=levels, seed=4)
    labels = torch.tensor([0, 1, 1])
    reference = discretized_mix_logistic_nll_ref(model.mixture_params(x, labels), x, levels, k)
    loss = F.cross_entropy(model(x, labels), x)
    torch.testing.assert_close(loss, reference.sum() / x.numel(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.loss(x, labels), loss)
    per_image = log_prob(model, x, labels, progress=False)
    torch.testing.assert_close(per_image, -reference.sum(dim=(1, 2)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("channels, levels", [(1, 256), (3, 256), (3, 5), (1, 2)])
@pytest.mark.parametrize("scale", [0.5, 3.0])
def test_each_conditional_is_a_ratio_of_the_papers_joints_and_sums_to_one(channels, levels, scale):
    # On the head alone, params drawn at random (scale 3 makes thin bins and far tails): the logits of
    # every level of sub-pixel c are log p(x_<c, v) - log p(x_<c), each side from the reference.
    k, b, h, w = 4, 2, 3, 2
    params = random_params(b, channels, h, w, k, scale=scale, seed=levels)
    x = levels_image(b, channels, h, w, levels=levels, seed=5)
    logits = logistic_mixture_logits(params, scaled(x, levels), levels, k)
    assert logits.shape == (b, levels, channels, h, w) and torch.isfinite(logits).all()
    for c in range(channels):
        before = -discretized_mix_logistic_nll_ref(params, x, levels, k, colours=c) if c else 0.0
        conditional = []
        for v in range(levels):
            y = x.clone()
            y[:, c] = v
            conditional.append(-discretized_mix_logistic_nll_ref(params, y, levels, k, colours=c + 1) - before)
        conditional = torch.stack(conditional, dim=1)  # [B, levels, H, W]
        # The bins of every logistic cover the line: the conditionals sum to one (up to the paper's
        # density-times-width rule for bins under 1e-5, which the logits renormalise).
        sums = torch.logsumexp(conditional, dim=1)
        torch.testing.assert_close(sums, torch.zeros_like(sums), rtol=0, atol=1e-4)
        torch.testing.assert_close(logits[:, :, c], conditional.log_softmax(dim=1), rtol=1e-9, atol=1e-9)
    # probabilities sum to one, and the product of the conditionals at x is the joint
    torch.testing.assert_close(logits.exp().sum(dim=1), torch.ones_like(x, dtype=logits.dtype), rtol=0, atol=1e-12)
    chain = logits.gather(1, x.unsqueeze(1)).squeeze(1).sum(dim=1)
    joint = -discretized_mix_logistic_nll_ref(params, x, levels, k)
    torch.testing.assert_close(chain, joint, rtol=1e-6, atol=1e-4 if scale > 1 else 1e-9)


@pytest.mark.parametrize("channels, levels", [(1, 256), (3, 256), (3, 5), (1, 2), (3, 2)])
@pytest.mark.parametrize("scale", [0.5, 3.0, 40.0])
def test_the_training_loss_is_the_papers_at_the_observed_levels(channels, levels, scale):
    # logistic_mixture_nll (what PixelCNNPlusPlus.loss trains on) evaluates only the observed bins:
    # it must be the reference's -log p(pixel), first and last levels and thin bins included, and its
    # gradient the cross entropy's wherever the bins sum to one.
    k, b, h, w = 3, 3, 4, 3
    params = random_params(b, channels, h, w, k, scale=scale, seed=levels + channels)
    x = levels_image(b, channels, h, w, levels=levels, seed=6)
    x[0, :, 0, 0], x[0, :, 0, 1] = 0, levels - 1  # both open-ended bins, in every colour
    nll = logistic_mixture_nll(params, scaled(x, levels), levels, k)
    assert nll.shape == (b, h, w)
    torch.testing.assert_close(nll, discretized_mix_logistic_nll_ref(params, x, levels, k), rtol=1e-12, atol=1e-12)
    if scale < 1:  # no thin bins: the summed cross entropy of the logits, and its gradient
        p1, p2 = params.clone().requires_grad_(), params.clone().requires_grad_()
        fast = logistic_mixture_nll(p1, scaled(x, levels), levels, k).sum()
        slow = F.cross_entropy(logistic_mixture_logits(p2, scaled(x, levels), levels, k), x, reduction="sum")
        fast.backward()
        slow.backward()
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=0)
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("function", [logistic_mixture_logits, logistic_mixture_nll])
def test_params_of_the_wrong_shape_are_refused_by_name(function):
    x = scaled(levels_image(2, 3, 4, 4, levels=16), 16)
    for params in (random_params(2, 3, 4, 4, 3)[:, :-1], random_params(2, 3, 4, 5, 3), torch.zeros(60)):
        with pytest.raises(ValueError, match=rf"{function.__name__}: params must be \[2, 30, 4, 4\] for 3"):
            function(params, x, 16, 3)


def test_the_coupling_moves_green_by_red_and_blue_by_red_and_green():
    # One component, a tiny scale: the mean of each colour is where its mass is.
    k, levels = 1, 256
    params = torch.zeros(1, mixture_channels(3, k), 1, 1, dtype=torch.float64)
    params[0, 1:4, 0, 0] = torch.tensor([0.2, -0.1, 0.05])  # mu_R, mu_G, mu_B
    params[0, 4:7, 0, 0] = -6.0  # log-scales
    params[0, 7:10, 0, 0] = torch.atanh(torch.tensor([0.5, -0.25, 0.75], dtype=torch.float64))  # alpha, beta, gamma
    x = torch.tensor([200, 40, 0]).view(1, 3, 1, 1)
    r, g = scaled(x[0, 0], levels).item(), scaled(x[0, 1], levels).item()
    logits = logistic_mixture_logits(params, scaled(x, levels), levels, k)
    modes = logits[0, :, :, 0, 0].argmax(dim=0)
    expected = [0.2, -0.1 + 0.5 * r, 0.05 - 0.25 * r + 0.75 * g]
    for c in range(3):
        assert modes[c].item() == round((expected[c] + 1) * (levels - 1) / 2), c


def test_levels_and_extreme_parameters_stay_finite():
    for levels in (2, 3, 255, 1024):
        params = random_params(2, 3, 2, 2, 3, scale=40.0, seed=levels)
        x = levels_image(2, 3, 2, 2, levels=levels)
        logits = logistic_mixture_logits(params.float(), scaled(x, levels).float(), levels, 3)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
        torch.testing.assert_close(logits.exp().sum(dim=1), torch.ones(2, 3, 2, 2), rtol=0, atol=1e-5)


def test_the_mixture_is_split_over_the_batch_without_changing_it(monkeypatch):
    params = random_params(5, 3, 2, 3, 2, seed=3)
    x = scaled(levels_image(5, 3, 2, 3, levels=16), 16)
    whole = logistic_mixture_logits(params, x, 16, 2)
    monkeypatch.setattr("pixelfast.nn.logistic_mixture.CHUNK_VALUES", 1)  # one image at a time
    torch.testing.assert_close(logistic_mixture_logits(params, x, 16, 2), whole, rtol=0, atol=0)


# --- (4) training ----------------------------------------------------------------------------------


def test_gradients_reach_every_parameter_and_adam_lowers_the_loss():
    torch.manual_seed(0)
    model = PixelCNNPlusPlus(3, 16, nr_resnet=1, nr_filters=8, nr_logistic_mix=3, dropout=0.0, num_classes=2)
    x = levels_image(4, 3, 6, 6, levels=16, seed=2)
    labels = torch.tensor([0, 1, 0, 1])
    loss = model.loss(x, labels)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert torch.any(param.grad != 0), name
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = loss.item()
    for _ in range(15):
        optimizer.zero_grad()
        loss = model.loss(x, labels)
        loss.backward()
        optimizer.step()
    assert model.loss(x, labels).item() < first - 0.2


def test_a_training_step_under_bf16_autocast_matches_float32():
    torch.manual_seed(0)
    model = PixelCNNPlusPlus(3, 16, nr_resnet=1, nr_filters=6, nr_logistic_mix=2, dropout=0.0)
    x = levels_image(2, 3, 5, 5, levels=16)
    loss32 = model.loss(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.float32  # the mixture is computed in float32
    loss = F.cross_entropy(logits, x)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, loss32, rtol=2e-2, atol=0)


# --- (5) the preset ----------------------------------------------------------------------------------

CIFAR10_PARAMETERS = 53_618_660


def test_the_cifar10_preset_is_the_papers_model():
    assert PRESETS["cifar10"] == dict(
        in_channels=3,
        levels=256,
        nr_resnet=5,
        nr_filters=160,
        nr_logistic_mix=10,
        dropout=0.5,
        num_classes=None,
        image_size=(32, 32),
    )
    with torch.device("meta"):  # counted without allocating the weights
        model = PixelCNNPlusPlus.cifar10()
        conditional = PixelCNNPlusPlus.cifar10(num_classes=10)
    count = sum(p.numel() for p in model.parameters())
    assert count == CIFAR10_PARAMETERS  # about 53.6 M (the paper's weight-norm gains not included)
    assert abs(count - 53.7e6) < 0.15e6
    assert model.config == {**PRESETS["cifar10"], "image_size": [32, 32]}
    # the defaults are the preset, but for the size
    assert PixelCNNPlusPlusConfig().to_dict() == {**model.config, "image_size": None}
    # the class-conditional one adds a 2n-vector per class in each of the 64 gated blocks
    extra = sum(p.numel() for p in conditional.parameters()) - count
    assert extra == 64 * 10 * 2 * 160
    assert len(model.up_u) == 3 and [len(blocks) for blocks in model.down_u] == [5, 6, 6]


# --- (6) config errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(nr_logistic_mix=0), ValueError, "PixelCNNPlusPlus: nr_logistic_mix must be >= 1, got 0"),
        (dict(nr_logistic_mix=2.5), TypeError, "PixelCNNPlusPlus: nr_logistic_mix must be an int"),
        (dict(nr_resnet=0), ValueError, "nr_resnet must be >= 1"),
        (dict(nr_filters=True), TypeError, "nr_filters must be an int"),
        (dict(dropout=1.0), ValueError, r"dropout must be a number in \[0, 1\), got 1.0"),
        (dict(dropout=-0.1), ValueError, r"dropout must be a number in \[0, 1\)"),
        (dict(dropout=float("nan")), ValueError, "dropout"),
        (dict(dropout="0.5"), ValueError, "dropout"),
        (dict(in_channels=2), ValueError, "PixelCNNPlusPlus: in_channels must be 1 or 3, got 2"),
        (dict(levels=1), ValueError, "levels must be >= 2"),
        (dict(image_size=(32,)), ValueError, "image_size must be None or"),
    ],
)
def test_config_errors_are_clear(kwargs, error, match):
    with pytest.raises(error, match=match):
        PixelCNNPlusPlusConfig(**kwargs)
    with pytest.raises(error, match=match):
        build_model("PixelCNNPlusPlus", kwargs)


def test_wrong_images_and_labels_are_refused_by_name():
    model = small(3, 4, num_classes=2)
    with pytest.raises(ValueError, match=r"PixelCNNPlusPlus: x must be \[B, 3, H, W\]"):
        model(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match="levels in 0..3"):
        model(torch.full((1, 3, 4, 4), 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="class-conditional"):
        model(torch.zeros(1, 3, 4, 4, dtype=torch.long))
    assert MODELS["PixelCNNPlusPlus"] is PixelCNNPlusPlus and PixelCNNPlusPlus.name == "PixelCNNPlusPlus"


# --- (7) the command line: train, eval, sample ----------------------------------------------------------


def test_train_eval_and_sample_from_the_command_line(tmp_path, capsys):
    rng = np.random.RandomState(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(6):
            image = rng.randint(0, 256, (4, 5, 3)).astype(np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / label / f"{i}.png")
    out = tmp_path / "ppp.pt"
    argv = ["train", "--model", "PixelCNNPlusPlus", "--data", "folder", "--root", str(tmp_path / "data")]
    argv += ["--levels", "8", "--limit", "8", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    argv += ["--out", str(out), "--no-progress", "--model-arg", "nr_resnet=1", "--model-arg", "nr_filters=6"]
    argv += ["--model-arg", "nr_logistic_mix=2", "--model-arg", "dropout=0.25"]
    assert cli.main(argv) == 0
    assert "held-out" in capsys.readouterr().out
    saved = load_checkpoint(out)
    assert saved["model_name"] == "PixelCNNPlusPlus" and saved["epoch"] == 1
    assert saved["model_config"] == dict(
        in_channels=3,
        levels=8,
        nr_resnet=1,
        nr_filters=6,
        nr_logistic_mix=2,
        dropout=0.25,
        num_classes=2,
        image_size=[4, 5],
    )
    model = load_model(out)
    assert isinstance(model, PixelCNNPlusPlus) and not model.training
    for key, value in saved["model_state"].items():
        assert torch.equal(model.state_dict()[key], value), key
    assert cli.main(["eval", "--checkpoint", str(out), "--data", "folder", "--root", str(tmp_path / "data")]) == 0
    assert "bits/dim" in capsys.readouterr().out
    grids = {}
    for method in ("cached", "naive"):
        png = tmp_path / f"{method}.png"
        argv = ["sample", "--checkpoint", str(out), "--n", "2", "--out", str(png), "--seed", "0", "--no-progress"]
        assert cli.main([*argv, "--method", method]) == 0
        grids[method] = np.asarray(Image.open(png))
        assert grids[method].shape[1] > 5
    np.testing.assert_array_equal(grids["cached"], grids["naive"])


# --- (8) sampling: naive and deterministic (the cached engine: test_sampling_pixelcnn_plus_plus.py) -----


def test_dropout_is_on_in_training_and_off_in_eval_and_sampling():
    model = small(3, 8, dropout=0.5, image_size=(3, 3))
    x = levels_image(2, 3, 3, 3, levels=8)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    first = pixelfast.sample(model, 2, method="naive", generator=3, progress=False)
    again = pixelfast.sample(model, 2, method="naive", generator=3, progress=False)
    assert torch.equal(first, again) and model.training  # its mode is restored
    model.eval()
    assert torch.equal(pixelfast.sample(model, 2, method="naive", generator=3, progress=False), first)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_cold_sample_is_the_greedy_chain_and_auto_equals_naive(channels):
    model = small(channels, 16, nr_logistic_mix=3, num_classes=2, image_size=(3, 4))
    labels = torch.tensor([0, 1])
    out = pixelfast.sample(model, 2, labels=labels, temperature=1e-4, generator=0, progress=False)
    # Each sub-pixel is the argmax of the logits one pass over the result gives there (causality;
    # at temperature 1e-4 only levels within about 1e-3 of the top one have a chance).
    logits = model.eval()(out, labels)
    chosen = logits.gather(1, out.long()[:, None]).squeeze(1)
    assert (logits.amax(dim=1) - chosen).max() < 1e-3
    naive = pixelfast.sample(model, 2, labels=labels, temperature=1e-4, generator=0, method="naive", progress=False)
    assert torch.equal(out, naive)


def test_log_prob_is_finite_and_bits_per_dim_in_the_usual_units():
    model = small(1, 256, nr_logistic_mix=2).eval()
    x = levels_image(2, 1, 4, 4, levels=256)
    nats = log_prob(model, x, progress=False)
    bits = pixelfast.bits_per_dim(model, x)
    assert math.isclose(bits, float(-nats.sum() / (x.numel() * math.log(2))), rel_tol=1e-6)
