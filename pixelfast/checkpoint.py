"""Checkpoints: one dict saved atomically and loaded with ``torch.load(weights_only=True)``.

Format (version 1)::

    {"format": "pixelfast-checkpoint", "version": 1,
     "model_name": str,            # a key of pixelfast.models.MODELS
     "model_config": dict,         # the model's constructor kwargs (model.config)
     "model_state": state_dict, "optimizer_state": dict | None,
     "epoch": int,                 # epochs completed
     "metrics": dict}              # e.g. bits/dim history and the training settings

``weights_only=True`` means a checkpoint can hold tensors and plain containers only, so loading a
file from elsewhere cannot run code. Every member's CRC-32 is checked before loading (torch stores
tensors uncompressed, so a flipped bit would otherwise load as a wrong weight); the weights must be
finite, and hold the config's number of layers before the model is built.
"""

from __future__ import annotations

import glob
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "pixelfast-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model_name", "model_config", "model_state", "optimizer_state", "epoch", "metrics")


class CheckpointError(ValueError):
    """A file that is not a usable pixelfast checkpoint (corrupt, truncated, foreign, unknown model)."""


def model_name(model: nn.Module) -> str:
    """The registry name of a model: its ``name`` class attribute, else its class name."""
    return getattr(type(model), "name", None) or type(model).__name__


def model_config(model: nn.Module) -> dict:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(
            f"{type(model).__name__} has no `config` dict of constructor kwargs, so it cannot be checkpointed"
        )
    return dict(config)


def make_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    metrics: dict | None = None,
) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_name": model_name(model),
        "model_config": model_config(model),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "epoch": int(epoch),
        "metrics": dict(metrics or {}),
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    metrics: dict | None = None,
) -> Path:
    """Write a checkpoint of ``model`` (and ``optimizer``) to ``path`` atomically."""
    return atomic_save(make_checkpoint(model, optimizer, epoch, metrics), path)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash mid-write leaves the previous file intact: ``os.replace`` within one folder is atomic.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save checkpoint: folder {str(folder)!r} does not exist")
    _remove_leftovers(folder, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)
    return path


def _remove_leftovers(folder: Path, name: str) -> None:
    """Delete the temporary files an earlier save of ``name`` left when it was killed mid-write."""
    for leftover in folder.glob(f".{glob.escape(name)}.*.tmp"):
        try:
            leftover.unlink()
        except OSError:
            pass  # another process's save finished (renamed it) first, or it is not ours to delete


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read and validate a checkpoint dict; raise :class:`CheckpointError` for anything else."""
    path = _readable_file(Path(path))
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; its index sits at the end
        raise CheckpointError(
            f"{str(path)!r} is not a pixelfast checkpoint: not a torch zip archive "
            "(corrupt, truncated, or another kind of file)"
        )
    _check_crcs(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses anything but tensors and plain containers; a checkpoint never has more.
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), "")
        detail = detail.split(" was not")[0].replace("WeightsUnpickler error: ", "")
        raise CheckpointError(
            f"{str(path)!r} is not a pixelfast checkpoint: it holds Python objects that safe loading "
            f"(weights_only=True) refuses to run. {detail}".strip()
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a readable pixelfast checkpoint (corrupt or truncated): {first}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is a torch file but not a pixelfast checkpoint (no format={FORMAT!r} marker)"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise CheckpointError(
            f"{str(path)!r} is a pixelfast checkpoint of version {version!r}; this pixelfast reads "
            f"version {VERSION} (upgrade pixelfast to read newer checkpoints)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{str(path)!r} is an incomplete pixelfast checkpoint: missing {missing}")
    if not isinstance(ckpt["model_name"], str) or not isinstance(ckpt["model_config"], dict):
        raise CheckpointError(f"{str(path)!r}: model_name must be a str and model_config a dict")
    if not isinstance(ckpt["model_state"], dict) or not isinstance(ckpt["epoch"], int):
        raise CheckpointError(f"{str(path)!r}: model_state must be a dict and epoch an int")
    if not isinstance(ckpt["metrics"], dict):
        raise CheckpointError(f"{str(path)!r}: metrics must be a dict, got {type(ckpt['metrics']).__name__}")
    return ckpt


def _readable_file(path: Path) -> Path:
    """``path`` if it is a regular file this process can read, else an error that says which."""
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {str(path)!r} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is not a regular file (a pipe, socket or device?)")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise PermissionError(f"checkpoint {str(path)!r} cannot be read: permission denied") from None
    return path


def _check_crcs(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as error:
        raise CheckpointError(
            f"{str(path)!r} is not a readable pixelfast checkpoint (corrupt or truncated): {error}"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{str(path)!r} is not a readable pixelfast checkpoint: member {bad!r} fails its CRC check "
            "(corrupt: damaged after it was written)"
        )


def build_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> nn.Module:
    """Rebuild the model a checkpoint dict describes and load its weights (train mode, on CPU)."""
    from pixelfast import models

    name = ckpt["model_name"]
    if name not in models.MODELS:
        raise CheckpointError(f"{source}: unknown model {name!r}; this pixelfast knows {sorted(models.MODELS)}")
    config, state = dict(ckpt["model_config"]), ckpt["model_state"]
    _check_finite(state, source)
    _check_block_count(config, state, source, name)
    try:
        model = models.build_model(name, config)
    except (TypeError, ValueError, RuntimeError) as error:  # RuntimeError: too big to allocate
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{source}: cannot build {name} from its saved config: {first}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{source}: the saved weights do not fit {name}: {error}") from None
    return model


def _check_finite(state: dict, source: str) -> None:
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: model_state[{key!r}] is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: the saved weight {key!r} holds NaN or infinite values")


def _check_block_count(config: dict, state: dict, source: str, name: str) -> None:
    """Every model with a ``num_layers`` option keeps its layers in ``blocks``: a config whose
    ``num_layers`` disagrees with the saved blocks is refused before the (possibly enormous) model
    is built. A model without the option (the VAE, the GAN) has no count to check."""
    if "num_layers" not in config:
        return
    num_layers = config["num_layers"]
    if not isinstance(num_layers, int) or isinstance(num_layers, bool):
        return  # the build below names the bad value
    saved = {key.split(".")[1] for key in state if key.startswith("blocks.")}
    if num_layers != len(saved):
        raise CheckpointError(
            f"{source}: the saved weights do not fit {name}'s saved config: it says num_layers={num_layers}, "
            f"the weights hold {len(saved)} layers"
        )


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """The model saved in a checkpoint, with its weights, in eval mode."""
    ckpt = load_checkpoint(path, map_location=map_location)
    model = build_from_checkpoint(ckpt, repr(str(path)))
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model = model.to(map_location)
    return model.eval()
