"""Builds retina_kernels._C: the CPU kernels always, the CUDA kernels when torch was built with CUDA and
a CUDA toolkit is found (or FORCE_CUDA=1). Honours TORCH_CUDA_ARCH_LIST and MAX_JOBS (via torch's
BuildExtension). Build against the torch you already have with `pip install --no-build-isolation .`."""

import glob
import os

from setuptools import setup


def _sources(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern, recursive=True))


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    sources = ["csrc/ops/ops.cpp", *_sources("csrc/ops/cpu/*.cpp"), *_sources("csrc/core/*.cpp")]
    # -fno-trapping-math: we never read floating-point exception flags, and without it GCC will not turn
    # the kernels' data-dependent float selects into vector blends (soft_skeleton's backward: 1.5x).
    cxx_flags = ["-O3", "-Wall", "-fno-trapping-math"]
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = force_cuda or (torch.version.cuda is not None and CUDA_HOME is not None)
    if os.environ.get("RETINA_NO_CUDA", "0") == "1":
        with_cuda = False
    if not with_cuda:
        return [CppExtension("retina_kernels._C", sources, extra_compile_args={"cxx": cxx_flags})]
    sources += [*_sources("csrc/ops/cuda/*.cpp"), *_sources("csrc/core/*.cu")]
    return [
        CUDAExtension(
            "retina_kernels._C",
            sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
        )
    ]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(ext_modules=_extensions(), cmdclass=_cmdclass())
