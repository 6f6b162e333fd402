"""``pixelfast.sample`` under hostile input: huge requests, bad devices, failures and threads leave
the model exactly as it was and fail at once with a clear message."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import pixelfast
from pixelfast.models import GatedPixelCNN
from pixelfast.sampling import api


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GatedPixelCNN(
        in_channels=1, levels=4, hidden_channels=3, num_layers=2, num_classes=3, image_size=(4, 4)
    ).double()


def snapshot(model):
    return {k: (v.clone(), v.device, v.dtype) for k, v in model.state_dict().items()}, model.training


def assert_unchanged(model, before):
    state, training = before
    assert model.training == training
    now = model.state_dict()
    assert set(now) == set(state)
    for key, (value, device, dtype) in state.items():
        assert now[key].device == device and now[key].dtype == dtype, key
        assert torch.equal(now[key], value), key


@pytest.mark.parametrize(
    "device, words",
    [("meta", "holds no data"), ("bogus", "'cpu', 'cuda'"), ("cuda:99", "CUDA")],
)
def test_bad_device_is_refused_before_the_model_moves(model, device, words):
    before = snapshot(model)
    with pytest.raises(ValueError, match=words):
        pixelfast.sample(model, 1, device=device, progress=False)
    assert_unchanged(model, before)


@pytest.mark.parametrize("training", [True, False])
def test_a_call_that_fails_after_moving_the_model_puts_its_own_tensors_back(model, monkeypatch, training):
    # The meta device stands in for any device where sampling fails: moving there loses the values,
    # so only putting the model's own tensors back (not moving copies back) can restore them.
    monkeypatch.setattr(api, "check_device", lambda device, owner: torch.device(device))
    model.train(training)
    before = snapshot(model)
    weights = [p for p in model.parameters()]
    with pytest.raises(RuntimeError):  # the meta device holds no values to sample from
        pixelfast.sample(model, 1, device="meta", method="naive", progress=False)
    assert_unchanged(model, before)
    assert all(a is b for a, b in zip(weights, model.parameters()))  # the same Parameter objects


def test_huge_requests_fail_at_once(model):
    started = time.perf_counter()
    with pytest.raises(ValueError, match="sub-pixels"):
        pixelfast.sample(model, 10**12, progress=False)
    with pytest.raises(ValueError, match="sub-pixels"):
        pixelfast.sample(model, 1, size=(100_000, 100_000), progress=False)
    assert time.perf_counter() - started < 5.0  # a noisy machine, not a speed claim


@pytest.mark.parametrize("labels", [2**70, -(2**70), [0, 2**70], (1, -1)])
def test_labels_far_out_of_range_are_a_range_error(model, labels):
    n = 1 if isinstance(labels, int) else 2
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        pixelfast.sample(model, n, labels=labels, progress=False)


def test_concurrent_calls_restore_the_training_mode(model):
    errors = []

    def draw():
        try:
            for _ in range(3):
                pixelfast.sample(model, 2, method="naive", progress=False)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    for trial in range(5):
        model.train()
        threads = [threading.Thread(target=draw) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and model.training, f"trial {trial}: left in eval mode"
    model.eval()
    pixelfast.sample(model, 1, progress=False)
    assert not model.training


def test_device_argument_samples_there_and_leaves_the_model_home(model, device):
    # On a GPU machine this moves a CPU model to CUDA for the call: the images come back on the
    # asked device and the model keeps its own CPU tensors.
    before = snapshot(model)
    pointers = [p.data_ptr() for p in model.parameters()]
    images = pixelfast.sample(model, 2, device=device, generator=0, method="cached", progress=False)
    assert images.device.type == device.type and images.shape == (2, 1, 4, 4)
    assert_unchanged(model, before)
    assert pointers == [p.data_ptr() for p in model.parameters()]  # its own storage, not copies
    same = pixelfast.sample(model, 2, generator=0, method="cached", progress=False)
    if device.type == "cpu":
        assert torch.equal(images, same)
