"""Kernels written in this repository. Import the submodules directly; this package imports nothing
heavy, so ``import rocm_fp8`` never pulls in triton."""
