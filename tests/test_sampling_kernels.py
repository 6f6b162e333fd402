"""The CPU engine's float32 matrix products (csrc/sampler/small_gemm.h) and the row-phase convs.

Each kernel the machine runs (plain C++, AVX2, AVX-512) is forced in turn and the engine's logits
are checked against the model's float64 forward pass, at sizes that leave partial tiles: batches
that are not a multiple of a tile's rows, channel counts that are not a multiple of a panel's 16
columns, odd and even panel counts, colour groups whose width is not a panel's. Then: the thread
team's splits give bit-identical float32 logits (every output element is the same sum, in the
same order, whoever computes it), and the plans move pixel-phase taps on rows above to the row
phase only where that is safe.
"""

from __future__ import annotations

import pytest
import torch
from devices import gemm_kernel
from test_sampling_cached import jitter, random_image, random_labels

import pixelfast
from pixelfast.models import GatedPixelCNN, PixelCNN, PixelCNNPlusPlus, PixelRNN
from pixelfast.sampling.cached import run_engine
from pixelfast.sampling.plan import PIXEL, ROW, PlanBuilder, lower
from pixelfast.sampling.plan_format import OP_CODES, OP_FIELDS

KERNELS = ["generic", "avx2", "avx512"]


@pytest.fixture(params=KERNELS)
def kernel(request):
    """Makes the engine use this float32 kernel; skips one the CPU cannot run."""
    with gemm_kernel(request.param):
        yield request.param


