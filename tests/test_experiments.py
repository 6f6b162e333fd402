"""``pixelfast.experiments`` and ``pixelfast experiment``: the super-resolution measurements and the
mode-averaging experiment, on tiny models (the real runs are in the README)."""

from __future__ import annotations

import math

import pytest
import torch

from pixelfast import cli
from pixelfast.checkpoint import save_checkpoint
from pixelfast.data import downsample, mnist_digits
from pixelfast.experiments import (
    MODE_AVERAGING_MODELS,
    accuracy,
    class_agreement,
    measure_super_resolution,
    mode_averaging,
    one_quadrant,
    point_prediction,
    quadrant_digits,
    train_digit_classifier,
    train_logistic_classifier,
)
from pixelfast.models import GatedPixelCNN, SuperResolution

TINY_PRIOR = {"hidden_channels": 4, "num_layers": 1, "first_kernel_size": 3}


def tiny(objective, levels=4, seed=0):
    torch.manual_seed(seed)
    prior_config = TINY_PRIOR if objective == "joint" else None
    return SuperResolution(
        1,
        levels,
        4,
        prior_config=prior_config,
        conditioning_channels=4,
        conditioning_blocks=1,
        objective=objective,
        image_size=(28, 28),
    ).eval()


# --- mode averaging: the data and the count ----------------------------------------------------


def test_quadrant_digits_puts_each_downsampled_digit_in_one_corner():
    digits = mnist_digits("train").images[:200]
    canvases, corners = quadrant_digits(digits, generator=0)
    assert canvases.shape == digits.shape and canvases.dtype == digits.dtype
    assert 70 < corners.sum().item() < 130  # about half in each corner
    small = downsample(digits, 2)
    for canvas, corner, digit in zip(canvases, corners, small):
        placed = canvas[:, :14, :14] if corner == 0 else canvas[:, 14:, 14:]
        assert torch.equal(placed, digit) and canvas.sum() == digit.sum()  # nothing anywhere else
    again, same_corners = quadrant_digits(digits, generator=0)
    assert torch.equal(again, canvases) and torch.equal(same_corners, corners)
    assert one_quadrant(canvases).all()
    with pytest.raises(ValueError, match=r"\[N, 1, 28, 28\] digits"):
        quadrant_digits(digits[:, :, :14])


def test_one_quadrant_counts_ink_in_exactly_one_of_the_two_corners():
    images = torch.zeros(6, 1, 4, 4)
    images[0, 0, 0, 0] = 100  # top-left only
    images[1, 0, 3, 3] = 100  # bottom-right only
    images[2, 0, 0, 0], images[2, 0, 3, 3] = 100, 100  # both: the averaged image
    images[3, 0, 0, 0], images[3, 0, 3, 3] = 100, 9  # 9 / 109 < 10% in the other corner
    images[4, 0, 0, 0], images[4, 0, 3, 3] = 100, 12  # 12 / 112 > 10%
    # images[5] is blank
    assert one_quadrant(images).tolist() == [True, True, False, True, False, False]
    assert one_quadrant(images, threshold=0.2).tolist() == [True, True, False, True, True, False]
    with pytest.raises(ValueError, match="H and W even"):
        one_quadrant(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="threshold"):
        one_quadrant(images, threshold=1.5)


def test_mode_averaging_trains_draws_and_counts():
    digits = mnist_digits("train").images[:8]
    result = mode_averaging(
        digits, epochs=1, count=5, prior_config=TINY_PRIOR, batch_size=8, conditioning_channels=4, progress=False
    )
    assert list(result.fractions) == list(MODE_AVERAGING_MODELS) == list(result.draws)
    assert result.data_fraction == 1.0
    for name, images in result.draws.items():
        assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 255
        assert result.fractions[name] == one_quadrant(images).double().mean().item()
        assert result.blank[name] == (images.flatten(1).sum(1) == 0).double().mean().item()
    l2 = result.draws[MODE_AVERAGING_MODELS[0]]
    assert (l2 == l2[:1]).all()  # the regression's draw is its one prediction
    with pytest.raises(ValueError, match="must be >= 1"):
        mode_averaging(digits, epochs=0)


# --- the classifier and the point predictions ---------------------------------------------------


