"""The ``pixelfast`` command, run in-process through ``cli.main``."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from pixelfast import cli
from pixelfast.checkpoint import load_checkpoint, save_checkpoint
from pixelfast.models import MODELS

TINY_ARGS = ["--hidden-channels", "6", "--num-layers", "2", "--levels", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A class-conditional GatedPixelCNN trained one epoch on 64 digits by the CLI itself."""
    path = tmp_path_factory.mktemp("cli") / "tiny.pt"
    code = cli.main(
        [
            "train",
            "--model",
            "GatedPixelCNN",
            "--data",
            "mnist-digits",
            "--limit",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--lr",
            "0.003",
            "--device",
            "cpu",
            "--seed",
            "0",
            "--out",
            str(path),
            "--no-progress",
            *TINY_ARGS,
        ]
    )
    assert code == 0
    return path


@pytest.fixture
def unconditional(tmp_path):
    from pixelfast.models import PixelCNN

    path = tmp_path / "uncond.pt"
    save_checkpoint(path, PixelCNN(in_channels=1, levels=2, hidden_channels=3, num_layers=1, image_size=(4, 5)))
    return path


def one_error_line(capsys, code, match, expected_code=2):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err), err


def test_train_writes_a_resumable_checkpoint(trained, capsys):
    saved = load_checkpoint(trained)
    assert saved["model_name"] == "GatedPixelCNN" and saved["epoch"] == 1
    assert saved["model_config"]["num_classes"] == 10 and saved["model_config"]["levels"] == 4
    assert saved["metrics"]["training"]["data"] == "mnist-digits"
    assert saved["metrics"]["training"]["limit"] == 64
    code = cli.main(
        [
            "train",
            "--data",
            "mnist-digits",
            "--limit",
            "64",
            "--epochs",
            "1",
            "--out",
            str(trained),
            "--resume",
            "--no-progress",
            *TINY_ARGS,
        ]
    )
    assert code == 0 and "nothing to do" in capsys.readouterr().out


def test_eval_prints_model_and_baseline_bits_per_dim(trained, capsys):
    assert cli.main(["eval", "--checkpoint", str(trained), "--limit", "64"]) == 0
    out = capsys.readouterr().out
    numbers = [float(x) for x in re.findall(r"([0-9.]+) bits/dim", out)]
    assert len(numbers) == 2 and all(0 < x < 2 for x in numbers)  # 4 levels: at most 2 bits
    assert "baseline" in out and "mnist-digits test (64 images)" in out
    assert numbers[0] == pytest.approx(load_checkpoint(trained)["metrics"]["test_bits_per_dim"], abs=1e-4)