@pytest.fixture
def threads():
    """Sets torch's thread count for a test and restores it after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


# name: (build, batch, height, width); hidden sizes chosen so that panels and tiles end part-way.
MODELS = {
    # 40 channels: 3 panels (the last of 8 columns), 80 in the residual blocks: 5, an odd count.
    "pixelcnn grey h40": (lambda: PixelCNN(1, 7, hidden_channels=40, num_layers=2, num_classes=3), 9, 5, 6),
    # 3 colour groups of 7 channels: every centre product starts a group's panels afresh.
    "pixelcnn rgb h21": (lambda: PixelCNN(3, 5, hidden_channels=21, num_layers=2), 7, 4, 5),
    "gated rgb h18": (lambda: GatedPixelCNN(3, 6, hidden_channels=18, num_layers=2, num_classes=3), 13, 4, 4),
    "gated grey h33": (lambda: GatedPixelCNN(1, 20, hidden_channels=33, num_layers=3), 17, 5, 5),
    "row lstm rgb h12": (lambda: PixelRNN("row", 3, 4, hidden_channels=12, num_layers=2), 5, 4, 5),
    "diagonal grey h17": (lambda: PixelRNN("diagonal", 1, 9, hidden_channels=17, num_layers=2), 3, 5, 4),
    "pixelcnn++": (lambda: PixelCNNPlusPlus(3, 16, nr_resnet=1, nr_filters=20, nr_logistic_mix=2), 2, 4, 4),
}


@pytest.mark.parametrize("split", ["channel", "image"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_kernel_gives_the_forward_pass_logits(name, split, kernel, threads):
    build, batch, height, width = MODELS[name]
    torch.manual_seed(0)  # the layers' initial weights, under jitter's: not the test order's
    model = jitter(build(), scale=0.3)
    x = random_image(model, batch, height, width, seed=1)
    labels = random_labels(model, batch, seed=2)
    with torch.no_grad():
        expected = model.double()(x, labels).float()
    model.float()
    threads(2)
    limit = torch.ops.pixelfast.sampler_split_images_below(0 if split == "channel" else 1 << 62)
    try:
        got = pixelfast.incremental_logits(model, x, labels)
    finally:
        torch.ops.pixelfast.sampler_split_images_below(limit)
    if name == "pixelcnn++":  # its far-tail logits jump with float rounding: compare probabilities
        got, expected = got.softmax(1), expected.softmax(1)
    # float32 sums err in proportion to their size: these logits reach 372 (pixelcnn grey h40),
    # where 2e-4 is 5e-7 of the largest; a wrong product is off by far more than either bound.
    atol = max(2e-4, 2e-6 * expected.abs().max().item())
    torch.testing.assert_close(got, expected, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("name", ["pixelcnn grey h40", "gated rgb h18", "diagonal grey h17"])
def test_float32_logits_are_bit_identical_whoever_computes_them(name, kernel, threads):
    build, batch, height, width = MODELS[name]
    model = jitter(build(), scale=0.3)
    x = random_image(model, batch, height, width, seed=3)
    labels = random_labels(model, batch, seed=4)
    threads(1)
    alone = pixelfast.incremental_logits(model, x, labels)
    limit = torch.ops.pixelfast.sampler_split_images_below(0)
    # More threads than cores: the team must not go on alone when they are preempted.
    solo_after = torch.ops.pixelfast.sampler_solo_after(1 << 40)
    try:
        # 5 and 16 threads: more than some ops have panels, so their threads split the images too
        for count in (2, 3, 5, 16):
            threads(count)
            for below in (0, 1 << 62):  # split by channel, then by image
                torch.ops.pixelfast.sampler_split_images_below(below)
                assert torch.equal(pixelfast.incremental_logits(model, x, labels), alone)
    finally:
        torch.ops.pixelfast.sampler_split_images_below(limit)
        torch.ops.pixelfast.sampler_solo_after(solo_after)


def test_the_kernel_setting_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="auto, generic, avx2, avx512 or amx, got 'sse'"):
        torch.ops.pixelfast.sampler_gemm_kernel("sse")
    before = torch.ops.pixelfast.sampler_gemm_kernel("generic")
    assert torch.ops.pixelfast.sampler_gemm_kernel(before) == "generic"


# --- which convs the plans run in the row phase -------------------------------------------------


def ops_of(program: list[int]) -> list[dict]:
    fields, ops, at = list(OP_FIELDS), [], 0
    while at < len(program):
        record = program[at : at + program[at]]
        op = dict(zip(fields, record[1:]))
        op["dys"] = [record[1 + len(fields) + 4 * s] for s in range(op["num_segments"])]
        ops.append(op)
        at += program[at]
    return ops


def convs(plan) -> list[dict]:
    return [op for op in ops_of(plan.program) if op["code"] == OP_CODES["conv"]]


def test_pixel_phase_convs_keep_no_taps_on_rows_above():
    # A PixelCNN's 7x7 and 3x3 convs: their taps on rows above (and bias) in a row-phase conv of
    # the same destination, the rest added per pixel; its 1x1 convs stay as they are.
    model = PixelCNN(3, 4, hidden_channels=6, num_layers=2)
    ops = convs(lower(model))
    row = [op for op in ops if op["phase"] == ROW]
    pixel = [op for op in ops if op["phase"] == PIXEL]
    assert len(row) == 3  # the first conv and each block's 3x3
    assert all(dy < 0 for op in row for dy in op["dys"]) and all(op["bias"] >= 0 for op in row)
    assert all(dy == 0 for op in pixel for dy in op["dys"])
    for op in row:
        (rest,) = [p for p in pixel if p["dst"] == op["dst"]]
        assert rest["accumulate"] == 1 and rest["bias"] == -1 and rest["num_segments"] == 1


def test_a_conv_into_a_written_buffer_or_an_accumulating_one_stays_in_the_pixel_phase():
    w = torch.randn(4, 2, 3)
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(2)
    dst, other = b.buffer(4), b.buffer(4)
    b.conv(other, 0, PIXEL, 1, [(-1, -1, w)])  # first to write `other`: moves
    b.add(dst, other, 1, copy=True)  # dst written ...
    b.conv(dst, 0, PIXEL, 1, [(-1, -1, w)])  # ... so this one stays
    b.conv(other, 0, PIXEL, 1, [(-1, -1, w)], accumulate=True)  # accumulating: stays
    phases = [(op["dst"], op["phase"]) for op in convs(b.plan)]
    assert phases == [(other, ROW), (dst, PIXEL), (other, PIXEL)]


def test_a_row_phase_op_may_not_overwrite_a_moved_conv():
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(2)
    dst = b.buffer(4)
    b.conv(dst, 0, PIXEL, 1, [(-1, -1, torch.randn(4, 2, 3))])
    with pytest.raises(AssertionError, match="which a hoisted conv fills"):
        b.relu(dst, dst, 1, phase=ROW)


# --- plans the engine must refuse or run position by position -----------------------------------


def with_field(program: list[int], code: str, field: str, value: int) -> list[int]:
    """``program`` with ``field`` of its first ``code`` op set to ``value``."""
    program, fields, at = list(program), list(OP_FIELDS), 0
    while program[at + 1] != OP_CODES[code]:
        at += program[at]
    program[at + 1 + fields.index(field)] = value
    return program


@pytest.mark.parametrize(
    "changes",
    [{"cell": "dst"}, {"phase": ROW, "prev_dy": 0, "prev_dx": 0}],
    ids=["cell is hidden", "previous cell here"],
)
def test_engine_refuses_an_lstm_cell_whose_states_overlap(changes):
    # The cell loop's pointers are restrict: the decoder refuses plans under which they would alias.
    model = PixelRNN("row", 1, 4, hidden_channels=2, num_layers=1)
    plan = lower(model)
    op = next(op for op in ops_of(plan.program) if op["code"] == OP_CODES["lstm_cell"])
    for field, value in changes.items():
        plan.program = with_field(plan.program, "lstm_cell", field, op[value] if isinstance(value, str) else value)
    x = torch.zeros(1, 1, 2, 2, dtype=torch.long)
    with pytest.raises(RuntimeError, match="hidden and cell buffers must differ"):
        run_engine(plan, x, x.bool(), x.double(), None, 1.0, 4, False)


def test_a_row_phase_conv_of_its_own_output_runs_position_by_position():
    # out(j) = bias + w . out(j - 1) along the row: each position reads the one the engine just
    # computed to its left, so this conv cannot run as one product over the row.
    levels, width = 3, 5
    w, bias = torch.tensor([[[0.5]], [[-0.25]], [[1.5]]]), torch.tensor([0.1, 0.2, -0.3])
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(1)
    out = b.buffer(levels)
    b.conv(out, out, ROW, 1, [(0, -1, w.expand(levels, levels, 1) * torch.eye(levels)[:, :, None])], bias=bias)
    logits = b.buffer(levels)
    b.add(logits, out, 1, copy=True)
    b.sample(logits, 1)
    x = torch.zeros(1, 1, 1, width, dtype=torch.long)
    _, got = run_engine(b.plan, x, torch.ones_like(x, dtype=torch.bool), x.double(), None, 1.0, levels, True)
    expected, value = [], torch.zeros(levels)
    for _ in range(width):
        value = bias + w.flatten() * value
        expected.append(value)
    torch.testing.assert_close(got[0, :, 0, 0], torch.stack(expected, 1))


@pytest.mark.parametrize("segment", [(0, 0), (0, 1)])
def test_engine_refuses_a_conv_reading_its_own_output_where_it_writes(segment):
    """Reading the position being written (or a later one on its row) races between the threads
    that write its channels and those that read them."""
    levels, width = 3, 5
    b = PlanBuilder(torch.float32, torch.device("cpu"))
    b.buffer(1)
    out = b.buffer(levels)
    b.conv(out, out, ROW, 1, [(*segment, torch.eye(levels)[:, :, None] * 0.5)])
    logits = b.buffer(levels)
    b.add(logits, out, 1, copy=True)
    b.sample(logits, 1)
    x = torch.zeros(1, 1, 1, width, dtype=torch.long)
    with pytest.raises(RuntimeError, match="may read only the positions before"):
        run_engine(b.plan, x, torch.ones_like(x, dtype=torch.bool), x.double(), None, 1.0, levels, True)