def test_logistic_classifier_reads_the_digits():
    train, test = mnist_digits("train"), mnist_digits("test")
    classifier = train_logistic_classifier(train.images, train.labels)
    held_out = accuracy(classifier, test.images.long(), test.labels)
    assert 0.85 < held_out < 0.95  # a linear model on the pixels: good, not perfect
    linear = classifier.inner[1]
    logits = test.images[:5].flatten(1).float() / 255 @ linear.weight.T + linear.bias  # by hand
    torch.testing.assert_close(classifier(test.images[:5].long()), logits)
    with pytest.raises(ValueError, match="digits 0..9"):
        train_logistic_classifier(train.images[:4], torch.tensor([0, 1, 2, 10]))
    for bad in (dict(steps=0), dict(weight_decay=-1.0), dict(weight_decay=float("nan"))):
        with pytest.raises(ValueError, match="steps must be >= 1 and weight_decay >= 0"):
            train_logistic_classifier(train.images[:4], train.labels[:4], **bad)


def test_class_agreement_counts_samples_the_classifier_labels_as_asked(capsys, tmp_path):
    torch.manual_seed(0)
    model = GatedPixelCNN(1, 4, hidden_channels=4, num_layers=2, num_classes=10, image_size=(28, 28))
    train = mnist_digits("train", 4)
    classifier = train_logistic_classifier(train.images[:500], train.labels[:500], levels=4, steps=20)
    result = class_agreement(model, classifier, count=20, temperatures=(1.0, 0.5), seed=3, progress=False)
    for temperature in (1.0, 0.5):
        drawn = result.samples[temperature]
        asked = torch.arange(20) % 10
        hits = (classifier(drawn.long()).argmax(1) == asked).float().mean().item()
        assert result.fractions[temperature] == pytest.approx(hits)
    assert not torch.equal(result.samples[1.0], result.samples[0.5])
    with pytest.raises(ValueError, match="num_classes=10"):
        class_agreement(GatedPixelCNN(1, 4, hidden_channels=4, num_layers=1), classifier, count=2)
    # the command, on the shipped model
    code = cli.main(
        ["experiment", "class-agreement", "--count", "10", "--no-progress", "--out", str(tmp_path / "a.png")]
    )
    out = capsys.readouterr().out
    assert code == 0 and "of 10 samples show the asked digit" in out and (tmp_path / "a.png").exists()
    save_checkpoint(tmp_path / "u.pt", GatedPixelCNN(1, 4, hidden_channels=4, num_layers=1, image_size=(28, 28)))
    assert cli.main(["experiment", "class-agreement", "--checkpoint", str(tmp_path / "u.pt")]) == 2
    assert "class-conditional" in capsys.readouterr().err


def test_digit_classifier_learns_the_digits():
    train, test = mnist_digits("train"), mnist_digits("test")
    model = train_digit_classifier(train.images[:1000], train.labels[:1000], epochs=3, progress=False)
    assert accuracy(model, test.images, test.labels) > 0.8  # chance is 0.1
    assert accuracy(model, torch.zeros(10, 1, 28, 28), torch.arange(10)) == pytest.approx(0.1)  # one class for blank
    with pytest.raises(ValueError, match="digits 0..9"):
        train_digit_classifier(train.images[:4], torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="levels in 0..255"):
        train_digit_classifier(train.images[:4].long() + 255, train.labels[:4])


def test_point_prediction():
    low = torch.randint(0, 4, (3, 1, 7, 7), generator=torch.Generator().manual_seed(0))
    independent, l2 = tiny("independent"), tiny("l2")
    logits = independent.conditioning_logits(low)
    assert torch.equal(point_prediction(independent, low), logits.argmax(1))
    expected = (logits.softmax(1) * torch.arange(4.0).view(1, 4, 1, 1, 1)).sum(1)
    mean = point_prediction(independent, low, mean=True)
    assert torch.equal(mean, expected.round().long()) and mean.shape == (3, 1, 28, 28)
    assert point_prediction(l2, low).shape == (3, 1, 28, 28)
    with pytest.raises(TypeError, match="SuperResolution"):
        point_prediction(GatedPixelCNN(1, 4, hidden_channels=3, num_layers=1), low)


# --- the super-resolution measurements ----------------------------------------------------------


