"""The Triton code of our FP8 block-scale GEMM (what runs on the GPU); the host side, its config
type and launchers, is :mod:`rocm_fp8.kernels.triton_blockscale`.

``blockscale_gemm_kernel``: each program computes a ``BLOCK_M x BLOCK_N`` tile (``_tile``), per
128-wide K block one FP8 dot into fp32 with both scales folded in (``_kstep``); a plain grid or a
persistent one, optional split-K into an fp32 workspace, optional TMA loads. ``splitk_reduce`` sums
the split-K partials into the output.
"""

from __future__ import annotations

import triton
import triton.language as tl

from rocm_fp8.kernels.quant_fp8 import quantize_groups


@triton.jit
def _kstep(acc, pa, pb, kb, pid_m, pid_n, a_ptr, b_ptr, a_offs, b_offs, as_ptrs, bs_ptrs, offs_k, K,
           stride_ak, stride_bk, stride_ask, stride_bsk,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
           USE_TMA: tl.constexpr, SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    """One 128-wide K block: an FP8 dot into fp32, scaled by the activation and weight scales.

    FRAME=False: ``acc += dot(a, b) * s`` (a multiply and an add per element per block).
    FRAME=True: ``acc`` is kept divided by the current block's scale (``pa`` per row, ``pb`` per
    column), so the tensor cores do the add: ``acc = dot(a, b, acc * s_prev / s)``; one multiply per
    element, fewer live registers (no separate product tile), and ``_tile`` multiplies the last scale
    back in. Scales are clamped to |s| >= 1e-15 so the division stays finite.
    Precision: the running sum then lives in the dot's accumulator for all of K. On NVIDIA Hopper
    FP8 wgmma accumulates with reduced precision, so the error grows with K (H100: 1.9e-3 at
    K=1536, 5.1e-3 at K=16384, against the 1.66e-3 bf16 rounding floor that FRAME=False keeps);
    the tuner's accuracy gate (tune.ACCURACY_SLACK) admits it only where it stays near the floor.
    """
    k0 = kb * BLOCK_K
    if USE_TMA:
        a = a_ptr.load([pid_m * BLOCK_M, k0])
        b = b_ptr.load([pid_n * BLOCK_N, k0])
    elif EVEN_K:
        a = tl.load(a_ptr + a_offs + k0 * stride_ak)
        b = tl.load(b_ptr + b_offs + k0 * stride_bk)
    else:
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptr + a_offs + k0 * stride_ak, mask=k_ok[None, :], other=0.0)
        b = tl.load(b_ptr + b_offs + k0 * stride_bk, mask=k_ok[None, :], other=0.0)
    a_s = tl.load(as_ptrs + kb * stride_ask)
    b_s = tl.load(bs_ptrs + kb * stride_bsk)
    if FRAME:
        a_s = tl.where(tl.abs(a_s) < 1e-15, 1e-15, a_s)
        b_s = tl.where(tl.abs(b_s) < 1e-15, 1e-15, b_s)
        if BLOCK_N > SCALE_BLOCK_N:
            ratio = (pa / a_s)[:, None] * (pb / b_s)[None, :]
            pb = b_s
        else:
            s = a_s * b_s
            ratio = (pa / s)[:, None]
            a_s = s
        acc = tl.dot(a, tl.trans(b), acc * ratio)
        pa = a_s
    else:
        part = tl.dot(a, tl.trans(b))
        if BLOCK_N > SCALE_BLOCK_N:
            acc += part * (a_s[:, None] * b_s[None, :])
        else:
            acc += part * (a_s * b_s)[:, None]
    return acc, pa, pb


