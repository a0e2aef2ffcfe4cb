"""The toolchain facts the dispatch decision depends on (being split into model, detection and file format)."""

from rocm_fp8.toolchain import detection as _detection
from rocm_fp8.toolchain.detection import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_detection).items() if k.startswith("_") and not k.startswith("__")})
