"""The CUDA kernels, run on the CPU: a test-only extension that compiles pixelfast's device code
(``csrc/**/*.cuh``) with g++ under ``cuda_emulation.h`` and registers each kernel as an op of the
``pixelfast_emulated`` library, taking CPU tensors and the launch shape (threads per block, blocks)
and the emulated schedule (0 forward, 1 reverse, 2 random with a seed).

Built with ``torch.utils.cpp_extension.load`` into ``build/emulation`` of the checkout (about a minute
on two cores, then only when a source changes) the first time a test asks for it; the tests compare
its ops with the CPU kernels of ``pixelfast._C``.
"""

from __future__ import annotations

import functools
import glob
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")

# Host-only sources the emulated ops share with pixelfast._C (argument checks, plan decoding, the
# scan drivers); they hold no op registrations, so compiling them twice registers nothing twice.
HOST_SOURCES = [
    os.path.join(CSRC, "sampler", "plan_decode.cpp"),
    os.path.join(CSRC, "lstm", "lstm_scan.cpp"),
]

SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}


@functools.cache
def load():
    """The ``torch.ops.pixelfast_emulated`` namespace, building the extension if needed."""
    from torch.utils.cpp_extension import load as load_extension

    sources = sorted(glob.glob(os.path.join(HERE, "*.cpp"))) + HOST_SOURCES
    build_directory = os.path.join(ROOT, "build", "emulation")
    os.makedirs(build_directory, exist_ok=True)
    load_extension(
        name="pixelfast_emulated",
        sources=sources,
        extra_include_paths=[CSRC, HERE],
        extra_cflags=["-O1", "-g0", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=build_directory,
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.pixelfast_emulated