@triton.jit
def _tile(tile_id, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr,
          M, N, K,
          stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
          stride_asm, stride_ask, stride_bsn, stride_bsk,
          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
          GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
          USE_TMA: tl.constexpr, SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    tiles_per_split = num_pid_m * num_pid_n
    split = tile_id // tiles_per_split
    t = tile_id % tiles_per_split
    # Grouped ordering: GROUP_M row-tiles share the same column tiles while they are in L2.
    group_size = GROUP_M * num_pid_n
    first_m = (t // group_size) * GROUP_M
    rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (t % group_size) % rows
    pid_n = (t % group_size) // rows

    k_blocks = tl.cdiv(K, BLOCK_K)
    kb_per_split = tl.cdiv(k_blocks, SPLIT_K)
    kb_lo = split * kb_per_split
    kb_hi = tl.minimum(kb_lo + kb_per_split, k_blocks)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # Wrap out-of-range rows/columns onto valid ones so the loads need no mask; the store drops them.
    offs_am = offs_m % M
    offs_bn = offs_n % N
    offs_k = tl.arange(0, BLOCK_K)

    as_ptrs = as_ptr + offs_am * stride_asm
    if BLOCK_N > SCALE_BLOCK_N:
        bs_ptrs = bs_ptr + (offs_bn // SCALE_BLOCK_N) * stride_bsn
    else:
        bs_ptrs = bs_ptr + (pid_n * BLOCK_N // SCALE_BLOCK_N) * stride_bsn
    # (unused when USE_TMA: the descriptors carry the addressing)
    a_ptrs = offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = offs_bn[:, None] * stride_bn + offs_k[None, :] * stride_bk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # FRAME: per-row (pa) and per-column (pb) scale the accumulator is currently divided by;
    # with BLOCK_N <= 128, pa holds the product of both scales and pb stays 1.
    pa = tl.full((BLOCK_M,), 1.0, tl.float32)
    pb = tl.full((BLOCK_N,), 1.0, tl.float32)
    for kb in range(kb_lo, kb_hi):
        acc, pa, pb = _kstep(acc, pa, pb, kb, pid_m, pid_n, a_ptr, b_ptr, a_ptrs, b_ptrs, as_ptrs, bs_ptrs,
                             offs_k, K, stride_ak, stride_bk, stride_ask, stride_bsk,
                             BLOCK_M, BLOCK_N, BLOCK_K, EVEN_K, USE_TMA, SCALE_BLOCK_N, FRAME)
    if FRAME:
        if BLOCK_N > SCALE_BLOCK_N:
            acc = acc * (pa[:, None] * pb[None, :])
        else:
            acc = acc * pa[:, None]

    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    if SPLIT_K == 1:
        c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
        tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)
    else:
        # fp32 partial sums, reduced in a fixed order by splitk_reduce (deterministic).
        w_ptrs = ws_ptr + split * M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(w_ptrs, acc, mask=mask)


# M, NUM_PROGRAMS and the scale strides vary between shapes without changing the code worth
# generating; not specializing them lets one compiled kernel per config serve every shape.
@triton.jit(do_not_specialize=["M", "NUM_PROGRAMS", "stride_asm", "stride_ask", "stride_bsn", "stride_bsk"])
def blockscale_gemm_kernel(a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr,
                           M, N, K,
                           stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                           stride_asm, stride_ask, stride_bsn, stride_bsk,
                           NUM_PROGRAMS,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
                           USE_TMA: tl.constexpr, PERSISTENT: tl.constexpr,
                           SCALE_BLOCK_N: tl.constexpr, FRAME: tl.constexpr):
    pid = tl.program_id(0)
    if PERSISTENT:
        num_tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N) * SPLIT_K
        for tile_id in range(pid, num_tiles, NUM_PROGRAMS):
            _tile(tile_id, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, M, N, K,
                  stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
                  stride_asm, stride_ask, stride_bsn, stride_bsk,
                  BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, EVEN_K, USE_TMA, SCALE_BLOCK_N,
                  FRAME)
    else:
        _tile(pid, a_ptr, b_ptr, c_ptr, as_ptr, bs_ptr, ws_ptr, M, N, K,
              stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn,
              stride_asm, stride_ask, stride_bsn, stride_bsk,
              BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, SPLIT_K, EVEN_K, USE_TMA, SCALE_BLOCK_N,
              FRAME)


# M is not specialized so that one compiled reduction serves every M of a bound layer (see BoundGemm).
@triton.jit(do_not_specialize=["M"])
def splitk_reduce(ws_ptr, c_ptr, M, N, stride_cm, stride_cn,
                  SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    total = M * N
    ok = offs < total
    acc = tl.load(ws_ptr + offs, mask=ok, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(ws_ptr + s * total + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(c_ptr + m * stride_cm + n * stride_cn, acc.to(c_ptr.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------------------
# Small M without tensor cores: one launch, quantizing a float activation itself
# ------------------------------------------------------------------------------------------------


@triton.jit
def _fma_group(acc, x_ptr, xs_ptr, w_ptr, ws_ptr, rows, cols, kk, g, K, KB,
               stride_xm, stride_sm, stride_sk, stride_wn, stride_wsn, stride_wsk,
               BLOCK_M: tl.constexpr, QUANT_A: tl.constexpr, FNUZ: tl.constexpr, RECIPROCAL: tl.constexpr,
               WIDE: tl.constexpr):
    """One 128-wide K group: ``acc [BM, BN] += (sum_k xq * wq) * (x_scale * w_scale)``, or with
    ``WIDE`` ``acc [BN, 128] += xq * wq * (x_scale * w_scale)`` (summed across K once, at the end). A
    group past K (the last step's tail) loads zeros and reads the last group's scales, adding 0."""
    g = tl.minimum(g, KB - 1)
    k_ok = kk < K
    w = tl.load(w_ptr + cols[:, None] * stride_wn + kk[None, :], mask=k_ok[None, :], other=0.0)
    x = tl.load(x_ptr + rows[:, None] * stride_xm + kk[None, :], mask=k_ok[None, :], other=0.0)
    if QUANT_A:
        # the quant kernel's own helper: the same FP8 bits and scale as quantize_fp8 + the GEMM
        q, xs = quantize_groups(x.to(tl.float32), w_ptr.dtype.element_ty, FNUZ, RECIPROCAL)
        xf = q.to(tl.float32)
    else:
        xf = x.to(tl.float32)
        xs = tl.load(xs_ptr + rows * stride_sm + g * stride_sk)
    wsc = tl.load(ws_ptr + (cols // 128) * stride_wsn + g * stride_wsk)
    # one row: a 2-D product in the weight tile's own layout
    if WIDE:
        acc = acc + (w.to(tl.float32) * xf) * (xs * wsc)[:, None]
    else:
        part = tl.sum(w.to(tl.float32) * xf, axis=1)[None, :]
        acc = acc + part * (xs[:, None] * wsc[None, :])
    return acc


@triton.jit(do_not_specialize=["M", "stride_xm", "stride_sm", "stride_sk"])
def fma_gemm_kernel(x_ptr, xs_ptr, w_ptr, ws_ptr, c_ptr, M, N, K,
                    stride_xm, stride_sm, stride_sk, stride_wn, stride_wsn, stride_wsk, stride_cm,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS: tl.constexpr,
                    QUANT_A: tl.constexpr, FNUZ: tl.constexpr, RECIPROCAL: tl.constexpr, WIDE: tl.constexpr):
    """``c [M, N] = x [M, K] @ w [N, K]^T`` with FP32 FMAs on the vector units, for M of a few rows.

    At decode M the tensor cores idle anyway: the GEMM streams the weight once, and what an eager
    call costs is launches. This kernel is one launch for FP8 input and for float input alike: with
    ``QUANT_A`` it quantizes each 1 x 128 group of the activation itself (``quantize_groups``, the
    fused quant kernel's code, so the FP8 values and scales are the same bits), and it needs no
    split-K reduction: each program owns one row's ``BLOCK_N`` outputs over all of K, walking K
    ``GROUPS`` groups per step (the loads of one step are issued together). Per group the products
    are summed in fp32 and scaled once, as the tensor-core kernel does. A partial last group is
    masked (zeros), columns past N are wrapped onto valid ones and dropped at the store. ``WIDE``
    (``KernelConfig.frame`` of an fma config) keeps a ``BLOCK_N x 128`` accumulator of scaled
    products instead and sums it across K once at the end: no cross-lane reduction per group.

    One row per program (``BLOCK_M`` must be 1): tiles of several rows (a 3-D product) were correct
    for FP8 input but returned wrong rows on the H200 when quantizing in the kernel, while exact
    under the interpreter, and were 13-60x slower than the tensor cores at M = 16 anyway.
    """
    tl.static_assert(BLOCK_M == 1, "the fma kernel computes one row per program")
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = offs_m % M
    cols = offs_n % N
    KB = tl.cdiv(K, 128)
    if WIDE:
        acc = tl.zeros((BLOCK_N, 128), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, GROUPS * 128):
        for j in tl.static_range(GROUPS):
            kk = k0 + j * 128 + tl.arange(0, 128)
            acc = _fma_group(acc, x_ptr, xs_ptr, w_ptr, ws_ptr, rows, cols, kk, k0 // 128 + j, K, KB,
                             stride_xm, stride_sm, stride_sk, stride_wn, stride_wsn, stride_wsk,
                             BLOCK_M, QUANT_A, FNUZ, RECIPROCAL, WIDE)
    if WIDE:
        acc = tl.sum(acc, axis=1)[None, :]
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)