def test_measure_super_resolution_table_and_grid():
    train, test = mnist_digits("train", levels=4), mnist_digits("test", levels=4)
    unconditional = GatedPixelCNN(1, 4, hidden_channels=3, num_layers=1, num_classes=10).eval()
    report = measure_super_resolution(
        tiny("joint"),
        tiny("l2"),
        tiny("independent"),
        unconditional,
        test.images[:6],
        test.labels[:6],
        train.images[:64],
        train.labels[:64],
        grid_count=2,
        grid_samples=3,
        progress=False,
    )
    assert len(report.bits_per_dim) == 4 and all(0 < v < 10 for v in report.bits_per_dim.values())
    names = [row.name for row in report.rows]
    assert names[:4] == ["truth", "L2 regression", "independent softmax, mean", "independent softmax, sample (T=1)"]
    assert names[4:] == [f"super-resolution sample (T={t})" for t in ("1", "0.9", "0.8")]
    truth = report.rows[0]
    assert math.isinf(truth.psnr) and truth.ssim == pytest.approx(1.0) and truth.consistency == 0.0
    for row in report.rows[1:]:
        assert math.isfinite(row.psnr) and -1 <= row.ssim <= 1 and row.consistency >= 0 and 0 <= row.accuracy <= 1
    # columns: low-res, L2, independent, 3 samples, truth; 2 digits
    assert report.grid_columns == 7 and report.grid.shape == (14, 1, 28, 28)
    assert torch.equal(report.grid[6], test.images[0].long()) and torch.equal(report.grid[13], test.images[1].long())
    assert report.count == 6 and "| output (6 held-out digits) |" in report.table()
    assert "| super-resolution (A + B) |" in report.table() and "| truth | inf | 1.0000 | 0.000 |" in report.table()
    with pytest.raises(ValueError, match="objective='l2'"):
        measure_super_resolution(
            tiny("joint"),
            tiny("independent"),
            tiny("independent"),
            None,
            test.images[:2],
            test.labels[:2],
            train.images[:8],
            train.labels[:8],
            progress=False,
        )


# --- the command line -----------------------------------------------------------------------------


def test_cli_experiment_super_resolution(tmp_path, capsys):
    paths = {}
    for objective in ("joint", "l2", "independent"):
        paths[objective] = tmp_path / f"{objective}.pt"
        save_checkpoint(paths[objective], tiny(objective))
    gated = tmp_path / "gated.pt"
    save_checkpoint(gated, GatedPixelCNN(1, 4, hidden_channels=3, num_layers=1, image_size=(28, 28)))
    out = tmp_path / "table.png"
    code = cli.main(
        [
            "experiment",
            "super-resolution",
            "--checkpoint",
            str(paths["joint"]),
            "--l2",
            str(paths["l2"]),
            "--independent",
            str(paths["independent"]),
            "--unconditional",
            str(gated),
            "--count",
            "4",
            "--classifier-epochs",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "| super-resolution sample (T=0.8) |" in printed and "(4 held-out digits, seed 0" in printed


def test_cli_experiment_mode_averaging(tmp_path, capsys):
    out = tmp_path / "modes.png"
    code = cli.main(
        [
            "experiment",
            "mode-averaging",
            "--limit",
            "8",
            "--epochs",
            "1",
            "--count",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file(), printed
    assert "training canvases (8, one digit each) with ink in exactly one quadrant: 1.000" in printed
    for name in MODE_AVERAGING_MODELS:
        assert f"{name}: " in printed and "of 3 draws" in printed and "are blank" in printed


def test_cli_experiment_errors_are_one_line(tmp_path, capsys):
    joint = tmp_path / "joint.pt"
    save_checkpoint(joint, tiny("joint"))
    cases = [
        (["experiment"], "choose an experiment"),
        (["experiment", "mode-averaging", "--out", str(tmp_path / "no" / "x.png")], "for --out does not exist"),
        (
            [
                "experiment",
                "super-resolution",
                "--checkpoint",
                str(joint),
                "--l2",
                str(tmp_path / "none.pt"),
                "--independent",
                "x.pt",
                "--out",
                str(tmp_path / "x.png"),
            ],
            "none.pt",
        ),
    ]
    for arguments, message in cases:
        code = cli.main(arguments)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
