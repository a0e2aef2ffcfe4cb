"""Compile aiter JIT modules now, at image build time, into $AITER_JIT_DIR.

aiter compiles a CK module the first time one of its ops is called (85-363 s for the blockscale
GEMMs).  This does the same build ahead of time with the image's hipcc, for the GPU_ARCHS given to
the build, so a serving process finds the .so and starts at once.  It uses aiter's own build
entry points (the module list in aiter/jit/optCompilerConfig.json), so the result is exactly what
aiter would have built lazily.

Usage: prebuild_aiter.py MODULE [MODULE ...]     (no modules: nothing to do)
"""

from __future__ import annotations

import inspect
import os
import sys
import time


def prebuild(modules: list[str]) -> int:
    if not modules:
        print("aiter prebuild: this flavour selects no aiter CK module; nothing to compile")
        return 0
    jit_dir = os.environ.get("AITER_JIT_DIR")
    if not jit_dir:
        print("aiter prebuild: AITER_JIT_DIR is not set; refusing to build into the package directory",
              file=sys.stderr)
        return 2
    print(f"aiter prebuild: {' '.join(modules)} for GPU_ARCHS={os.environ.get('GPU_ARCHS')} into {jit_dir}")
    from aiter.jit import core  # imports aiter's JIT machinery (needs hipconfig, i.e. ROCm)

    params = inspect.signature(core.build_module).parameters
    for name in modules:
        started = time.time()
        args = core.get_args_of_build(name)
        if not args.get("srcs"):
            print(f"aiter prebuild: aiter {core.__file__} does not define module {name}", file=sys.stderr)
            return 2
        args["md_name"] = name
        hip_clang_path = args.get("hip_clang_path")
        if hip_clang_path and os.path.exists(hip_clang_path):
            os.environ["HIP_CLANG_PATH"] = hip_clang_path
        core.build_module(**{k: v for k, v in args.items() if k in params})
        built = os.path.join(jit_dir, f"{name}.so")
        if not os.path.exists(built):
            print(f"aiter prebuild: building {name} finished but {built} is missing", file=sys.stderr)
            return 1
        print(f"aiter prebuild: {name} built in {time.time() - started:.0f} s -> {built}")
    return 0


if __name__ == "__main__":
    sys.exit(prebuild(sys.argv[1:]))
