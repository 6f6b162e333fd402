"""Sampling on a GPU, the parts a CPU can check: how many images go into one engine call, and full
fp32 (TF32 off) inside ``pixelfast.sample`` / ``pixelfast.incremental_logits``."""

from __future__ import annotations

import pytest
import torch

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN
from pixelfast.sampling import cached, precision
from pixelfast.sampling.plan import lower

B = torch.backends

# --- images per engine call ----------------------------------------------------------------------


def test_cpu_keeps_chunks_for_the_progress_bar():
    assert cached.chunk_size(1000, torch.device("cpu"), 10**6, free_bytes=10**15) == cached.CHUNK
    assert cached.chunk_size(5, torch.device("cpu"), 10**6) == 5


@pytest.mark.parametrize("n", [1, 16, 64, 65, 256, 5000])
def test_cuda_launches_every_image_at_once_when_they_fit(n):
    per_image = 3_000_000
    free = int(n * per_image / cached.CUDA_MEMORY_SHARE) + 1
    assert cached.chunk_size(n, torch.device("cuda"), per_image, free_bytes=free) == n


def test_cuda_splits_only_what_does_not_fit():
    per_image, n = 1000, 500
    free = int(120 * per_image / cached.CUDA_MEMORY_SHARE)  # room for 120 images
    assert cached.chunk_size(n, torch.device("cuda"), per_image, free_bytes=free) == 120
    assert cached.chunk_size(n, torch.device("cuda:0"), per_image, free_bytes=0) == 1  # never zero


@pytest.mark.parametrize("n, per_image", [(0, 10), (-1, 10), (3, 0)])
def test_chunk_size_rejects_bad_counts(n, per_image):
    with pytest.raises(ValueError, match="chunk_size"):
        cached.chunk_size(n, torch.device("cpu"), per_image)


def test_bytes_per_image_follow_the_plan():
    model = GatedPixelCNN(3, 16, hidden_channels=6, num_layers=2)
    plan = lower(model)
    c, h, w, levels = 3, 7, 9, 16
    plain = cached.engine_bytes_per_image(plan, c, h, w, levels)
    recorded = cached.engine_bytes_per_image(plan, c, h, w, levels, record_logits=True)
    assert recorded - plain == levels * c * h * w * 4  # the fp32 logits
    # The cache grows with the width (padding included), the inputs and output with the pixels.
    assert plain >= plan.cache_values_per_image(w) * 4 + c * h * w * (8 + 8 + 8 + 1)
    wide = cached.engine_bytes_per_image(plan, c, h, 2 * w, levels)
    assert wide - plain == (plan.cache_values_per_image(2 * w) - plan.cache_values_per_image(w)) * 4 + c * h * w * 25
    double = cached.engine_bytes_per_image(lower(model.double()), c, h, w, levels)
    assert double - plain == plan.cache_values_per_image(w) * 4


@pytest.mark.parametrize("step, n, calls", [(64, 130, 3), (130, 130, 1), (7, 20, 3)])
def test_sample_cached_makes_one_engine_call_per_chunk(monkeypatch, step, n, calls):
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    seen, sizes = [], []
    real_run = cached.run_engine

    def chunk_size(count, device, bytes_per_image, free_bytes=None):
        seen.append((count, torch.device(device), bytes_per_image))
        return step

    def run_engine(plan, image, *args):
        sizes.append(image.shape[0])
        return real_run(plan, image, *args)

    monkeypatch.setattr(cached, "chunk_size", chunk_size)
    monkeypatch.setattr(cached, "run_engine", run_engine)
    images = pixelfast.sample(model, n, size=(2, 3), generator=0, method="cached", progress=False)
    plan = lower(model)
    assert seen == [(n, torch.device("cpu"), cached.engine_bytes_per_image(plan, 1, 2, 3, 4))]
    assert len(sizes) == calls and sum(sizes) == n and images.shape == (n, 1, 2, 3)


# --- full fp32 inside the calls ------------------------------------------------------------------


def flags() -> dict:
    """What the backends report now (the legacy getters raise if the two APIs disagree)."""
    state = {
        "matmul": B.cuda.matmul.allow_tf32,
        "cudnn": B.cudnn.allow_tf32,
        "matmul precision": torch.get_float32_matmul_precision(),
    }
    if precision.has_precision_tree():
        for path in ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv"):
            state[path] = precision._node(path).fp32_precision
    return state


