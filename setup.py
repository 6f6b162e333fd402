"""Builds pixelfast's compiled ops with torch.utils.cpp_extension.

A CUDA build (CUDAExtension) when torch is a CUDA build and a CUDA toolkit with headers is found;
a CPU-only build (CppExtension) otherwise. A GPU is never needed to build.

Environment:
  PIXELFAST_CUDA=1 / =0   force the CUDA build (fail if impossible) / force the CPU-only build
  CUDA_HOME, CUDA_PATH    where the CUDA toolkit lives (else /usr/local/cuda)
  TORCH_CUDA_ARCH_LIST    GPU architectures to compile for (default below)
  MAX_JOBS                parallel compile jobs (ninja)

Install with `pip install --no-build-isolation .`: an isolated build compiles against a different
torch than the installed one, and the extension then fails to import.
"""

from __future__ import annotations

import glob
import os
import sys

import torch
from setuptools import setup

# Ampere, Ada-class Ampere and Hopper as machine code, and Hopper's PTX, which the driver JIT-compiles
# on any newer GPU (Blackwell and later) instead of failing with "no kernel image is available".
DEFAULT_ARCH_LIST = "8.0;8.6;9.0+PTX"
HERE = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder with nvcc and headers, or None.

    torch's own guess follows the `nvcc` on PATH, which can be a wrapper script in a folder with no
    headers; so look where toolkits really live first.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for folder in filter(None, candidates):
        if os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h")) and os.path.isfile(
            os.path.join(folder, "bin", "nvcc")
        ):
            return folder
    return None


def want_cuda() -> tuple[bool, str | None]:
    mode = os.environ.get("PIXELFAST_CUDA", "auto").strip().lower()
    cuda_home = find_cuda_home()
    possible = torch.version.cuda is not None and cuda_home is not None
    if mode in ("1", "true", "yes", "on"):
        if not possible:
            sys.exit(
                "PIXELFAST_CUDA=1 but a CUDA build is impossible: "
                + ("torch is a CPU-only build" if torch.version.cuda is None else "no CUDA toolkit found")
                + " (set CUDA_HOME to a toolkit with include/cuda_runtime.h and bin/nvcc)."
            )
        return True, cuda_home
    if mode in ("0", "false", "no", "off"):
        return False, None
    return possible, cuda_home


with_cuda, cuda_home = want_cuda()
if with_cuda:
    # torch.utils.cpp_extension reads these when it is imported.
    os.environ["CUDA_HOME"] = cuda_home
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

# Sources are listed relative to this file (setuptools wants relative paths).
cpp_sources = sorted(
    os.path.relpath(path, HERE) for path in glob.glob(os.path.join(HERE, "csrc", "**", "*.cpp"), recursive=True)
)
cuda_sources = sorted(
    os.path.relpath(path, HERE) for path in glob.glob(os.path.join(HERE, "csrc", "**", "*.cu"), recursive=True)
)

# py_limited_api=True: the module uses only CPython's stable ABI (its one Python call creates the
# empty module; everything else goes through torch.library), and torch's BuildExtension defines
# Py_LIMITED_API to its oldest supported Python (3.10 for current torch), so one wheel, tagged
# cp310-abi3 as requires-python says, serves every later Python.
# -fopenmp: the sampling engine runs its own thread team (the same OpenMP runtime as libtorch).
# Apple's clang has no -fopenmp; there the engine runs one thread (it checks _OPENMP).
openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
extra_compile_args = {"cxx": ["-O3", "-g0", *openmp]}
extra_link_args = openmp
if with_cuda:
    extra_compile_args["nvcc"] = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-Xcompiler", "-g0"]
    extension = CUDAExtension(
        "pixelfast._C",
        cpp_sources + cuda_sources,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
        define_macros=[("PIXELFAST_WITH_CUDA", "1")],
        py_limited_api=True,
    )
else:
    extension = CppExtension(
        "pixelfast._C",
        cpp_sources,
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link_args,
        py_limited_api=True,
    )


def write_build_info() -> None:
    """Record what this build was made for, so import can explain a mismatch instead of crashing."""
    with open(os.path.join(HERE, "pixelfast", "_build_info.py"), "w") as handle:
        handle.write(
            "# Written by setup.py at build time.\n"
            f"TORCH_VERSION = {torch.__version__!r}\n"
            f"WITH_CUDA = {with_cuda!r}\n"
            f"CUDA_ARCH_LIST = {os.environ.get('TORCH_CUDA_ARCH_LIST', '') if with_cuda else ''!r}\n"
        )


write_build_info()
print(
    f"pixelfast: building the {'CUDA' if with_cuda else 'CPU-only'} extension"
    + (f" (CUDA toolkit {cuda_home}, archs {os.environ['TORCH_CUDA_ARCH_LIST']})" if with_cuda else ""),
    file=sys.stderr,
)

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
