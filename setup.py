"""Build of the C++ extension ``spn._C``.

The extension is optional at run time: if it cannot be built or imported, ``spn`` falls back
on the pure-PyTorch reference with a one-time warning. Build it after torch is installed:

    pip install --no-build-isolation -e .
"""
import os

from setuptools import setup

ext_modules = []
cmdclass = {}
if os.environ.get("SPN_NO_EXTENSION", "0") != "1":
    from torch.utils.cpp_extension import BuildExtension, CppExtension

    # no -ffast-math: the kernels must keep IEEE inf/NaN semantics and the reference's formulas
    # ((1 - s) x + sum g h_prev, not a rearranged form), which fast-math may rewrite
    # -ffp-contract=off: no fused multiply-adds, so the AVX2 and baseline builds of the kernels give
    # bit-identical results (and keep the reference's rounding steps)
    extra = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    if os.environ.get("SPN_NATIVE", "0") == "1":
        extra.append("-march=native")
    ext_modules = [
        CppExtension(
            name="spn._C",
            sources=["csrc/propagation.cpp"],
            extra_compile_args={"cxx": extra},
            extra_link_args=["-fopenmp"],
        )
    ]
    cmdclass = {"build_ext": BuildExtension.with_options(use_ninja=True)}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