FULL_FP32 = {
    "matmul": False,
    "cudnn": False,
    "matmul precision": "highest",
    "cuda.matmul": "ieee",
    "cudnn.conv": "ieee",
    "cudnn.rnn": "ieee",
    "mkldnn.matmul": "ieee",
    "mkldnn.conv": "ieee",
}


def user_settings():
    """Ways a user turns TF32 on, with the legacy flags and with the fp32_precision tree."""

    def legacy():
        B.cuda.matmul.allow_tf32 = True
        B.cudnn.allow_tf32 = True

    def tree():  # a fresh process's leaves ("none" inherits), the root switched to TF32
        for path in ("cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn"):
            precision._node(path).fp32_precision = "none"
        B.fp32_precision = "tf32"

    yield pytest.param("legacy flags", legacy, id="legacy-flags")
    yield pytest.param("matmul precision high", lambda: torch.set_float32_matmul_precision("high"), id="high")
    if precision.has_precision_tree():
        yield pytest.param("fp32_precision tree", tree, id="tree")
        yield pytest.param("conv leaf only", lambda: setattr(B.cudnn.conv, "fp32_precision", "tf32"), id="conv-leaf")


class Recorder(PixelCNN):
    """A PixelCNN whose forward records the backends' flags (and can be told to fail)."""

    def __init__(self, fail=False):
        super().__init__(1, 4, hidden_channels=3, num_layers=1)
        self.seen, self.fail = [], fail

    def forward(self, x, labels=None):
        self.seen.append(flags())
        if self.fail:
            raise RuntimeError("the model failed")
        return super().forward(x, labels)


def expected_inside():
    legacy = ("matmul", "cudnn", "matmul precision")
    return {key: value for key, value in FULL_FP32.items() if key in legacy or precision.has_precision_tree()}


@pytest.mark.parametrize("name, turn_on", list(user_settings()))
def test_sample_runs_in_full_fp32_and_restores_the_settings(name, turn_on):
    turn_on()
    before = precision.save()
    state = [value for _, value in before]
    model = Recorder()
    pixelfast.sample(model, 2, size=(2, 2), generator=0, method="naive", progress=False)
    assert model.seen and all(seen == expected_inside() for seen in model.seen), name
    assert [value for _, value in precision.save()] == state


@pytest.mark.parametrize("name, turn_on", list(user_settings()))
def test_settings_come_back_after_an_exception(name, turn_on):
    turn_on()
    state = [value for _, value in precision.save()]
    model = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="the model failed"):
        pixelfast.sample(model, 1, size=(2, 2), method="naive", progress=False)
    assert model.seen == [expected_inside()]
    assert [value for _, value in precision.save()] == state


@pytest.mark.parametrize("fail", [False, True])
def test_incremental_logits_runs_in_full_fp32(monkeypatch, fail):
    torch.set_float32_matmul_precision("high")
    B.cudnn.allow_tf32 = True
    state = [value for _, value in precision.save()]
    seen = []
    real_run = cached.run_engine

    def run_engine(*args):
        seen.append(flags())
        if fail:
            raise RuntimeError("the engine failed")
        return real_run(*args)

    monkeypatch.setattr(cached, "run_engine", run_engine)
    model = PixelCNN(1, 4, hidden_channels=3, num_layers=1)
    x = torch.randint(0, 4, (2, 1, 3, 3))
    if fail:
        with pytest.raises(RuntimeError, match="the engine failed"):
            pixelfast.incremental_logits(model, x)
    else:
        assert pixelfast.incremental_logits(model, x).shape == (2, 4, 1, 3, 3)
    assert seen == [expected_inside()]
    assert [value for _, value in precision.save()] == state
    assert B.cuda.matmul.allow_tf32 and B.cudnn.allow_tf32


def test_full_fp32_restores_a_mixed_state_exactly():
    # A user who set the tree and then a legacy flag: torch's legacy getters may refuse to read it,
    # but every value is written back as it was.
    if not precision.has_precision_tree():
        pytest.skip("this torch has no fp32_precision settings")
    B.fp32_precision = "tf32"
    B.cudnn.conv.fp32_precision = "ieee"
    torch.set_float32_matmul_precision("medium")
    state = [value for _, value in precision.save()]
    with precision.full_fp32():
        assert flags() == expected_inside()
    assert [value for _, value in precision.save()] == state
