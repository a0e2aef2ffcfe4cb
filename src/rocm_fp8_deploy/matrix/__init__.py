"""The test matrix (being split into spec, plan, host GPUs, verdicts and run)."""

from rocm_fp8_deploy.matrix import run as _run
from rocm_fp8_deploy.matrix.run import *  # noqa: F401,F403

globals().update({k: v for k, v in vars(_run).items() if k.startswith("_") and not k.startswith("__")})
