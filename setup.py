"""Builds the C++ extension ``innovwin._native`` from ``csrc/``.

Portable by default: no ``-march=native`` (popcount is dispatched at run time in the
sources). Set ``INNOVWIN_MARCH_NATIVE=1`` to build for the building machine's CPU.
"""
import glob
import os

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_packages, setup

ParallelCompile("INNOVWIN_BUILD_JOBS", default=0).install()

extra_compile_args = ["-O3", "-pthread", "-fvisibility=hidden"]
if os.environ.get("INNOVWIN_MARCH_NATIVE") == "1":
    extra_compile_args.append("-march=native")

native = Pybind11Extension(
    "innovwin._native",
    sorted(glob.glob("csrc/*.cpp")),
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=extra_compile_args,
    extra_link_args=["-pthread"],
)

setup(
    packages=find_packages(include=["innovwin", "innovwin.*"]) + ["innovwin.kernels"],
    package_dir={"innovwin": "innovwin", "innovwin.kernels": "kernels"},
    package_data={"innovwin.sweeps.presets": ["*.toml"]},
    ext_modules=[native],
    cmdclass={"build_ext": build_ext},
)
