"""The leads of docs/gpu_engine.md measured on this GPU: one cluster barrier (clusters of 8 and 16
blocks), one grid-wide barrier, and L2 read bandwidth with 16 clusters streaming the same weights
(bench/gpu_leads.cu, built here for this GPU only). Each is printed beside the value the design's
predictions assumed. For bench/gpu_check.sh; needs a CUDA GPU, a CUDA toolkit and ninja.

    python bench/gpu_leads.py [--iterations 100000] [--megabytes 22]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# What docs/gpu_engine.md's arithmetic assumed (its leads), for the comparison.
ASSUMED = {
    "cluster barrier, 8 blocks (us)": "0.2-0.3",
    "cluster barrier, 16 blocks (us)": "-",
    "grid barrier, one block per SM (us)": "about 1",
    "L2 read, 16 clusters x the weights (TB/s)": "about 10",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000, help="barriers per timed launch")
    parser.add_argument(
        "--megabytes", type=int, default=22, help="weights each cluster streams (the reference PixelCNN: 22)"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_leads: refused: no CUDA GPU visible", file=sys.stderr)
        return 2
    from torch.utils.cpp_extension import load

    build = os.path.join(ROOT, "build", "gpu_leads")
    os.makedirs(build, exist_ok=True)
    major, minor = torch.cuda.get_device_capability()
    arch = f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}"
    load(
        name="pixelfast_gpu_leads",
        sources=[os.path.join(HERE, "gpu_leads.cu")],
        extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr", arch],
        build_directory=build,
        is_python_module=False,
    )
    values = torch.ops.pixelfast_leads.leads(args.iterations, args.megabytes)
    print(f"{'lead':44} {'measured':>10} {'assumed':>10}")
    for (name, assumed), value in zip(ASSUMED.items(), values):
        shown = "refused" if value < 0 else f"{value:.3g}"
        print(f"{name:44} {shown:>10} {assumed:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
