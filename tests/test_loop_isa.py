"""The CPU loops (gate, LSTM cells, the sampling engine's pointwise ops) are compiled for the baseline
ISA, AVX2 + FMA and AVX-512, and the CPU picks the widest it runs (``common/cpu_isa.h``). The other
tests run only that one; here each build this machine can run computes the same work in its own
process (``PIXELFAST_LOOP_ISA`` caps the choice, read once per process). The AVX2 and AVX-512 builds
must agree exactly: the same per-element arithmetic with the same fused multiply-adds, only the
vector width differs. The baseline build has no FMA, so it rounds differently: it must agree to
float tolerance, and differ from them somewhere (which shows that the cap took effect)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

# Every op whose loops are dispatched, forward and backward, in float32 and float64.
WORK = r"""
import sys, torch, pixelfast
from pixelfast.models import GatedPixelCNN, PixelRNN
from pixelfast.ops import gated_activation

torch.manual_seed(0)
out = {}
for dtype in (torch.float32, torch.float64):
    for layout in (torch.contiguous_format, torch.channels_last):
        x = (torch.randn(2, 54, 5, 7, dtype=dtype) * 3).contiguous(memory_format=layout)
        x.requires_grad_(True)
        y = gated_activation(x, 3)
        y.backward(torch.randn_like(y))
        out[f"gate {dtype} {layout}"] = [y.detach(), x.grad]
    for kind in ("row", "diagonal"):
        model = PixelRNN(kind=kind, in_channels=3, levels=4, hidden_channels=12, num_layers=2).to(dtype)
        logits = model(torch.randint(0, 4, (2, 3, 6, 7)))
        (logits * torch.randn_like(logits)).sum().backward()
        out[f"{kind} {dtype}"] = [logits.detach()] + [p.grad for p in model.parameters()]
gated = GatedPixelCNN(in_channels=1, levels=16, hidden_channels=24, num_layers=3, num_classes=10).eval()
x = torch.randint(0, 16, (34, 1, 7, 9))
labels = torch.arange(34) % 10
out["engine logits"] = [pixelfast.incremental_logits(gated, x, labels)]
out["engine draws"] = [pixelfast.sample(gated, 34, size=(7, 9), labels=labels, generator=0, progress=False)]
torch.save(out, sys.argv[1])
"""

# The builds this CPU runs, by the widest vector ISA torch reports.
ISAS = {"DEFAULT": ["baseline"], "AVX2": ["baseline", "avx2"], "AVX512": ["baseline", "avx2", "avx512"]}


def run_with(isa: str, path) -> dict:
    env = {**os.environ, "PIXELFAST_LOOP_ISA": isa}
    subprocess.run([sys.executable, "-c", WORK, str(path)], env=env, check=True, timeout=300)
    return torch.load(path, weights_only=True)


def test_every_build_of_the_loops_computes_the_same(tmp_path):
    builds = ISAS.get(torch.backends.cpu.get_cpu_capability(), ["baseline"])
    if len(builds) < 2:
        pytest.skip("this CPU runs only the baseline build of the loops")
    results = {isa: run_with(isa, tmp_path / f"{isa}.pt") for isa in builds}
    widest = results[builds[-1]]
    for isa in builds[:-1]:
        assert results[isa].keys() == widest.keys()
        rounded_differently = False
        for key, tensors in widest.items():
            for got, expected in zip(results[isa][key], tensors, strict=True):
                message = f"{key}: the {isa} build differs from the {builds[-1]} one"
                if isa != "baseline":
                    assert torch.equal(got, expected), message
                elif key != "engine draws":  # a draw near a boundary may differ, and the image after it
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=message)
                    rounded_differently |= not torch.equal(got, expected)
        assert isa != "baseline" or rounded_differently, "PIXELFAST_LOOP_ISA=baseline changed nothing"
