"""The backend protocol.

A backend is one way of computing ``y = dequant(xq, x_scale) @ dequant(wq, w_scale).T``.
It answers two questions, both returning ``(ok, reason)`` and never raising:

* ``available(toolchain)``: can it run on this machine at all (hardware, toolchain, imports)?
* ``supports(problem, toolchain)``: can it run this particular problem (shape, dtype, device)?

A reason is given only on failure, in words a user can act on. Correctness on a given toolchain
is *not* the backend's call: the known-issues ledger and the probe evidence decide that
(see ``rocm_fp8.evidence``), so a backend only reports what it can physically do.

Once a backend is chosen for a layer, ``prepare_weight`` runs once (weight shuffles, scale
layouts), then ``bind`` once per (layer, M bucket, output dtype): it returns the hot-path callable
``fn(x_q, x_scale) -> y``. ``x_q`` is 2-D FP8 ``[M, K]`` (K-contiguous unless the backend copes with
other strides), ``x_scale`` fp32 ``[M, ceil(K/128)]`` with any strides (row-major, or the
column-major view ``strides (1, M)``). The default ``bind`` wraps ``run``, so a backend may
implement ``run`` only; one that can precompute (a launch configuration, a grid, a warmed
launcher) overrides ``bind``. ``supports`` refuses an output dtype the kernel cannot write: the
dispatcher then asks for bfloat16 and casts once.

Third-party backends subclass :class:`Backend` (or implement the same attributes) and call
``rocm_fp8.register_backend``; the dispatcher and the probe then treat them like ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from rocm_fp8.quant import OUT_DTYPE_NAMES, quantize_activation

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from rocm_fp8.toolchain import Toolchain

OK: tuple[bool, str] = (True, "")


def refuse(reason: str) -> tuple[bool, str]:
    return (False, reason)


#: the weight block (N x K) of block-FP8 checkpoints, the only one our backends take (activations are
#: quantized per 1 x 128 group along K to match)
WEIGHT_BLOCK = (128, 128)


def check_block_and_out_dtype(name: str, problem: "Problem",
                              out_dtypes: "tuple[str, ...]" = OUT_DTYPE_NAMES) -> tuple[bool, str]:
    """The checks every GPU backend shares, in ``supports``' ``(ok, reason)`` form: 128x128 weight
    blocks, and an output dtype among ``out_dtypes`` (the ones the kernel itself writes)."""
    if (problem.block_n, problem.block_k) != WEIGHT_BLOCK:
        return refuse(f"{name}: supports 128x128 weight blocks only, got {problem.block_n}x{problem.block_k}")
    if problem.out_dtype not in out_dtypes:
        return refuse(f"{name}: output dtype must be {' or '.join(out_dtypes)}, got {problem.out_dtype}")
    return OK


@dataclass(frozen=True)
class Problem:
    """One FP8 block-scale GEMM: ``[M, K] x [N, K]^T -> [M, N]``.

    ``fp8_dtype`` is the weight's FP8 flavour name ("e4m3fn" or "e4m3fnuz"), ``device_type`` the
    torch device type the tensors live on ("cuda" for both CUDA and ROCm builds of torch, or "cpu").
    """

    m: int
    n: int
    k: int
    fp8_dtype: str = "e4m3fn"
    out_dtype: str = "bfloat16"
    block_n: int = 128
    block_k: int = 128
    device_type: str = "cuda"

    def with_m(self, m: int) -> "Problem":
        return Problem(m, self.n, self.k, self.fp8_dtype, self.out_dtype, self.block_n, self.block_k,
                       self.device_type)


@dataclass
class PreparedWeight:
    """A weight in the layout one backend wants, made once per layer.

    ``weight``/``weight_scale`` are what the backend's ``run`` receives; ``extra`` holds anything
    else the backend precomputed (a descriptor, a transposed scale).
    """

    backend: str
    weight: "torch.Tensor"
    weight_scale: "torch.Tensor"
    n: int
    k: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: (block_n, block_k) of ``weight_scale``; set by the dispatcher
    block: tuple[int, int] = (128, 128)


class Backend:
    """Base class for backends; subclasses override what differs.

    ``priority`` places a third-party backend in the default ranking (higher runs first). Built-ins
    are placed by the per-platform tables in :mod:`rocm_fp8.policy`, whose entries score 100, 90,
    80, ... in table order, with ``reference`` at 0; the default 50 ranks a third-party backend
    below the listed built-ins and above the reference.
    """

    name: str = "unnamed"
    description: str = ""
    priority: int = 50

    # -- "can it run here at all" ---------------------------------------------------------------
    def available(self, toolchain: "Toolchain") -> tuple[bool, str]:
        return OK

    # -- "can it run this problem" --------------------------------------------------------------
    def supports(self, problem: Problem, toolchain: "Toolchain") -> tuple[bool, str]:
        return OK

    # -- whether it holds a tuned configuration for this problem (lifts it in the ranking) -----
    def tuned_for(self, problem: Problem, toolchain: "Toolchain") -> bool:
        return False

    # -- measured speed for this problem in TFLOPS, from shipped tables, if any -------------------
    def measured_tflops(self, problem: Problem, toolchain: "Toolchain") -> Optional[float]:
        return None

    # -- once per layer ---------------------------------------------------------------------------
    def prepare_weight(self, weight: "torch.Tensor", weight_scale: "torch.Tensor") -> PreparedWeight:
        return PreparedWeight(self.name, weight, weight_scale, weight.shape[0], weight.shape[1])

    def quantize_input(self, x: "torch.Tensor", fp8_dtype: "torch.dtype", group_size: int = 128):
        """2-D float activations -> (x_q [M, K] fp8, x_scale [M, K/group] fp32)."""
        return quantize_activation(x, group_size, dtype=fp8_dtype)

    # -- once per (layer, M bucket, output dtype) ------------------------------------------------
    def bind(self, prepared: PreparedWeight, out_dtype: "torch.dtype",
             m_bucket: int) -> Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]:
        """The callable the dispatcher calls per request: ``fn(x_q, x_scale) -> y [M, N]`` in
        ``out_dtype`` for any M in the bucket (``m_bucket`` is its upper end). Default: ``run``."""
        run = self.run

        def call(x_q, x_scale):
            return run(x_q, x_scale, prepared, out_dtype)

        return call

    def bind_float_input(self, prepared: PreparedWeight, out_dtype: "torch.dtype", m_bucket: int,
                         fp8_dtype: "torch.dtype",
                         group_size: int) -> Optional[Callable[["torch.Tensor"], "torch.Tensor"]]:
        """Optional: a callable ``fn(x) -> y [M, N]`` for 2-D float activations that quantizes them
        itself, for a backend whose quantization can write its GEMM's operands directly (padded or
        in a special scale layout) so no copy sits between them. None (the default): the dispatcher
        calls ``quantize_input`` and then ``bind``'s callable."""
        return None

    # -- hot path ---------------------------------------------------------------------------------
    def run(self, x_q: "torch.Tensor", x_scale: "torch.Tensor", prepared: PreparedWeight,
            out_dtype: "torch.dtype") -> "torch.Tensor":
        raise NotImplementedError(f"backend {self.name!r} does not implement run()")

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def safe_call(fn, *args) -> tuple[bool, str]:
    """Run a backend's ``available``/``supports`` so that a bug in a third-party backend becomes a
    reason instead of an exception in the dispatcher."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - deliberately broad: the protocol says "never raise"
        return (False, f"raised {type(exc).__name__}: {exc}")
    if (not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], bool)):
        return (False, f"returned {result!r} instead of (ok, reason)")
    ok, reason = result
    return (True, "") if ok else (False, str(reason) or "refused without a reason")
