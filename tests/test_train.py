"""Training, resuming, and bits/dim (model and baseline)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pixelfast.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pixelfast.data import LevelsDataset, mnist_digits
from pixelfast.evaluate import baseline_bits_per_dim, bits_per_dim
from pixelfast.train import train

LEVELS = 4
TINY = {"hidden_channels": 6, "num_layers": 2}


@pytest.fixture(scope="module")
def digits():
    train_set = mnist_digits("train", levels=LEVELS).subset(range(48))
    test_set = mnist_digits("test", levels=LEVELS).subset(range(32))
    return train_set, test_set


def run(digits, out, epochs, resume=False, seed=0, model_config=None, log=None):
    train_set, test_set = digits
    return train(
        "GatedPixelCNN",
        train_set,
        test_data=test_set,
        model_config={**TINY, **(model_config or {})},
        epochs=epochs,
        batch_size=16,
        lr=3e-3,
        device="cpu",
        seed=seed,
        out=out,
        resume=resume,
        progress=False,
        log=log or (lambda message: None),
    )


def test_training_lowers_held_out_bits_per_dim_and_checkpoints_each_epoch(tmp_path, digits):
    from pixelfast.models import GatedPixelCNN

    torch.manual_seed(0)
    fresh = GatedPixelCNN(in_channels=1, levels=LEVELS, num_classes=10, image_size=(28, 28), **TINY)
    before = bits_per_dim(fresh, digits[1])
    messages = []
    result = train(
        fresh,
        digits[0],
        test_data=digits[1],
        epochs=2,
        batch_size=16,
        lr=3e-3,
        device="cpu",
        out=tmp_path / "m.pt",
        progress=False,
        log=messages.append,
    )
    assert result.model is fresh and len(result.history) == 2
    after = result.history[-1]["test_bits_per_dim"]
    assert after < before and math.isfinite(result.history[-1]["train_bits_per_dim"])
    assert after == pytest.approx(bits_per_dim(fresh, digits[1]))
    assert any("held-out" in m for m in messages)
    saved = load_checkpoint(tmp_path / "m.pt")
    assert saved["epoch"] == 2 and saved["model_name"] == "GatedPixelCNN"
    assert saved["metrics"]["test_bits_per_dim"] == after
    assert [h["epoch"] for h in saved["metrics"]["history"]] == [1, 2]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, digits):
    straight = run(digits, tmp_path / "straight.pt", epochs=2).model
    first = run(digits, tmp_path / "resumed.pt", epochs=1)
    assert load_checkpoint(tmp_path / "resumed.pt")["epoch"] == 1
    messages = []
    resumed = run(digits, tmp_path / "resumed.pt", epochs=2, resume=True, log=messages.append)
    # It continued after epoch 1 rather than starting over (which would also end equal).
    assert any("resuming" in m for m in messages)
    assert [m.split(":")[0] for m in messages if m.startswith("epoch")] == ["epoch 2/2"]
    assert resumed.model is not first.model
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "resumed.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert [h["test_bits_per_dim"] for h in a["metrics"]["history"]] == [
        h["test_bits_per_dim"] for h in b["metrics"]["history"]
    ]
    moments = lambda c: [s["exp_avg"] for s in c["optimizer_state"]["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(moments(a), moments(b)))


def test_resume_edge_cases(tmp_path, digits):
    messages = []
    run(digits, tmp_path / "new.pt", epochs=1, resume=True, log=messages.append)  # nothing to resume yet
    assert any("starting from scratch" in m for m in messages)
    done = run(digits, tmp_path / "new.pt", epochs=1, resume=True, log=messages.append)
    assert done.history and "nothing to do" in messages[-1]
    with pytest.raises(CheckpointError, match="another configuration"):
        train(
            "GatedPixelCNN",
            digits[0],
            model_config={"hidden_channels": 3, "num_layers": 2},
            epochs=2,
            out=tmp_path / "new.pt",
            resume=True,
            progress=False,
            log=lambda m: None,
        )
    with pytest.raises(CheckpointError, match="holds a GatedPixelCNN"):
        train(
            "PixelCNN",
            digits[0],
            model_config={"hidden_channels": 3, "num_layers": 1},
            epochs=2,
            out=tmp_path / "new.pt",
            resume=True,
            progress=False,
            log=lambda m: None,
        )
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        run(digits, tmp_path / "junk.pt", epochs=2, resume=True)


def test_resume_reads_an_option_added_since_as_its_default(tmp_path, digits):
    # A checkpoint written before an option existed (here position_bias and class_position_bias)
    # resumes, as it loads: the missing options read as their defaults.
    run(digits, tmp_path / "old.pt", epochs=1)
    saved = torch.load(tmp_path / "old.pt", weights_only=True)
    for key in ("position_bias", "class_position_bias"):
        del saved["model_config"][key]
    torch.save(saved, tmp_path / "old.pt")
    resumed = run(digits, tmp_path / "old.pt", epochs=2, resume=True)
    assert [entry["epoch"] for entry in resumed.history] == [1, 2]
    with pytest.raises(CheckpointError, match="another configuration"):  # a real difference still counts
        run(digits, tmp_path / "old.pt", epochs=3, resume=True, model_config={"class_dropout": 0.1})


def test_same_seed_same_weights_and_labels_make_it_conditional(tmp_path, digits):
    a = run(digits, None, epochs=1, seed=3).model
    b = run(digits, None, epochs=1, seed=3).model
    c = run(digits, None, epochs=1, seed=4).model
    assert a.num_classes == 10 and a.image_size == (28, 28) and a.levels == LEVELS
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    unconditional = run(digits, None, epochs=1, model_config={"num_classes": None})
    assert unconditional.model.num_classes is None


def test_training_argument_errors(tmp_path, digits):
    with pytest.raises(ValueError, match="epochs"):
        run(digits, None, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        train("GatedPixelCNN", digits[0], lr=0.0)
    with pytest.raises(ValueError, match="resume"):
        train("GatedPixelCNN", digits[0], resume=True)
    with pytest.raises(ValueError, match="unknown model"):
        train("PixelTransformer", digits[0])
    from pixelfast.models import PixelCNN

    two_levels = PixelCNN(in_channels=1, levels=2, hidden_channels=3, num_layers=1)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        train(two_levels, digits[0], progress=False)
    conditional = PixelCNN(in_channels=1, levels=LEVELS, hidden_channels=3, num_layers=1, num_classes=10)
    with pytest.raises(ValueError, match="no labels"):
        train(conditional, digits[0].images, progress=False)


# --- bits/dim ---------------------------------------------------------------------------------


class Uniform(nn.Module):
    """Equal logits everywhere: exactly log2(levels) bits per sub-pixel."""

    in_channels, levels, num_classes, image_size = 3, 5, None, None

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        n, c, h, w = x.shape
        return self.anchor.expand(n, self.levels, c, h, w)


def test_bits_per_dim_of_a_uniform_model_is_log2_levels():
    model = Uniform().train()
    x = torch.randint(0, 5, (7, 3, 2, 3))
    assert bits_per_dim(model, x, batch_size=3) == pytest.approx(math.log2(5))
    assert model.training  # mode restored
    with pytest.raises(ValueError, match=r"0\.\.4"):
        bits_per_dim(model, x + 5)
    with pytest.raises(ValueError, match="3-channel"):
        bits_per_dim(model, x[:, :1])


def test_bits_per_dim_needs_labels_for_a_conditional_model():
    model = Uniform()
    model.num_classes = 2
    x = torch.randint(0, 5, (2, 3, 2, 2))
    with pytest.raises(ValueError, match="class-conditional"):
        bits_per_dim(model, x)
    assert bits_per_dim(model, (x, torch.tensor([0, 1]))) == pytest.approx(math.log2(5))


def test_baseline_is_a_smoothed_per_sub_pixel_histogram():
    train_set = torch.tensor([[[[0, 1]]], [[[0, 1]]]])  # 2 images, 2 sub-pixels, levels 2
    test_set = torch.tensor([[[[0, 0]]]])
    # position 0: counts (2+1, 0+1) -> p(0) = 3/4; position 1: (0+1, 2+1) -> p(0) = 1/4
    expected = -(math.log2(3 / 4) + math.log2(1 / 4)) / 2
    assert baseline_bits_per_dim(train_set, test_set, 2) == pytest.approx(expected)
    digits = mnist_digits("train", levels=LEVELS)
    data = LevelsDataset(digits.images[:200], None, LEVELS)
    assert 0 < baseline_bits_per_dim(data, mnist_digits("test", levels=LEVELS), LEVELS) < math.log2(LEVELS)
    with pytest.raises(ValueError, match="differ in shape"):
        baseline_bits_per_dim(train_set, torch.zeros(1, 1, 1, 3, dtype=torch.long), 2)


def test_checkpoint_of_a_trained_model_reloads_to_the_same_bits_per_dim(tmp_path, digits):
    from pixelfast.checkpoint import load_model

    model = run(digits, tmp_path / "m.pt", epochs=1).model
    again = load_model(tmp_path / "m.pt")
    assert bits_per_dim(again, digits[1]) == pytest.approx(bits_per_dim(model, digits[1]), abs=1e-6)
    save_checkpoint(tmp_path / "copy.pt", again, epoch=1)
    assert load_checkpoint(tmp_path / "copy.pt")["optimizer_state"] is None


def test_an_existing_checkpoint_is_never_replaced_by_a_fresh_run(tmp_path, digits):
    out = tmp_path / "m.pt"
    out.write_bytes(b"an older run")
    with pytest.raises(FileExistsError, match="already exists"):
        run(digits, out, epochs=1)
    assert out.read_bytes() == b"an older run"
    with pytest.raises(ValueError, match="contradict"):
        train("GatedPixelCNN", digits[0], out=out, resume=True, overwrite=True)
    train_set, test_set = digits
    train(
        "GatedPixelCNN",
        train_set,
        model_config=TINY,
        epochs=1,
        batch_size=16,
        device="cpu",
        out=out,
        overwrite=True,
        progress=False,
        log=lambda message: None,
    )
    assert load_checkpoint(out)["epoch"] == 1


def test_divergence_without_a_checkpoint_says_nothing_was_saved(digits):
    from pixelfast.train import TrainingDiverged

    with pytest.raises(TrainingDiverged, match="stopped in epoch 1: .*nothing was saved"):
        train(
            "GatedPixelCNN",
            digits[0],
            test_data=digits[1],
            model_config=TINY,
            epochs=2,
            batch_size=48,
            lr=1e30,
            device="cpu",
            progress=False,
            log=lambda message: None,
        )


def test_bf16_training_runs_under_autocast_and_tracks_float32(digits):
    train_set, test_set = digits
    results = {}
    for precision in ("fp32", "bf16"):
        result = train(
            "GatedPixelCNN",
            train_set,
            test_data=test_set,
            model_config=TINY,
            epochs=2,
            batch_size=16,
            lr=3e-3,
            device="cpu",
            seed=0,
            precision=precision,
            progress=False,
            log=lambda m: None,
        )
        results[precision] = result.history[-1]["test_bits_per_dim"]
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert math.isfinite(results["bf16"])
    assert results["bf16"] == pytest.approx(results["fp32"], rel=0.03)


def test_the_training_step_runs_under_autocast_only_for_mixed_precision(digits, monkeypatch):
    import pixelfast.train as training

    enabled = []
    original = training._loss

    def recording(model, x, labels):
        enabled.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(model, x, labels)

    monkeypatch.setattr(training, "_loss", recording)
    for precision, expected in (("fp32", False), ("bf16", True)):
        enabled.clear()
        train(
            "GatedPixelCNN",
            digits[0],
            model_config=TINY,
            epochs=1,
            batch_size=16,
            device="cpu",
            precision=precision,
            progress=False,
            log=lambda m: None,
        )
        assert enabled and all(flag == expected for flag in enabled)


def test_precision_errors(digits):
    with pytest.raises(ValueError, match="precision must be one of"):
        train("GatedPixelCNN", digits[0], model_config=TINY, device="cpu", precision="fp8", progress=False)
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        train("GatedPixelCNN", digits[0], model_config=TINY, device="cpu", precision="fp16", progress=False)
