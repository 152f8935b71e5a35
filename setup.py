"""Builds retina_kernels._C: the CPU kernels always, the CUDA kernels when torch was built with CUDA and
a CUDA toolkit is found (or FORCE_CUDA=1). Honours TORCH_CUDA_ARCH_LIST and MAX_JOBS (via torch's
BuildExtension). Build against the torch you already have with `pip install --no-build-isolation .`."""

import glob
import os
import shlex
import subprocess
import sys
import sysconfig

from setuptools import setup


def _sources(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern, recursive=True))


def _openmp_link_flag(torch) -> str:
    """at::parallel_for is a header template: compiled without OpenMP it runs the whole range on one
    thread (ATen's headers fall back when _OPENMP is undefined), and torch's extension builder does not
    add the flag. Link the OpenMP runtime torch ships (torch/lib/libgomp*, whatever its file name) so the
    process keeps one runtime and torch.set_num_threads governs our loops too; else the compiler's."""
    bundled = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")))
    return f"-l:{os.path.basename(bundled[0])}" if bundled else "-fopenmp"


def _compiler_has_openmp() -> bool:
    """Whether the C++ compiler the build will use takes -fopenmp and has <omp.h> (clang without libomp,
    say, has not); if not, the CPU kernels are built without OpenMP, and say so, rather than failing."""
    compiler = shlex.split(os.environ.get("CXX") or sysconfig.get_config_var("CXX") or "c++")
    probe = "#include <omp.h>\nint threads() { return omp_get_max_threads(); }\n"
    try:
        done = subprocess.run([*compiler, "-fopenmp", "-fsyntax-only", "-x", "c++", "-"], input=probe, text=True,
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if done.returncode != 0:
        print(f"retina: {' '.join(compiler)} has no OpenMP ({done.stderr.strip()[:200]}); the CPU kernels will "
              "run on one thread", file=sys.stderr)
    return done.returncode == 0


def _extensions():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    # The core's sources are found by the same globs as CMakeLists.txt's (csrc/core/*.cpp, *.cu), so CI's
    # sanitizer build compiles every file this build does.
    sources = ["csrc/ops/ops.cpp", *_sources("csrc/ops/cpu/*.cpp"), *_sources("csrc/core/*.cpp")]
    # -fno-trapping-math: we never read floating-point exception flags, and without it GCC will not turn
    # the kernels' data-dependent float selects into vector blends (soft_skeleton's backward: 1.5x).
    cxx_flags = ["-O3", "-Wall", "-fno-trapping-math"]
    link_flags = []
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available() and _compiler_has_openmp():
        cxx_flags.append("-fopenmp")
        link_flags.append(_openmp_link_flag(torch))
    force_cuda = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = force_cuda or (torch.version.cuda is not None and CUDA_HOME is not None)
    if os.environ.get("RETINA_NO_CUDA", "0") == "1":
        with_cuda = False
    if not with_cuda:
        return [CppExtension("retina_kernels._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=link_flags)]
    sources += [*_sources("csrc/ops/cuda/*.cpp"), *_sources("csrc/core/*.cu")]
    return [
        CUDAExtension(
            "retina_kernels._C",
            sources,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-lineinfo"]},
            extra_link_args=link_flags,
        )
    ]


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    return {"build_ext": BuildExtension.with_options(use_ninja=True)}


setup(ext_modules=_extensions(), cmdclass=_cmdclass())