def test_sample_writes_a_grid_with_one_row_per_class(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = cli.main(
        [
            "sample",
            "--checkpoint",
            str(trained),
            "--n",
            "20",
            "--out",
            str(out),
            "--seed",
            "1",
            "--size",
            "6",
            "5",
            "--method",
            "naive",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert re.search(r"sampled 20 images of 6x5 in [0-9.]+ s", printed) and "seed 1" in printed
    width, height = Image.open(out).size
    assert (width, height) == (2 * (5 + 2) + 2, 10 * (6 + 2) + 2)  # 10 rows (classes) of 2, padding 2
    again = tmp_path / "again.png"
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(trained),
                "--n",
                "20",
                "--out",
                str(again),
                "--seed",
                "1",
                "--size",
                "6",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert out.read_bytes() == again.read_bytes()  # same seed, same picture


def test_sample_with_listed_labels(trained, tmp_path, capsys):
    out = tmp_path / "threes.png"
    code = cli.main(
        [
            "sample",
            "--checkpoint",
            str(trained),
            "--n",
            "3",
            "--labels",
            "3",
            "--out",
            str(out),
            "--size",
            "4",
            "4",
            "--temperature",
            "0.5",
            "--no-progress",
        ]
    )
    assert code == 0 and Image.open(out).size == (3 * 6 + 2, 6 + 2)
    assert "temperature 0.5" in capsys.readouterr().out


def test_sample_unconditional_square_grid(unconditional, tmp_path):
    out = tmp_path / "u.png"
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(unconditional),
                "--n",
                "4",
                "--out",
                str(out),
                "--seed",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    image = Image.open(out)
    assert image.size == (2 * 7 + 2, 2 * 6 + 2)  # 2 x 2 grid of 4x5 images
    assert set(image.convert("L").tobytes()) <= {0, 127, 128, 255}  # binary levels -> black/white, grey padding


@pytest.mark.parametrize(
    "argv, match",
    [
        (["sample", "--n", "0", "--out", "x.png"], r"--n/--num-images: .*>= 1"),
        (["sample", "--temperature", "0", "--out", "x.png"], "--temperature"),
        (["sample", "--method", "fast", "--out", "x.png"], "--method"),
        (["sample", "--checkpoint", "CKPT", "--labels", "11", "--out", "x.png"], r"0\.\.9"),
        (["sample", "--checkpoint", "CKPT", "--labels", "a,b", "--out", "x.png"], "--labels"),
        (["sample", "--checkpoint", "CKPT", "--out", "missing-folder/x.png"], "does not exist"),
        (["sample", "--checkpoint", "nope.pt", "--out", "x.png"], "does not exist"),
        (["train", "--data", "mnist-digits"], "--out"),
        (["train", "--data", "imagenet", "--out", "m.pt"], "--data"),
        (["train", "--data", "mnist", "--out", "m.pt"], "root"),
        (["train", "--model", "Nope", "--limit", "4", "--out", "m.pt"], "unknown model"),
        (["train", "--limit", "4", "--kernel-size", "3", "--model", "PixelCNN", "--out", "m.pt"], "kernel_size"),
        (["eval", "--checkpoint", "JUNK"], "not a pixelfast checkpoint"),
        (
            ["sample", "--checkpoint", "CKPT", "--labels", "0,1,2", "--n", "2", "--out", "x.png"],
            "fewer than the 3 labels",
        ),
        (["sample", "--checkpoint", "CKPT", "--labels", "1,,2", "--out", "x.png"], "--labels must be"),
        (["sample", "--checkpoint", "CKPT", "--labels", "1,", "--out", "x.png"], "--labels must be"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.jpg"], r"\.png"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.png", "--size", "100000", "100000"], "sub-pixels"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.png", "--n", "1000000000000"], "sub-pixels"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.png", "--device", "cuda:99"], "--device.*CUDA"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.png", "--device", "meta"], "--device.*meta"),
        (["sample", "--checkpoint", "CKPT", "--out", "x.png", "--device", "bogus"], "--device.*bogus"),
        (["eval", "--checkpoint", "CKPT", "--device", "cuda:99"], "--device.*CUDA"),
        (["eval", "--checkpoint", "CKPT", "--device", "bogus"], "--device.*bogus"),
        (["train", "--limit", "4", "--device", "cuda:99", "--out", "m.pt"], "device.*CUDA"),
        (["train", "--limit", "4", "--device", "meta", "--out", "m.pt"], "device 'meta'"),
        (["train", "--limit", "4", "--out", "CKPT"], "already exists"),
        (["train", "--limit", "4", "--out", "CKPT", "--resume", "--overwrite"], "contradict"),
        (
            ["train", "--limit", "4", "--out", "m.pt", "--model-arg", "image_size=[1000000000,1000000000]"],
            "image_size is .*28x28",
        ),
        (["sample", "--checkpoint", ".", "--out", "x.png"], "is a folder"),
        (["frobnicate"], "invalid choice"),
        ([], "choose a command"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv, match, trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "JUNK").write_bytes(b"junk")
    argv = [str(trained) if a == "CKPT" else a for a in argv]
    one_error_line(capsys, cli.main(argv), match)


def test_labels_for_an_unconditional_model(unconditional, tmp_path, capsys):
    code = cli.main(["sample", "--checkpoint", str(unconditional), "--labels", "1", "--out", str(tmp_path / "x.png")])
    one_error_line(capsys, code, "unconditional")


def test_missing_shipped_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "DEFAULT_CHECKPOINT", "not_shipped.pt")
    code = cli.main(["sample", "--n", "1", "--out", str(tmp_path / "x.png")])
    one_error_line(capsys, code, "shipped default model")


def test_sample_without_checkpoint_uses_the_shipped_model(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "default_checkpoint", lambda: trained)  # stands in for the packaged file
    out = tmp_path / "default.png"
    assert cli.main(["sample", "--n", "10", "--size", "3", "3", "--out", str(out), "--no-progress"]) == 0
    assert out.is_file() and "sampled 10 images of 3x3" in capsys.readouterr().out
    assert cli.main(["eval", "--limit", "8"]) == 0
    assert "the shipped default model" in capsys.readouterr().out


def test_train_on_a_png_folder(tmp_path, capsys):
    import numpy as np

    rng = np.random.RandomState(0)
    for i in range(12):
        Image.fromarray(rng.randint(0, 256, (4, 6, 3)).astype(np.uint8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "folder.pt"
    code = cli.main(
        [
            "train",
            "--model",
            "PixelCNN",
            "--data",
            "folder",
            "--root",
            str(tmp_path),
            "--channels",
            "1",
            "--levels",
            "4",
            "--hidden-channels",
            "3",
            "--num-layers",
            "1",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and "held-out" in capsys.readouterr().out
    config = load_checkpoint(out)["model_config"]
    assert config["in_channels"] == 1 and config["num_classes"] is None and list(config["image_size"]) == [4, 6]


def test_device_typos_are_not_reported_as_corrupt_checkpoints(trained, tmp_path, capsys):
    for device in ("cuda:99", "meta", "bogus"):
        code = cli.main(["sample", "--checkpoint", str(trained), "--out", str(tmp_path / "x.png"), "--device", device])
        err = capsys.readouterr().err
        assert code == 2 and "--device" in err and "corrupt" not in err and "checkpoint" not in err, err


def test_huge_requests_fail_in_well_under_a_second(trained, tmp_path, capsys):
    import time

    big = load_checkpoint(trained)
    big["model_config"]["num_layers"] = 10**6
    torch.save(big, tmp_path / "big.pt")
    for argv in (["--n", "1000000000000"], ["--checkpoint", str(tmp_path / "big.pt")]):
        started = time.perf_counter()
        code = cli.main(["sample", "--checkpoint", str(trained), *argv, "--out", str(tmp_path / "x.png")])
        assert time.perf_counter() - started < 5.0  # a noisy machine, not a speed claim
        one_error_line(capsys, code, "sub-pixels|num_layers=1000000")


def test_train_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    out = tmp_path / "notes.pt"
    out.write_text("not a checkpoint: my notes")
    argv = ["train", "--limit", "16", "--batch-size", "16", "--out", str(out), "--no-progress", *TINY_ARGS]
    one_error_line(capsys, cli.main(argv), "already exists.*overwrite")
    assert out.read_text() == "not a checkpoint: my notes"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert load_checkpoint(out)["epoch"] == 1


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.pt"
    argv = ["train", "--limit", "16", "--batch-size", "16", "--out", str(out), "--no-progress", *TINY_ARGS]
    assert cli.main(argv) == 0
    capsys.readouterr()
    good = load_checkpoint(out)
    code = cli.main([*argv, "--resume", "--epochs", "4", "--lr", "1e30"])
    one_error_line(capsys, code, "stopped in epoch 2: .*lower the learning rate .*keeps epoch 1", expected_code=1)
    kept = load_checkpoint(out)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["model_state"][k], v) for k, v in good["model_state"].items())


def test_broken_checkpoints_and_runtime_failures_are_one_line(trained, tmp_path, capsys):
    ckpt = load_checkpoint(trained)
    nan = {
        **ckpt,
        "model_state": {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ckpt["model_state"].items()
        },
    }
    torch.save(nan, tmp_path / "nan.pt")
    torch.save({**ckpt, "metrics": "fine"}, tmp_path / "metrics.pt")
    for name, words in (("nan.pt", "NaN"), ("metrics.pt", "metrics must be a dict")):
        for command in (["sample", "--out", str(tmp_path / "x.png")], ["eval", "--limit", "4"]):
            code = cli.main([*command, "--checkpoint", str(tmp_path / name)])
            one_error_line(capsys, code, words)
    # Too big to allocate: the run fails (exit 1) with torch's one-line reason, no traceback.
    code = cli.main(
        [
            "train",
            "--limit",
            "4",
            "--hidden-channels",
            "1000000",
            "--num-layers",
            "2",
            "--out",
            str(tmp_path / "huge.pt"),
            "--no-progress",
        ]
    )
    one_error_line(capsys, code, "allocate", expected_code=1)


def test_eval_writes_per_image_scores(trained, tmp_path, capsys):
    import csv
    import math

    out = tmp_path / "scores.csv"
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(trained),
                "--limit",
                "10",
                "--per-image",
                str(out),
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    printed = float(re.search(r"([0-9.]+) bits/dim", capsys.readouterr().out).group(1))
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(range(10))
    assert all(r["label"].isdigit() for r in rows)
    nats = [float(r["log_prob_nats"]) for r in rows]
    for r, value in zip(rows, nats):
        assert float(r["bits_per_dim"]) == pytest.approx(-value / (28 * 28 * math.log(2)))
    assert sum(float(r["bits_per_dim"]) for r in rows) / 10 == pytest.approx(printed, abs=1e-4)
    code = cli.main(["eval", "--checkpoint", str(trained), "--per-image", str(tmp_path / "no" / "s.csv")])
    one_error_line(capsys, code, "--per-image does not exist")


def test_model_options_reach_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "options.pt"
    code = cli.main(
        [
            "train",
            "--limit",
            "16",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--no-progress",
            "--hidden-channels",
            "6",
            "--num-layers",
            "2",
            "--levels",
            "4",
            "--unconditional",
            "--head-channels",
            "4",
            "--model-arg",
            "kernel_size=5",
            "--model-arg",
            "first-kernel-size=5",
        ]
    )
    assert code == 0
    config = load_checkpoint(out)["model_config"]
    assert config["num_classes"] is None and config["head_channels"] == 4
    assert config["kernel_size"] == 5 and config["first_kernel_size"] == 5
    code = cli.main(["train", "--limit", "16", "--out", str(tmp_path / "x.pt"), "--model-arg", "kernel_size"])
    one_error_line(capsys, code, "KEY=VALUE")


def test_model_arg_help_lists_each_models_options(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, cls in MODELS.items():
        assert f"{name}: {', '.join(cls.Config.names())}" in text


def test_eval_split_and_device(trained, capsys):
    assert (
        cli.main(
            [
                "eval",
                "--checkpoint",
                str(trained),
                "--split",
                "train",
                "--device",
                "cpu",
                "--limit",
                "8",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mnist-digits train (8 images)" in out and "fitted on mnist-digits train (4500 images)" in out


def test_sample_device_and_nrow(unconditional, tmp_path):
    out = tmp_path / "rows.png"
    assert (
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(unconditional),
                "--n",
                "10",
                "--nrow",
                "5",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--seed",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert Image.open(out).size == (5 * 7 + 2, 2 * 6 + 2)  # 5 images of 4x5 per row, 2 rows


def test_python_dash_m_pixelfast(unconditional, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelfast",
            "sample",
            "--checkpoint",
            str(unconditional),
            "--n",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and out.is_file() and "sampled 2 images" in done.stdout, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pixelfast", "sample", "--n", "0", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--n" in done.stderr, done.stderr


def test_the_shipped_model_loads_scores_and_samples():
    import importlib.resources

    import pixelfast
    from pixelfast.checkpoint import load_model
    from pixelfast.data import mnist_digits

    resource = cli.default_checkpoint()
    assert resource.is_file(), "pixelfast/assets/default_gated_mnist.pt is not installed"
    with importlib.resources.as_file(resource) as path:
        checkpoint = load_checkpoint(path)  # CRC, format, finite weights
        model = load_model(path)
    assert checkpoint["model_name"] == "GatedPixelCNN" and model.levels == 256
    assert model.num_classes == 10 and model.in_channels == 1 and tuple(model.image_size) == (28, 28)
    held_out = mnist_digits("test", levels=256).subset(range(32))
    # The per-sub-pixel baseline is 1.74 bits/dim on these digits; the trained model is far below.
    assert pixelfast.bits_per_dim(model, held_out) < 1.4
    images = pixelfast.sample(model, 2, labels=[3, 7], generator=0, progress=False)
    assert images.shape == (2, 1, 28, 28) and images.dtype == torch.uint8


def test_sample_with_guidance(tmp_path, capsys):
    out = tmp_path / "guided.png"  # the shipped model was trained with class_dropout
    assert cli.main(["sample", "--n", "10", "--guidance", "1", "--out", str(out), "--no-progress"]) == 0
    assert out.is_file() and "guidance 1" in capsys.readouterr().out


def test_sample_guidance_refusals(trained, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    code = cli.main(["sample", "--checkpoint", str(trained), "--n", "10", "--guidance", "1", "--out", out])
    one_error_line(capsys, code, "class_dropout")  # trained without a "no class" label
    code = cli.main(["sample", "--n", "10", "--guidance", "-1", "--out", out])
    assert code == 2 and "must be a finite number >= 0" in capsys.readouterr().err


def test_sample_in_bf16(trained, tmp_path, capsys):
    out = tmp_path / "bf16.png"
    args = ["sample", "--checkpoint", str(trained), "--n", "10", "--size", "3", "3", "--no-progress"]
    assert cli.main([*args, "--seed", "1", "--precision", "bf16", "--out", str(out)]) == 0
    assert out.is_file() and "precision bf16" in capsys.readouterr().out
    code = cli.main([*args, "--precision", "bf16", "--method", "naive", "--out", str(out)])
    one_error_line(capsys, code, "precision='bf16' is the cached engine's")
    code = cli.main([*args, "--precision", "fp16", "--out", str(out)])
    one_error_line(capsys, code, "invalid choice: 'fp16'")
