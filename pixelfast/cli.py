"""The ``pixelfast`` command: ``train``, ``eval``, ``sample``, ``upscale`` and ``experiment``.

Mistakes in the arguments (a bad value, a missing file, a checkpoint that is not one) end with
one line on stderr and exit code 2; failures while running (training that diverges, memory that
runs out, any other runtime error) with one line and exit code 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import math
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

DEFAULT_CHECKPOINT = "default_gated_mnist.pt"  # shipped in pixelfast/assets/
DEFAULT_SR_CHECKPOINT = "default_sr_digits.pt"  # shipped in pixelfast/assets/: 7x7 -> 28x28 digits
# its baselines, the conditioning network trained alone (weights only), for `upscale --demo`
DEFAULT_SR_BASELINES = {"l2": "default_sr_l2_digits.pt", "independent": "default_sr_independent_digits.pt"}
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line; printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage block and exit
        raise UsageError(f"{self.prog}: error: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError(
                f"{parser.prog}: error: choose a command: train, eval, sample, upscale or experiment (see --help)"
            )
        return args.run(args)
    except UsageError as error:
        _print_error(str(error))
        return EXIT_USAGE
    except (ValueError, TypeError, OSError, NotImplementedError) as error:
        # Includes CheckpointError (a ValueError) and FileNotFoundError (an OSError).
        _print_error(f"{_prefix(args)}: error: {error}")
        return EXIT_USAGE
    except (RuntimeError, ArithmeticError, MemoryError) as error:
        # The run itself failed: TrainingDiverged (an ArithmeticError), an allocation torch refused.
        _print_error(f"{_prefix(args)}: error: {str(error) or type(error).__name__}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _print_error("pixelfast: interrupted")
        return 130


def _model_options() -> str:
    """Each model's options, read off its config class (for --model-arg's help)."""
    from pixelfast.models import MODELS

    return "; ".join(f"{name}: {', '.join(cls.Config.names())}" for name, cls in MODELS.items())


def _prefix(args) -> str:
    command = getattr(args, "command", None)
    return f"pixelfast {command}" if command else "pixelfast"


def _print_error(message: str) -> None:
    print(" ".join(message.split()), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pixelfast", description="Train, evaluate and sample autoregressive pixel models.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    # --- train ---
    p = commands.add_parser("train", help="train a model and write a checkpoint after every epoch")
    p.add_argument(
        "--model",
        default="GatedPixelCNN",
        help="PixelCNN, GatedPixelCNN or PixelRNN (with --model-arg kind=row or kind=diagonal), "
        "PixelCNNPlusPlus (its defaults are the paper's CIFAR-10 model; smaller with --model-arg "
        "nr_resnet=1, nr_filters=32, nr_logistic_mix=5, dropout=0.5), or "
        "SuperResolution (trained on each image and its downsampled self; --model-arg scale=4, "
        "objective=joint|independent|l2, prior=GatedPixelCNN, prior_config='{\"hidden_channels\": 32}'), "
        "or the latent-variable baselines ConvVAE (trained on its ELBO: bits/dim are an upper bound) and "
        "DCGAN (no likelihood: its loss is reported), both with --hidden-channels and --model-arg "
        "latent_dim=16 (default: %(default)s)",
    )
    _add_data_arguments(p, default_data="mnist-digits")
    p.add_argument("--levels", type=_int_at_least(2), default=256, help="intensity levels, 2..256 (2 = binarised)")
    p.add_argument("--epochs", type=_int_at_least(1), default=1)
    p.add_argument("--batch-size", type=_int_at_least(1), default=64)
    p.add_argument("--lr", type=_positive_float, default=1e-3)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", required=True, help="checkpoint path, rewritten (atomically) after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --out where it stopped")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out with a fresh run")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32, or mixed precision under torch.autocast: bf16 (CPU or GPU), fp16 (GPU)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CHECKPOINT",
        help="start a fresh run from this checkpoint's weights (a model of the same kind; "
        "added Gated PixelCNN layers start as identities)",
    )
    p.add_argument(
        "--augment-shift",
        type=_int_at_least(0),
        default=0,
        metavar="K",
        help="shift each training image by a random -K..K pixels in each direction (default: 0)",
    )
    p.add_argument("--hidden-channels", type=_int_at_least(1))
    p.add_argument("--num-layers", type=_int_at_least(0))
    p.add_argument("--kernel-size", type=_int_at_least(1))
    p.add_argument("--head-channels", type=_int_at_least(1))
    p.add_argument("--unconditional", action="store_true", help="ignore the data's class labels")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other model option; VALUE is parsed as JSON when it can be. The options: " + _model_options(),
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_train)

    # --- eval ---
    p = commands.add_parser("eval", help="held-out bits/dim of a checkpoint, next to a per-pixel baseline")
    p.add_argument("--checkpoint", default=None, help="default: the shipped model")
    _add_data_arguments(p, default_data=None)
    p.add_argument("--split", default="test", choices=["train", "test", "all"])
    p.add_argument("--batch-size", type=_int_at_least(1), default=256)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--per-image",
        default=None,
        metavar="CSV",
        help="also write each image's score to this CSV file: index, label, log_prob_nats, bits_per_dim",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_eval)

    # --- sample ---
    p = commands.add_parser("sample", help="draw images into a PNG grid")
    p.add_argument("--checkpoint", default=None, help="default: the shipped class-conditional MNIST model")
    p.add_argument(
        "--n",
        "--num-images",
        dest="n",
        type=_int_at_least(1),
        default=64,
        help="number of images (default: %(default)s); under torchrun write --num-images "
        "(torchrun takes --n for its own)",
    )
    p.add_argument("--out", required=True, help="PNG file to write (its name must end in .png)")
    p.add_argument(
        "--labels",
        default=None,
        help="class-conditional models: 'all' (default; one row per class) or a list like 3 or 0,1,2 "
        "(one row per listed label)",
    )
    p.add_argument("--temperature", type=_positive_float, default=1.0)
    p.add_argument(
        "--guidance",
        type=_non_negative_float,
        default=0.0,
        help="classifier-free guidance weight w (a model trained with class_dropout; default: 0, none)",
    )
    p.add_argument("--seed", type=_int_at_least(0), default=None, help="default: a fresh random seed (printed)")
    p.add_argument("--method", default="auto", choices=["auto", "naive", "cached"])
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "tf32"],
        help="bf16: the engine's convolutions in bfloat16 with fp32 sums (fast on CPUs with AMX; on a "
        "GPU, tensor cores); tf32: the same in tf32 (GPU only); default: fp32, the naive sampler's images",
    )
    p.add_argument("--size", type=_int_at_least(1), nargs=2, metavar=("H", "W"), default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--nrow", type=_int_at_least(1), default=None, help="images per grid row")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_sample)

    # --- upscale ---
    p = commands.add_parser("upscale", help="enlarge low-resolution images with a super-resolution model")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="a SuperResolution checkpoint (default: the shipped 7x7 -> 28x28 digits model)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", default=None, help="a low-resolution PNG to enlarge")
    source.add_argument(
        "--demo",
        action="store_true",
        help="enlarge held-out shipped digits, downsampled by the model's scale; the grid "
        "shows each input, its samples and the truth",
    )
    p.add_argument("--count", type=_int_at_least(1), default=8, help="--demo: how many digits (default: %(default)s)")
    p.add_argument(
        "--l2",
        default=None,
        help="a column of this objective=l2 baseline's predictions (--demo with the shipped model: the shipped one)",
    )
    p.add_argument(
        "--independent",
        default=None,
        help="a column of this objective=independent baseline's samples "
        "(--demo with the shipped model: the shipped one)",
    )
    p.add_argument("--n", type=_int_at_least(1), default=4, help="samples per input (default: %(default)s)")
    p.add_argument("--temperature", type=_positive_float, default=0.9, help="default: %(default)s")
    p.add_argument("--seed", type=_int_at_least(0), default=None, help="default: a fresh random seed (printed)")
    p.add_argument("--method", default="auto", choices=["auto", "naive", "cached"])
    p.add_argument("--out", required=True, help="PNG grid to write: one row per input")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_upscale)

    # --- experiment ---
    p = commands.add_parser("experiment", help="the super-resolution measurements and the mode-averaging experiment")
    experiments = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    e = experiments.add_parser(
        "super-resolution",
        help="held-out digits 7x7 -> 28x28: bits/dim, PSNR, SSIM, consistency and a classifier's accuracy for the "
        "super-resolution model against the L2 and independent-softmax baselines; a PNG grid",
    )
    e.add_argument("--checkpoint", default=None, help="the SuperResolution model (default: the shipped one)")
    e.add_argument(
        "--l2",
        default=None,
        help="checkpoint of the same conditioning network trained with objective=l2 (default: the shipped one)",
    )
    e.add_argument(
        "--independent",
        default=None,
        help="checkpoint of the same conditioning network trained with "
        "objective=independent (default: the shipped one)",
    )
    e.add_argument(
        "--unconditional",
        default=None,
        help="a model of the 28x28 digits alone, for its bits/dim (default: the shipped Gated PixelCNN)",
    )
    e.add_argument(
        "--count", type=_int_at_least(1), default=500, help="held-out digits measured (default: all %(default)s)"
    )
    e.add_argument(
        "--classifier-epochs",
        type=_int_at_least(1),
        default=4,
        help="epochs of the digit classifier on the 4,500 training digits (default: %(default)s)",
    )
    e.add_argument("--seed", type=_int_at_least(0), default=0)
    e.add_argument("--out", required=True, help="PNG grid: low-res | L2 | independent | samples (T=0.9) | truth")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(run=_run_experiment_super_resolution)
    e = experiments.add_parser(
        "mode-averaging",
        help="one 14x14 digit in the top-left or bottom-right quadrant, a constant input: how often do the L2 "
        "regression, the independent softmax and a PixelCNN draw ink in exactly one quadrant",
    )
    e.add_argument(
        "--epochs", type=_int_at_least(1), default=3, help="training epochs of the two baselines (default: %(default)s)"
    )
    e.add_argument(
        "--prior-epochs",
        type=_int_at_least(1),
        default=None,
        help="training epochs of the PixelCNN (default: --epochs)",
    )
    e.add_argument(
        "--count", type=_int_at_least(1), default=1000, help="images drawn from each model (default: %(default)s)"
    )
    e.add_argument("--limit", type=_int_at_least(1), default=None, help="use only the first N training digits")
    e.add_argument(
        "--hidden-channels",
        type=_int_at_least(1),
        default=16,
        help="the PixelCNN's (Gated PixelCNN prior's) width (default: %(default)s)",
    )
    e.add_argument("--num-layers", type=_int_at_least(1), default=8, help="its layers (default: %(default)s)")
    e.add_argument("--seed", type=_int_at_least(0), default=0)
    e.add_argument("--out", required=True, help="PNG: one row of draws per model")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(run=_run_experiment_mode_averaging)
    e = experiments.add_parser(
        "class-agreement",
        help="class-conditional samples of a digits model: how many does a logistic-regression classifier "
        "(trained on the 4,500 training digits) label as the asked digit",
    )
    e.add_argument(
        "--checkpoint", default=None, help="a class-conditional 28x28 digits model (default: the shipped one)"
    )
    e.add_argument(
        "--count", type=_int_at_least(1), default=1000, help="samples per temperature (default: %(default)s)"
    )
    e.add_argument("--temperature", type=_positive_float, nargs="+", default=[1.0], help="default: 1.0")
    e.add_argument(
        "--guidance", type=_non_negative_float, default=0.0, help="classifier-free guidance weight (default: 0)"
    )
    e.add_argument("--seed", type=_int_at_least(0), default=0)
    e.add_argument("--out", default=None, help="PNG grid of the first 100 samples at the first temperature")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(run=_run_experiment_class_agreement)
    e = experiments.add_parser(
        "generative-models",
        help="the seeds' comparison on the shipped digits: the shipped Gated PixelCNN, a Diagonal BiLSTM, a "
        "PixelCNN, a ConvVAE and a DCGAN (trained here into --work-dir): parameters, training time, bits/dim, "
        "images per second, classifier agreement and Fréchet distance; one PNG",
    )
    e.add_argument(
        "--work-dir",
        default="generative-models",
        help="where the models are trained; a second run resumes, or reuses finished ones (default: %(default)s)",
    )
    e.add_argument("--count", type=_int_at_least(20), default=1000, help="samples per model (default: %(default)s)")
    e.add_argument("--seed", type=_int_at_least(0), default=0)
    e.add_argument("--device", default=None, help="where to train and sample (default: cuda if available)")
    e.add_argument(
        "--limit", type=_int_at_least(1), default=None, help="train on the first N digits only (a quick try)"
    )
    e.add_argument("--out", required=True, help="PNG: real digits, then one row per model (two per class)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(run=_run_experiment_generative_models)
    p.set_defaults(run=_run_experiment_missing)
    return parser


def _add_data_arguments(p: argparse.ArgumentParser, default_data: str | None) -> None:
    from pixelfast.data import DATASET_NAMES

    p.add_argument(
        "--data",
        default=default_data,
        choices=DATASET_NAMES,
        help="dataset" + (" (default: %(default)s)" if default_data else " (default: the checkpoint's)"),
    )
    p.add_argument("--root", default=None, help="data folder (torchvision datasets, PNG folder)")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None, help="PNG folders: 1 grey, 3 RGB")
    p.add_argument(
        "--limit",
        type=_int_at_least(1),
        default=None,
        help="use only the first N images (train: of each split; eval: of the evaluated split)",
    )


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# --- commands ---------------------------------------------------------------------------------


def _run_train(args) -> int:
    from pixelfast import distributed
    from pixelfast.device import check_device
    from pixelfast.models import MODELS
    from pixelfast.train import default_device, train

    config: dict = {}
    for key in ("hidden_channels", "num_layers", "kernel_size", "head_channels"):
        if getattr(args, key) is not None:
            accepted = MODELS[args.model].Config.names() if args.model in MODELS else (key,)
            if key not in accepted:
                raise UsageError(
                    f"pixelfast train: error: {args.model} has no {key} option (--{key.replace('_', '-')}); "
                    f"its options: {', '.join(accepted)}"
                )
            config[key] = getattr(args, key)
    if args.unconditional:
        config["num_classes"] = None
    for item in args.model_arg:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"pixelfast train: error: --model-arg expects KEY=VALUE, got {item!r}")
        try:
            config[key.replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            config[key.replace("-", "_")] = text
    device = distributed.rank_device(check_device(args.device, "--device") if args.device else default_device())
    with distributed.launched(device):
        result = train(
            args.model,
            args.data,
            root=args.root,
            levels=args.levels,
            download=args.download,
            channels=args.channels,
            limit=args.limit,
            model_config=config,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            device=device,
            seed=args.seed,
            out=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            precision=args.precision,
            init_from=args.init_from,
            augment_shift=args.augment_shift,
            progress=not args.no_progress,
        )
        main_process = distributed.rank() == 0
    if main_process and result.history and result.history[-1]["test_bits_per_dim"] is not None:
        print(
            f"held-out bits/dim after epoch {result.history[-1]['epoch']}: "
            f"{result.history[-1]['test_bits_per_dim']:.4f}"
        )
    return 0


def _run_eval(args) -> int:
    from pixelfast.checkpoint import build_from_checkpoint, load_checkpoint
    from pixelfast.device import check_device
    from pixelfast.evaluate import baseline_bits_per_dim, log_prob

    per_image = Path(args.per_image) if args.per_image is not None else None
    if per_image is not None and not per_image.parent.is_dir():
        raise UsageError(f"pixelfast eval: error: folder {str(per_image.parent)!r} for --per-image does not exist")
    device = check_device(args.device or "cpu", "--device")
    with _checkpoint_path(args.checkpoint) as path:
        ckpt = load_checkpoint(path)
        model = build_from_checkpoint(ckpt, repr(str(path))).eval().to(device)
    saved = (ckpt["metrics"].get("training") or {}).get("data")
    if args.data is None:
        args.data = saved or "mnist-digits"
    split = args.split
    data = _load(args, split, model.levels, args.limit)
    # The baseline is fitted on the whole training split: --limit only trims what is evaluated.
    train_data = _load(args, "train" if split != "all" else "all", model.levels, None)
    scores = log_prob(model, data, batch_size=args.batch_size, progress=not args.no_progress)
    sub_pixels = data.images[0].numel()
    model_bpd = -scores.sum().item() / (sub_pixels * len(scores) * math.log(2))
    bound = " (an upper bound: the negative ELBO)" if hasattr(model, "elbo_nats") else ""
    if per_image is not None:
        _write_scores(per_image, scores, data.labels, sub_pixels)
    baseline = baseline_bits_per_dim(train_data, data, model.levels)
    name = args.checkpoint or "the shipped default model"
    print(
        f"model     {ckpt['model_name']} ({name}): {model_bpd:.4f} bits/dim{bound} on {args.data} {split} "
        f"({len(data)} images)"
    )
    print(
        f"baseline  independent per-sub-pixel categorical fitted on {args.data} "
        f"{'train' if split != 'all' else 'all'} ({len(train_data)} images): {baseline:.4f} bits/dim"
    )
    if per_image is not None:
        print(f"per-image scores -> {per_image}")
    return 0


def _write_scores(path: Path, scores, labels, sub_pixels: int) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "log_prob_nats", "bits_per_dim"])
        for k, nats in enumerate(scores.tolist()):
            label = "" if labels is None else int(labels[k])
            writer.writerow([k, label, repr(nats), repr(-nats / (sub_pixels * math.log(2)))])


def _run_sample(args) -> int:
    import torch

    from pixelfast import distributed
    from pixelfast.checkpoint import load_model
    from pixelfast.device import check_device
    from pixelfast.images import save_grid
    from pixelfast.sampling import sample
    from pixelfast.sampling.api import check_canvas

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(
            f"pixelfast sample: error: --out must name a .png file (it is written as PNG), got {args.out!r}"
        )
    if not out.parent.is_dir():
        raise UsageError(f"pixelfast sample: error: folder {str(out.parent)!r} for --out does not exist")
    device = distributed.rank_device(check_device(args.device or "cpu", "--device"))
    with _checkpoint_path(args.checkpoint) as path:
        model = load_model(path, map_location=device)
    size = tuple(args.size) if args.size else model.image_size
    if size is None:
        raise UsageError("pixelfast sample: error: the model does not record its image size; pass --size H W")
    check_canvas(args.n, model.in_channels, *size)  # before the labels: --n may be absurd
    labels, nrow = None, args.nrow
    if model.num_classes is not None:
        rows = _parse_labels(args.labels, model.num_classes)
        if args.n < len(rows):
            raise UsageError(
                f"pixelfast sample: error: --n {args.n} is fewer than the {len(rows)} labels asked for "
                "(one row per label)"
            )
        per_row = math.ceil(args.n / len(rows))  # one row per label
        labels = torch.tensor(rows).repeat_interleave(per_row)[: args.n]
        nrow = nrow or per_row
    elif args.labels is not None:
        raise UsageError("pixelfast sample: error: --labels given, but the model is unconditional")
    nrow = nrow or max(1, math.ceil(math.sqrt(args.n)))
    with distributed.launched(device):
        # Under torchrun each process draws its share of the images, exactly as one process would.
        rank, world = distributed.rank(), distributed.world_size()
        seed = distributed.from_rank_zero(args.seed if args.seed is not None else secrets.randbelow(2**31))
        start, stop = distributed.share(0, args.n, world, rank)
        started = time.perf_counter()
        if stop > start:
            images = sample(
                model,
                args.n,
                size=size,
                labels=labels,
                temperature=args.temperature,
                generator=seed,
                method=args.method,
                progress=not args.no_progress and rank == 0,
                part=(start, stop) if world > 1 else None,
                guidance=args.guidance,
                precision=args.precision,
            )
        else:  # more processes than images
            images = torch.empty(0, model.in_channels, *size, dtype=torch.uint8)
        images = distributed.gather_to_rank_zero(images)
        seconds = time.perf_counter() - started
    if images is None:
        return 0  # rank 0 writes the grid
    save_grid(images, out, model.levels, nrow=nrow)
    height, width = images.shape[2:]
    where = f" over {world} processes" if world > 1 else ""
    print(
        f"sampled {args.n} images of {height}x{width} in {seconds:.2f} s{where} "
        f"(method {args.method}, seed {seed}, temperature {args.temperature:g}"
        + (f", guidance {args.guidance:g}" if args.guidance else "")
        + (f", precision {args.precision}" if args.precision != "fp32" else "")
        + f") -> {out}"
    )
    return 0


def _run_upscale(args) -> int:
    from pixelfast.checkpoint import load_model
    from pixelfast.data import downsample, mnist_digits
    from pixelfast.experiments import comparison_grid
    from pixelfast.images import save_grid
    from pixelfast.models import SuperResolution

    out = Path(args.out)
    if not out.parent.is_dir():
        raise UsageError(f"pixelfast upscale: error: folder {str(out.parent)!r} for --out does not exist")
    with _checkpoint_path(args.checkpoint, DEFAULT_SR_CHECKPOINT) as path:
        model = load_model(path)
    if not isinstance(model, SuperResolution):
        raise UsageError(
            f"pixelfast upscale: error: {args.checkpoint} holds a {type(model).__name__}, not a SuperResolution model"
        )
    truth = None
    if args.demo:
        if model.in_channels != 1:
            raise UsageError("pixelfast upscale: error: --demo upscales greyscale digits; this model is RGB")
        truth = mnist_digits("test", levels=model.levels).images[: args.count].long()
        low = downsample(truth, model.scale)
    else:
        low = _read_png(args.input, model.in_channels, model.levels)
    baselines = {}
    for key, given, shipped in (
        ("l2", args.l2, DEFAULT_SR_BASELINES["l2"]),
        ("independent", args.independent, DEFAULT_SR_BASELINES["independent"]),
    ):
        if given is None and (args.checkpoint is not None or not args.demo):
            continue  # the shipped baselines go with the shipped model's demo
        with _checkpoint_path(given, shipped) as path:
            baselines[key] = load_model(path)
        if (
            not isinstance(baselines[key], SuperResolution)
            or baselines[key].objective != key
            or baselines[key].scale != model.scale
            or baselines[key].levels != model.levels
        ):
            raise UsageError(
                f"pixelfast upscale: error: --{key} must hold a SuperResolution trained with "
                f"objective={key} of the model's scale and levels"
            )
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    started = time.perf_counter()
    # one row per input: the input (enlarged by repetition), the baselines, the samples, the truth
    grid, columns = comparison_grid(
        model,
        baselines.get("l2"),
        baselines.get("independent"),
        low,
        truth,
        n=args.n,
        temperature=args.temperature,
        seed=seed,
        method=args.method,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - started
    save_grid(grid, out, model.levels, nrow=columns)
    (height, width), (big_h, big_w) = low.shape[2:], grid.shape[2:]
    shown = (
        "input | "
        + "".join(f"{key} | " for key in baselines)
        + f"{args.n} sample(s)"
        + (" | truth" if args.demo else "")
    )
    print(
        f"upscaled {len(low)} image(s) {height}x{width} -> {big_h}x{big_w} in {seconds:.2f} s (method "
        f"{args.method}, seed {seed}, temperature {args.temperature:g}); columns {shown} -> {out}"
    )
    return 0


def _run_experiment_missing(args) -> int:
    raise UsageError(
        "pixelfast experiment: error: choose an experiment: super-resolution, mode-averaging, "
        "class-agreement or generative-models (see --help)"
    )


def _run_experiment_super_resolution(args) -> int:
    from pixelfast.checkpoint import load_model
    from pixelfast.data import mnist_digits
    from pixelfast.experiments import measure_super_resolution
    from pixelfast.images import save_grid

    out = _out_path(args.out, "pixelfast experiment super-resolution")
    models = {}
    for key, given, default in (
        ("model", args.checkpoint, DEFAULT_SR_CHECKPOINT),
        ("l2", args.l2, DEFAULT_SR_BASELINES["l2"]),
        ("independent", args.independent, DEFAULT_SR_BASELINES["independent"]),
        ("unconditional", args.unconditional, DEFAULT_CHECKPOINT),
    ):
        with _checkpoint_path(given, default) as path:
            models[key] = load_model(path)
    started = time.perf_counter()
    test, train = mnist_digits("test", models["model"].levels), mnist_digits("train", models["model"].levels)
    report = measure_super_resolution(
        models["model"],
        models["l2"],
        models["independent"],
        models["unconditional"],
        test.images[: args.count],
        test.labels[: args.count],
        train.images,
        train.labels,
        classifier_epochs=args.classifier_epochs,
        seed=args.seed,
        progress=not args.no_progress,
    )
    save_grid(report.grid, out, models["model"].levels, nrow=report.grid_columns)
    print(report.table())
    print(
        f"({min(args.count, len(test))} held-out digits, seed {args.seed}, {time.perf_counter() - started:.0f} s) "
        f"grid -> {out}"
    )
    return 0


def _run_experiment_mode_averaging(args) -> int:
    import torch

    from pixelfast.data import mnist_digits
    from pixelfast.experiments import mode_averaging
    from pixelfast.images import save_grid

    out = _out_path(args.out, "pixelfast experiment mode-averaging")
    digits = mnist_digits("train").images
    if args.limit is not None:
        digits = digits[: args.limit]
    prior_config = {"hidden_channels": args.hidden_channels, "num_layers": args.num_layers}
    result = mode_averaging(
        digits,
        epochs=args.epochs,
        prior_epochs=args.prior_epochs,
        count=args.count,
        prior_config=prior_config,
        seed=args.seed,
        progress=not args.no_progress,
    )
    shown = min(12, args.count)
    save_grid(torch.cat([images[:shown] for images in result.draws.values()]), out, 256, nrow=shown)
    print(
        f"training canvases ({len(digits)}, one digit each) with ink in exactly one quadrant: "
        f"{result.data_fraction:.3f}"
    )
    for name, fraction in result.fractions.items():
        print(
            f"{name}: {fraction:.3f} of {args.count} draws have their ink in exactly one quadrant, "
            f"{result.blank[name]:.3f} are blank (trained {result.seconds[name]:.0f} s)"
        )
    print(f"(seed {args.seed}) first {shown} draws of each, one row per model -> {out}")
    return 0


def _run_experiment_class_agreement(args) -> int:
    from pixelfast.checkpoint import load_model
    from pixelfast.data import mnist_digits
    from pixelfast.experiments import class_agreement, train_logistic_classifier
    from pixelfast.images import save_grid

    out = _out_path(args.out, "pixelfast experiment class-agreement") if args.out is not None else None
    with _checkpoint_path(args.checkpoint, DEFAULT_CHECKPOINT) as path:
        model = load_model(path)
    if model.num_classes != 10 or model.in_channels != 1 or tuple(model.image_size or ()) != (28, 28):
        raise UsageError(
            "pixelfast experiment class-agreement: error: the model must be a class-conditional "
            "(10 digits) grey 28x28 model"
        )
    train, test = mnist_digits("train", model.levels), mnist_digits("test", model.levels)
    classifier = train_logistic_classifier(train.images, train.labels, levels=model.levels)
    result = class_agreement(
        model,
        classifier,
        count=args.count,
        temperatures=args.temperature,
        seed=args.seed,
        test_images=test.images,
        test_labels=test.labels,
        progress=not args.no_progress,
        guidance=args.guidance,
    )
    print(
        f"classifier: logistic regression, {result.classifier_accuracy:.3f} accurate on the {len(test)} held-out digits"
    )
    for temperature, fraction in result.fractions.items():
        guided = f", guidance {args.guidance:g}" if args.guidance else ""
        print(f"temperature {temperature:g}{guided}: {fraction:.3f} of {args.count} samples show the asked digit")
    if out is not None:
        save_grid(result.samples[args.temperature[0]][:100], out, model.levels, nrow=10)
        print(f"(seed {args.seed}) first 100 samples at temperature {args.temperature[0]:g} -> {out}")
    return 0


def _run_experiment_generative_models(args) -> int:
    from pixelfast.device import check_device
    from pixelfast.images import save_grid
    from pixelfast.model_comparison import compare, trained_models

    out = _out_path(args.out, "pixelfast experiment generative-models")
    device = check_device(args.device, "--device") if args.device else None
    started = time.perf_counter()
    models = trained_models(args.work_dir, device=device, limit=args.limit, progress=not args.no_progress)
    result = compare(models, count=args.count, seed=args.seed, progress=not args.no_progress)
    save_grid(result.grid, out, 256, nrow=result.grid_columns)
    print(result.table())
    print(
        f"({args.count} samples per model, seed {args.seed}, {time.perf_counter() - started:.0f} s) rows: real "
        f"digits, {', '.join(models)}; two per class -> {out}"
    )
    return 0


# --- helpers ----------------------------------------------------------------------------------


def _out_path(text: str, command: str) -> Path:
    out = Path(text)
    if not out.parent.is_dir():
        raise UsageError(f"{command}: error: folder {str(out.parent)!r} for --out does not exist")
    return out


def _read_png(path: str, channels: int, levels: int):
    """A PNG as levels ``[1, channels, h, w]`` (grey or RGB, quantised like the datasets)."""
    import numpy as np
    import torch
    from PIL import Image

    from pixelfast.data import quantise

    if not Path(path).is_file():
        raise FileNotFoundError(f"--input {path!r} does not exist")
    try:
        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except OSError as error:
        raise ValueError(f"--input {path!r} is not a readable PNG: {error}") from None
    image = torch.from_numpy(pixels.copy())
    image = image.unsqueeze(0) if channels == 1 else image.permute(2, 0, 1)
    return quantise(image, levels).unsqueeze(0)


def _load(args, split: str, levels: int, limit: int | None):
    from pixelfast.data import load_dataset

    data = load_dataset(
        args.data, root=args.root, split=split, levels=levels, download=args.download, channels=args.channels
    )
    if limit is not None and limit < len(data):
        data = data.subset(range(limit))
    return data


def _parse_labels(text: str | None, num_classes: int) -> list[int]:
    if text is None or text.strip().lower() == "all":
        return list(range(num_classes))
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(
            f"pixelfast sample: error: --labels must be 'all' or integers like 0,1,2; got {text!r}"
        ) from None
    bad = [v for v in values if not 0 <= v < num_classes]
    if bad:
        raise UsageError(f"pixelfast sample: error: --labels must be in 0..{num_classes - 1}; got {bad}")
    return values


def default_checkpoint(name: str | None = None):
    """A shipped checkpoint (default: the Gated PixelCNN) as an importlib.resources Traversable
    (it may be missing)."""
    return importlib.resources.files("pixelfast").joinpath("assets").joinpath(name or DEFAULT_CHECKPOINT)


@contextlib.contextmanager
def _checkpoint_path(checkpoint: str | None, default: str | None = None) -> Iterator[Path]:
    """The given checkpoint, or the shipped one named ``default`` (found with importlib.resources;
    the Gated PixelCNN when ``default`` is None)."""
    if checkpoint is not None:
        yield Path(checkpoint)
        return
    name = default or DEFAULT_CHECKPOINT
    resource = default_checkpoint(name) if default else default_checkpoint()
    if not resource.is_file():
        raise FileNotFoundError(
            f"no --checkpoint given and the shipped default model (pixelfast/assets/{name}) "
            "is not installed; pass --checkpoint PATH"
        )
    with importlib.resources.as_file(resource) as path:
        yield path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
