"""A Hopper (sm90) FP8 block-scale GEMM written in Gluon (Triton's explicit-layout dialect).

Same contract as :mod:`rocm_fp8.kernels.triton_blockscale`: ``y[M, N] = dequant(x_q, x_scale) @
dequant(w_q, w_scale)^T`` with 1 x 128 activation groups (``x_scale [M, K/128]``, any strides) and
128 x 128 weight blocks (``w_scale [ceil(N/128), K/128]``, any strides), fp32 promotion per 128-wide
K block, bf16/fp16/fp32 out. Restricted to what TMA needs: K a multiple of 128, x_q/w_q
K-contiguous with 16-byte aligned rows and base pointers.

Kernels, chosen by ``GluonConfig.variant``:

- ``"pipelined"`` (one partition, 8 warps = two warpgroups over a 128-row tile): a TMA ring of
  ``stages`` (A, B) slots filled ahead by the same warps; per K block an async wgmma, a wait, then
  the promotion ``acc += block * (a_scale[row] * b_scale)`` in fp32 registers.
- ``"ws"`` (warp-specialized, the scheme DeepGEMM published): a 1-warp producer partition issues
  the TMA loads into the ring (``full``/``empty`` mbarriers per slot); two 4-warp consumer
  partitions each own 64 rows of the 128 x BN tile, issue their wgmma, wait for it, release the
  slot and promote. The two consumers synchronise only through the ring, so one promotes while
  the other's wgmma runs on the tensor cores.

- ``"ws2"`` (version 2, the same ring and partitions) changes what the H200 run of ``ws`` pointed
  at: ``scales="smem"`` has the producer copy each slot's scales (128 activation scales, the weight
  block scale per 128 columns) into the slot with cp.async, tracked by the slot's ``full`` barrier,
  so a consumer reads them from shared memory instead of waiting on global loads before each
  wgmma (``"ahead"``: loaded two K blocks ahead into registers; ``"load"``: as ``ws``);
  ``tma_store`` writes the tile through shared memory with a TMA store that the next tile does not
  wait for; ``block_n=256`` runs two m64n128 wgmmas per K block and consumer, each promoted at once
  (a 64x256 accumulator and one 64x128 block result live).
  Version 3 (same variant): ``epilogue_bufs=1`` (one output buffer per consumer, so BN 256 fits 4
  stages), a BN 256 tile whose second column block lies past N skips that block's wgmma, and
  ``block_n=192``: a 128-wide and a 64-wide part per tile (each inside one weight block), one
  m64n128 and one m64n64 wgmma per K block and consumer.

All are persistent (grid = SMs, grouped tile order for L2 reuse); ``pipelined``, ``ws`` and
``ws_lag`` store the output with plain masked stores from the wgmma register layout.

This module imports Triton's Gluon at import time: import it only through
:func:`unavailable_reason` / :func:`load`, which check the Triton version (written for 3.6.x,
whose Gluon API it uses) and the device first. ``import rocm_fp8`` never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Optional

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import warpgroup_mma_init
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from rocm_fp8.kernels import gluon_support

GROUP_K = 128
GROUP_N = 128
BLOCK_M = 128
_SCALE_N = gl.constexpr(GROUP_N)  # the weight block along N, as the device code sees it
VARIANTS = ("pipelined", "ws", "ws_lag", "ws2")
SCALE_SOURCES = ("smem", "ahead", "load")
SM90_SHARED_BYTES = gluon_support.SM90_SHARED_BYTES  # 227 KiB: the most one block may opt in to on H100/H200


@dataclass(frozen=True)
class GluonConfig:
    variant: str = "ws"
    block_n: int = 128
    stages: int = 4
    group_m: int = 8
    producer_regs: int = 40
    consumer_regs: int = 232
    #: ws2 only, where the consumers get each K block's scales: "smem" (the producer copies them into
    #: the ring slot with cp.async, tracked by the slot's barrier), "ahead" (the consumers load them
    #: two K blocks ahead into registers), "load" (loaded per K block before the barrier wait, as ws)
    scales: str = "smem"
    #: ws2 only: write the tile through shared memory with a TMA store (bf16/fp16 out, TMA-able
    #: out; other outputs take ws's plain stores) instead of plain stores from registers
    tma_store: bool = True
    #: ws2 with the TMA store at BN 256 only: output buffers per consumer. 2 (v2): one per 128-wide
    #: column block, so the second block's store does not wait for the first's; 1 (v3): the second
    #: block waits until the TMA engine has read the first out of the buffer, which frees 32 KiB of
    #: shared memory (BN 256 with 4 ring stages fits, scales "load")
    epilogue_bufs: int = 2

    def validate(self) -> "GluonConfig":
        if self.variant not in VARIANTS:
            raise ValueError(f"config.variant: expected one of {VARIANTS}, got {self.variant!r}")
        if self.block_n not in (64, 128, 192, 256):
            raise ValueError(f"config.block_n: expected 64, 128, 192 (ws2) or 256, got {self.block_n}")
        if not 2 <= self.stages <= 8:
            raise ValueError(f"config.stages: expected 2..8, got {self.stages}")
        if self.scales not in SCALE_SOURCES:
            raise ValueError(f"config.scales: expected one of {SCALE_SOURCES}, got {self.scales!r}")
        if self.variant == "ws2" and self.block_n not in (128, 192, 256):
            raise ValueError(f"config.block_n: ws2 takes 128, 192 or 256, got {self.block_n}")
        if self.variant != "ws2" and self.block_n == 192:
            raise ValueError(f"config.block_n: 192 is ws2's (v3), {self.variant} takes 64, 128 or 256")
        if self.block_n == 192 and self.scales == "ahead":
            raise ValueError("config.scales: ws2 at BN 192 takes 'smem' or 'load', got 'ahead'")
        if self.epilogue_bufs not in (1, 2):
            raise ValueError(f"config.epilogue_bufs: expected 1 or 2, got {self.epilogue_bufs}")
        if self.group_m < 1:
            raise ValueError(f"config.group_m: expected >= 1, got {self.group_m}")
        need = self.shared_bytes()
        if need > SM90_SHARED_BYTES:
            raise ValueError(f"config.stages: {self.stages} stages of a {BLOCK_M}x{self.block_n} tile need "
                             f"{need // 1024} KiB of shared memory, sm90 has {SM90_SHARED_BYTES // 1024} KiB per block")
        return self

    def shared_bytes(self, out_bytes: int = 2) -> int:
        """The ring's FP8 A and B tiles plus barriers, and ws2's output tiles when it stores with TMA
        and its staged scales (what the compiled kernel reports, within 1 KiB)."""
        return gluon_support.gluon_shared_bytes(self.variant, self.block_n, self.stages, self.scales,
                                                self.tma_store, self.epilogue_bufs, out_bytes)


# ------------------------------------------------------------------------------------------------
# Device code
# ------------------------------------------------------------------------------------------------


@gluon.jit
def _tile_coords(t, num_pid_m, num_pid_n, group_m):
    # grouped order: GROUP_M row tiles walk the same column tiles while those are in L2
    group_size = group_m * num_pid_n
    first_m = (t // group_size) * group_m
    rows = gl.minimum(num_pid_m - first_m, group_m)
    pid_m = first_m + (t % group_size) % rows
    pid_n = (t % group_size) // rows
    return pid_m, pid_n


@gluon.jit
def _scales(as_ptr, bs_ptr, off_m, off_n, kb, M, N, stride_asm, stride_ask, stride_bsn, stride_bsk,
            ROWS: gl.constexpr, BN: gl.constexpr, layout: gl.constexpr):
    """The K block's scale factor of each accumulator element, as [ROWS, 1] (one weight block across
    the tile: BN <= 128) or [ROWS, BN]. Issued before the block's wgmma so the loads' latency hides
    behind the barrier wait and the MMA."""
    rows = off_m + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    a_s = gl.load(as_ptr + rows * stride_asm + kb * stride_ask, mask=rows < M, other=0.0)
    if BN <= _SCALE_N:
        b_s = gl.load(bs_ptr + (off_n // _SCALE_N) * stride_bsn + kb * stride_bsk)
        scale = gl.expand_dims(a_s * b_s, 1)
    else:
        cols = off_n + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
        b_s = gl.load(bs_ptr + (cols // _SCALE_N) * stride_bsn + kb * stride_bsk, mask=cols < N, other=0.0)
        scale = gl.expand_dims(a_s, 1) * gl.expand_dims(b_s, 0)
    return scale


@gluon.jit
def _store(c_ptr, acc, off_m, off_n, M, N, stride_cm, stride_cn,
           ROWS: gl.constexpr, BN: gl.constexpr, layout: gl.constexpr):
    rows = off_m + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    cols = off_n + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
    ptrs = c_ptr + gl.expand_dims(rows, 1) * stride_cm + gl.expand_dims(cols, 0) * stride_cn
    mask = gl.expand_dims(rows < M, 1) & gl.expand_dims(cols < N, 0)
    gl.store(ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


# ---- pipelined: one partition, TMA ring refilled by the same warps ----------------------------


@gluon.jit(do_not_specialize=["M", "stride_asm", "stride_ask", "stride_bsn", "stride_bsk"])
def gemm_pipelined_kernel(a_desc, b_desc, c_ptr, as_ptr, bs_ptr, M, N, K,
                          stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk,
                          BN: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
                          num_warps: gl.constexpr):
    BM: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                     instr_shape=[16, BN, 32])
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES, BM, BK], a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BN, BK], b_desc.layout)
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)
    fence_async_shared()
    tile_bytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes

    num_pid_m = gl.cdiv(M, BM)
    num_pid_n = gl.cdiv(N, BN)
    k_blocks = K // BK
    zero = gl.zeros([BM, BN], gl.float32, layout)
    it = 0  # K blocks consumed so far by this program (slot = it % STAGES)
    for t in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BM
        off_n = pid_n * BN
        # prologue: the first STAGES-1 K blocks of this tile
        for j in gl.static_range(STAGES - 1):
            sp = (it + j) % STAGES
            okp = j < k_blocks
            mbarrier.expect(full.index(sp), tile_bytes, pred=okp)
            tma.async_copy_global_to_shared(a_desc, [off_m, j * BK], full.index(sp), a_bufs.index(sp), pred=okp)
            tma.async_copy_global_to_shared(b_desc, [off_n, j * BK], full.index(sp), b_bufs.index(sp), pred=okp)
        acc = gl.zeros([BM, BN], gl.float32, layout)
        for kb in range(k_blocks):
            s = it % STAGES
            scale = _scales(as_ptr, bs_ptr, off_m, off_n, kb, M, N, stride_asm, stride_ask, stride_bsn, stride_bsk,
                            BM, BN, layout)
            mbarrier.wait(full.index(s), (it // STAGES) & 1)
            blk = warpgroup_mma(a_bufs.index(s), b_bufs.index(s).permute((1, 0)), zero,
                                use_acc=False, is_async=True)
            blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_bufs.index(s), b_bufs.index(s)))
            # every warpgroup is done with the slot consumed one iteration ago: refill it
            gl.thread_barrier()
            nxt = kb + STAGES - 1
            ok = nxt < k_blocks
            sn = (it + STAGES - 1) % STAGES
            mbarrier.expect(full.index(sn), tile_bytes, pred=ok)
            tma.async_copy_global_to_shared(a_desc, [off_m, nxt * BK], full.index(sn), a_bufs.index(sn), pred=ok)
            tma.async_copy_global_to_shared(b_desc, [off_n, nxt * BK], full.index(sn), b_bufs.index(sn), pred=ok)
            acc += blk * scale  # the promotion: fp32, exact per K block
            it += 1
        _store(c_ptr, acc, off_m, off_n, M, N, stride_cm, stride_cn, BM, BN, layout)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(full.index(i))


# ---- warp-specialized: producer warp + two consumer warpgroups --------------------------------


@gluon.jit
def _ws_producer(a_desc, b_desc, a_bufs, b_bufs, full, empty, M, N, K, group_m):
    # (constexprs do not survive warp_specialize's argument tuples in Triton 3.6: the tile sizes
    # come from the buffers' shapes, the L2 grouping is a runtime integer)
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    BN: gl.constexpr = b_bufs.type.shape[1]
    HALF: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    tile_bytes: gl.constexpr = 2 * a_desc.block_type.nbytes + b_desc.block_type.nbytes
    num_pid_m = gl.cdiv(M, 2 * HALF)
    num_pid_n = gl.cdiv(N, BN)
    k_blocks = K // BK
    it = 0
    for t in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, group_m)
        off_m = pid_m * 2 * HALF
        off_n = pid_n * BN
        for kb in range(k_blocks):
            s = it % STAGES
            # a fresh barrier passes a wait on parity 1, so the first lap does not block
            mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
            mbarrier.expect(full.index(s), tile_bytes)
            tma.async_copy_global_to_shared(a_desc, [off_m, kb * BK], full.index(s), a_bufs.index(2 * s))
            tma.async_copy_global_to_shared(a_desc, [off_m + HALF, kb * BK], full.index(s), a_bufs.index(2 * s + 1))
            tma.async_copy_global_to_shared(b_desc, [off_n, kb * BK], full.index(s), b_bufs.index(s))
            it += 1


@gluon.jit
def _ws_consumer(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                 stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m,
                 PART: gl.constexpr, LAG: gl.constexpr):
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    BN: gl.constexpr = b_bufs.type.shape[1]
    HALF: gl.constexpr = a_bufs.type.shape[1]
    BK: gl.constexpr = a_bufs.type.shape[2]
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, BN, 32])
    num_pid_m = gl.cdiv(M, 2 * HALF)
    num_pid_n = gl.cdiv(N, BN)
    k_blocks = K // BK
    zero = gl.zeros([HALF, BN], gl.float32, layout)
    it = 0
    for t in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, group_m)
        off_m = pid_m * 2 * HALF + PART * HALF
        off_n = pid_n * BN
        acc = gl.zeros([HALF, BN], gl.float32, layout)
        if LAG:
            # one wgmma in flight: block kb is issued before block kb-1 is waited for and promoted,
            # so this warpgroup's own promotion overlaps its next MMA (three 64xBN fp32 tiles live)
            prev = warpgroup_mma_init(zero)
            prev_scale = _scales(as_ptr, bs_ptr, off_m, off_n, 0, M, N, stride_asm, stride_ask, stride_bsn,
                                 stride_bsk, HALF, BN, layout) * 0.0
            prev_slot = 0
            for kb in range(k_blocks):
                s = it % STAGES
                scale = _scales(as_ptr, bs_ptr, off_m, off_n, kb, M, N, stride_asm, stride_ask, stride_bsn,
                                stride_bsk, HALF, BN, layout)
                mbarrier.wait(full.index(s), (it // STAGES) & 1)
                a_s = a_bufs.index(2 * s + PART)
                b_s = b_bufs.index(s)
                cur = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
                done = warpgroup_mma_wait(num_outstanding=1, deps=(prev, ))
                mbarrier.arrive(empty.index(prev_slot), pred=kb > 0)
                acc += done * prev_scale  # (kb == 0: the placeholder, times a zero scale)
                prev = cur
                prev_scale = scale
                prev_slot = s
                it += 1
            done = warpgroup_mma_wait(num_outstanding=0, deps=(prev, ))
            mbarrier.arrive(empty.index(prev_slot), pred=k_blocks > 0)
            acc += done * prev_scale
        else:
            for kb in range(k_blocks):
                s = it % STAGES
                scale = _scales(as_ptr, bs_ptr, off_m, off_n, kb, M, N, stride_asm, stride_ask, stride_bsn,
                                stride_bsk, HALF, BN, layout)
                mbarrier.wait(full.index(s), (it // STAGES) & 1)
                a_s = a_bufs.index(2 * s + PART)
                b_s = b_bufs.index(s)
                blk = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
                blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_s))
                mbarrier.arrive(empty.index(s))  # this consumer is done with the slot
                acc += blk * scale
                it += 1
        _store(c_ptr, acc, off_m, off_n, M, N, stride_cm, stride_cn, HALF, BN, layout)


@gluon.jit
def _ws_consumer0(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                  stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m):
    _ws_consumer(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                 stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m, 0, False)


@gluon.jit
def _ws_lag_consumer0(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                      stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m):
    _ws_consumer(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                 stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m, 0, True)


@gluon.jit
def _ws_consumer1(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                  stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m):
    _ws_consumer(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                 stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m, 1, False)


@gluon.jit
def _ws_lag_consumer1(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                      stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m):
    _ws_consumer(a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                 stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, group_m, 1, True)


@gluon.jit(do_not_specialize=["M", "stride_asm", "stride_ask", "stride_bsn", "stride_bsk"])
def gemm_ws_kernel(a_desc, b_desc, c_ptr, as_ptr, bs_ptr, M, N, K,
                   stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk,
                   BN: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
                   PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr, LAG: gl.constexpr):
    HALF: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    # slot s holds A rows [0, 64) in a_bufs[2s], rows [64, 128) in a_bufs[2s+1], B in b_bufs[s]
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [2 * STAGES, HALF, BK], a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BN, BK], b_desc.layout)
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)   # the producer's expect-tx arrival
        mbarrier.init(empty.index(i), count=2)  # one arrival per consumer warpgroup
    fence_async_shared()
    consumer_args = (a_bufs, b_bufs, full, empty, c_ptr, as_ptr, bs_ptr, M, N, K,
                     stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk, GROUP_M)
    producer_args = (a_desc, b_desc, a_bufs, b_bufs, full, empty, M, N, K, GROUP_M)
    if LAG:
        gl.warp_specialize([(_ws_lag_consumer0, consumer_args), (_ws_lag_consumer1, consumer_args),
                            (_ws_producer, producer_args)], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([(_ws_consumer0, consumer_args), (_ws_consumer1, consumer_args),
                            (_ws_producer, producer_args)], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# ---- ws2: scales prefetched ahead, TMA-store epilogue, BN 256 as two 128-wide wgmmas ----------


@gluon.jit
def _row_scales(as_ptr, off_m, kb, k_blocks, M, stride_asm, stride_ask, ROWS: gl.constexpr, layout: gl.constexpr):
    """The [ROWS] activation scales of K block ``kb`` (zeros past the last K block: a prefetch that
    runs off the tile's K loop loads nothing)."""
    rows = off_m + gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
    return gl.load(as_ptr + rows * stride_asm + kb * stride_ask, mask=(rows < M) & (kb < k_blocks), other=0.0)


@gluon.jit
def _col_scale(bs_ptr, col0, kb, k_blocks, N, stride_bsn, stride_bsk):
    """The weight block scale of the 128-wide column block starting at ``col0`` (0 past N or K)."""
    return gl.load(bs_ptr + (col0 // _SCALE_N) * stride_bsn + kb * stride_bsk, mask=(col0 < N) & (kb < k_blocks),
                   other=0.0)


@gluon.jit
def _ws2_epilogue(acc, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, idx,
                  ROWS: gl.constexpr, SUB: gl.constexpr, layout: gl.constexpr, TMA_STORE: gl.constexpr,
                  PENDING: gl.constexpr):
    if TMA_STORE:
        # the previous tile's store out of this buffer must have read it before it is overwritten:
        # the first column block's epilogue waits for every earlier store (issued a K loop ago), the
        # second's lets the first's (PENDING = 1, another buffer) run on
        tma.store_wait(PENDING)
        gl.thread_barrier()
        buf = c_smem.index(idx)
        buf.store(acc.to(c_desc.dtype))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(c_desc, [off_m, off_n], buf)  # rows >= M, cols >= N are clipped
    else:
        _store(c_ptr, acc, off_m, off_n, M, N, stride_cm, stride_cn, ROWS, SUB, layout)


@gluon.jit
def _ws2_producer(a_desc, b_desc, b_desc2, a_bufs, b_bufs, b_small, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr,
                  M, N, K,
                  stride_asm, stride_ask, stride_bsn, stride_bsk, group_m):
    """ws's producer, plus (scales "smem") each slot's scales: the tile's 128 activation scales and
    the weight block scale of each 128-wide column block (repeated 64 times, so a consumer reads
    it like its row scales), copied with cp.async (4 bytes each, no register round trip: the warp
    never waits for them) and tracked by the slot's ``full`` barrier, which completes only when
    these copies and the TMA bytes have landed."""
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    # BN 192 (v3): the tile's 128-wide part goes to b_bufs, its 64-wide part to b_small (Triton's
    # blocks are powers of two); an odd tile column starts mid-block, so its parts swap places
    B192: gl.constexpr = b_small.type.shape[1] == 64
    BN: gl.constexpr = 192 if b_small.type.shape[1] == 64 else b_bufs.type.shape[1]
    HALF: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    SMEM_SCALES: gl.constexpr = sa_smem.type.shape[1] == 2 * HALF
    SB: gl.constexpr = sb_smem.type.shape[1]
    tile_bytes: gl.constexpr = (2 * a_desc.block_type.nbytes + b_desc.block_type.nbytes
                                + (b_desc2.block_type.nbytes if b_small.type.shape[1] == 64 else 0))
    ra_layout: gl.constexpr = gl.BlockedLayout([2 * HALF // 32], [32], [1], [0])
    rb_layout: gl.constexpr = gl.BlockedLayout([SB // 32], [32], [1], [0])
    num_pid_m = gl.cdiv(M, 2 * HALF)
    num_pid_n = gl.cdiv(N, BN)
    k_blocks = K // BK
    it = 0
    for t in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, group_m)
        off_m = pid_m * 2 * HALF
        off_n = pid_n * BN
        if SMEM_SCALES:
            rows = off_m + gl.arange(0, 2 * HALF, layout=ra_layout)
            a_base = as_ptr + rows * stride_asm
            a_mask = rows < M
            # element j: the weight block (off_n // 128) + j // 64; BN 192: the 128-wide part's block
            # first, then the 64-wide part's (on an odd tile column that is the other order)
            if B192:
                blk_n = off_n // _SCALE_N + ((gl.arange(0, SB, layout=rb_layout) // HALF) ^ (pid_n % 2))
            else:
                blk_n = off_n // _SCALE_N + gl.arange(0, SB, layout=rb_layout) // HALF
            b_base = bs_ptr + blk_n * stride_bsn
            b_mask = blk_n * _SCALE_N < N
        for kb in range(k_blocks):
            s = it % STAGES
            mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
            if SMEM_SCALES:
                async_copy.async_copy_global_to_shared(sa_smem.index(s), a_base + kb * stride_ask, mask=a_mask)
                async_copy.async_copy_global_to_shared(sb_smem.index(s), b_base + kb * stride_bsk, mask=b_mask)
                # (no count: the phase waits for this warp's copies without needing another arrival)
                async_copy.mbarrier_arrive(full.index(s), increment_count=True)
            mbarrier.expect(full.index(s), tile_bytes)
            tma.async_copy_global_to_shared(a_desc, [off_m, kb * BK], full.index(s), a_bufs.index(2 * s))
            tma.async_copy_global_to_shared(a_desc, [off_m + HALF, kb * BK], full.index(s), a_bufs.index(2 * s + 1))
            if B192:
                odd = pid_n % 2
                tma.async_copy_global_to_shared(b_desc, [off_n + odd * 64, kb * BK], full.index(s), b_bufs.index(s))
                tma.async_copy_global_to_shared(b_desc2, [off_n + (1 - odd) * 128, kb * BK], full.index(s),
                                                b_small.index(s))
            else:
                tma.async_copy_global_to_shared(b_desc, [off_n, kb * BK], full.index(s), b_bufs.index(s))
            it += 1


@gluon.jit
def _ws2_kloop_p0(a_bufs, b_bufs, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr, off_m, off_n, M, N, k_blocks,
                  stride_asm, stride_ask, stride_bsn, stride_bsk, acc0, acc1, zero, it,
                  PART: gl.constexpr, SMEM_SCALES: gl.constexpr, TWO: gl.constexpr, layout: gl.constexpr):
    """ws2's K loop at BN 256 with the scales staged or loaded per K block (not "ahead"), for a tile
    whose two 128-wide column blocks both lie (partly) inside N (TWO) or whose second lies wholly past
    N (v3: e.g. N = 2112, the last tile column; its wgmma would only multiply TMA's zero fill, so it
    is skipped). One loop per case, chosen per tile: a branch inside the loop made ptxas spill."""
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    HALF: gl.constexpr = a_bufs.type.shape[1]
    SUB: gl.constexpr = 128
    rows_layout: gl.constexpr = gl.SliceLayout(1, layout)
    for kb in range(k_blocks):
        s = it % STAGES
        if SMEM_SCALES:
            mbarrier.wait(full.index(s), (it // STAGES) & 1)
            sa = sa_smem.index(s).slice(PART * HALF, HALF).load(rows_layout)
            sb = sb_smem.index(s).slice(0, HALF).load(rows_layout)
            if TWO:
                sc = sb_smem.index(s).slice(HALF, HALF).load(rows_layout)
        else:
            sa = _row_scales(as_ptr, off_m, kb, k_blocks, M, stride_asm, stride_ask, HALF, layout)
            sb = _col_scale(bs_ptr, off_n, kb, k_blocks, N, stride_bsn, stride_bsk)
            if TWO:
                sc = _col_scale(bs_ptr, off_n + SUB, kb, k_blocks, N, stride_bsn, stride_bsk)
            mbarrier.wait(full.index(s), (it // STAGES) & 1)
        a_s = a_bufs.index(2 * s + PART)
        b_s = b_bufs.index(s)
        b_0 = b_s.slice(0, SUB)
        blk = warpgroup_mma(a_s, b_0.permute((1, 0)), zero, use_acc=False, is_async=True)
        blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_0))
        if TWO:
            acc0 += blk * gl.expand_dims(sa * sb, 1)
            b_1 = b_s.slice(SUB, SUB)
            # (the first half's result as the ignored input accumulator: see _ws2_consumer)
            blk = warpgroup_mma(a_s, b_1.permute((1, 0)), blk, use_acc=False, is_async=True)
            blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_1))
            mbarrier.arrive(empty.index(s))
            acc1 += blk * gl.expand_dims(sa * sc, 1)
        else:
            mbarrier.arrive(empty.index(s))
            acc0 += blk * gl.expand_dims(sa * sb, 1)
        it += 1
    return acc0, acc1, it


@gluon.jit
def _ws2_kloop_192(a_bufs, b_bufs, b_small, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr, off_m, blk_b, blk_s, M, N,
                   k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, acc_b, acc_s, zero_b, zero_s, it,
                   PART: gl.constexpr, SMEM_SCALES: gl.constexpr, layout_b: gl.constexpr, layout_s: gl.constexpr):
    """ws2's K loop at BN 192 (v3): a 192-wide tile covers 1.5 weight blocks, a 128-wide part inside
    weight block ``blk_b`` (in b_bufs) and a 64-wide part inside ``blk_s`` (in b_small), so each K
    block runs one m64n128 and one m64n64 wgmma, each with one scale per row, both issued before one
    wait."""
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    HALF: gl.constexpr = a_bufs.type.shape[1]
    rows_b: gl.constexpr = gl.SliceLayout(1, layout_b)
    rows_s: gl.constexpr = gl.SliceLayout(1, layout_s)
    for kb in range(k_blocks):
        s = it % STAGES
        if SMEM_SCALES:
            mbarrier.wait(full.index(s), (it // STAGES) & 1)
            sa = sa_smem.index(s).slice(PART * HALF, HALF).load(rows_b)
            sc_b = sb_smem.index(s).slice(0, HALF).load(rows_b)
            sc_s = sb_smem.index(s).slice(HALF, HALF).load(rows_s)
        else:
            sa = _row_scales(as_ptr, off_m, kb, k_blocks, M, stride_asm, stride_ask, HALF, layout_b)
            sc_b = _col_scale(bs_ptr, blk_b * _SCALE_N, kb, k_blocks, N, stride_bsn, stride_bsk)
            sc_s = _col_scale(bs_ptr, blk_s * _SCALE_N, kb, k_blocks, N, stride_bsn, stride_bsk)
            mbarrier.wait(full.index(s), (it // STAGES) & 1)
        a_s = a_bufs.index(2 * s + PART)
        b_big = b_bufs.index(s)
        b_sml = b_small.index(s)
        res_b = warpgroup_mma(a_s, b_big.permute((1, 0)), zero_b, use_acc=False, is_async=True)
        res_s = warpgroup_mma(a_s, b_sml.permute((1, 0)), zero_s, use_acc=False, is_async=True)
        res_s, res_b, _, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(res_s, res_b, a_s, b_big, b_sml))
        mbarrier.arrive(empty.index(s))
        acc_b += res_b * gl.expand_dims(sa * sc_b, 1)
        acc_s += res_s * gl.expand_dims(gl.convert_layout(sa, rows_s) * sc_s, 1)
        it += 1
    return acc_b, acc_s, it


@gluon.jit
def _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  PART: gl.constexpr, PREFETCH: gl.constexpr, TMA_STORE: gl.constexpr):
    STAGES: gl.constexpr = b_bufs.type.shape[0]
    B192: gl.constexpr = b_small.type.shape[1] == 64  # BN 192 (v3): a 128-wide and a 64-wide part
    BN: gl.constexpr = 192 if b_small.type.shape[1] == 64 else b_bufs.type.shape[1]
    HALF: gl.constexpr = a_bufs.type.shape[1]
    BK: gl.constexpr = a_bufs.type.shape[2]
    # BN 256: two m64n128 wgmmas per K block, each promoted at once, so only one 64x128 block
    # result is live beside the 64x256 accumulator (192 registers, no spill)
    SUB: gl.constexpr = 128 if BN > 128 else BN
    NSUB: gl.constexpr = BN // SUB
    SMEM_SCALES: gl.constexpr = sa_smem.type.shape[1] == 2 * HALF  # the producer stages the scales
    # BN 192 (v3): a 64x128 and a 64x64 accumulator (_ws2_kloop_192)
    layout_b: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 128, 32])
    layout_s: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, 64, 32])
    zero_b = gl.zeros([HALF, 128], gl.float32, layout_b)
    zero_s = gl.zeros([HALF, 64], gl.float32, layout_s)
    # output buffers per consumer: NSUB (v2), or 1 reused by the second column block (v3)
    EPI: gl.constexpr = c_smem.type.shape[0] // 2
    layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                     instr_shape=[16, SUB, 32])
    rows_layout: gl.constexpr = gl.SliceLayout(1, layout)
    num_pid_m = gl.cdiv(M, 2 * HALF)
    num_pid_n = gl.cdiv(N, BN)
    k_blocks = K // BK
    zero = gl.zeros([HALF, SUB], gl.float32, layout)
    it = 0
    for t in range(gl.program_id(0), num_pid_m * num_pid_n, gl.num_programs(0)):
        pid_m, pid_n = _tile_coords(t, num_pid_m, num_pid_n, group_m)
        off_m = pid_m * 2 * HALF + PART * HALF
        off_n = pid_n * BN
        if B192:
            odd = pid_n % 2
            acc_b = gl.zeros([HALF, 128], gl.float32, layout_b)
            acc_s = gl.zeros([HALF, 64], gl.float32, layout_s)
            acc_b, acc_s, it = _ws2_kloop_192(a_bufs, b_bufs, b_small, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr,
                                              off_m, off_n // _SCALE_N + odd, off_n // _SCALE_N + 1 - odd, M, N,
                                              k_blocks, stride_asm, stride_ask, stride_bsn, stride_bsk, acc_b, acc_s,
                                              zero_b, zero_s, it, PART, SMEM_SCALES, layout_b, layout_s)
            # (either part may lie wholly past N on the last tile column; each store waits for every
            # earlier one to have left shared memory, so a skipped part never lets a buffer be reused early)
            col_b = off_n + odd * 64
            col_s = off_n + (1 - odd) * 128
            if col_b < N:
                _ws2_epilogue(acc_b, c_smem, c_desc, c_ptr, off_m, col_b, M, N, stride_cm, stride_cn, PART,
                              HALF, 128, layout_b, TMA_STORE, 0)
            if col_s < N:
                _ws2_epilogue(acc_s, c_smem2, c_desc2, c_ptr, off_m, col_s, M, N, stride_cm, stride_cn, PART,
                              HALF, 64, layout_s, TMA_STORE, 0)
        else:
            acc0 = gl.zeros([HALF, SUB], gl.float32, layout)
            if NSUB == 2:
                acc1 = gl.zeros([HALF, SUB], gl.float32, layout)
            # scales of K blocks 0 .. PREFETCH-1 now; in the loop, block kb + PREFETCH's are issued before
            # block kb's barrier wait, so each load has PREFETCH K blocks of MMAs to arrive
            if PREFETCH >= 1:
                sa0 = _row_scales(as_ptr, off_m, 0, k_blocks, M, stride_asm, stride_ask, HALF, layout)
                sb0 = _col_scale(bs_ptr, off_n, 0, k_blocks, N, stride_bsn, stride_bsk)
                if NSUB == 2:
                    sc0 = _col_scale(bs_ptr, off_n + SUB, 0, k_blocks, N, stride_bsn, stride_bsk)
            if PREFETCH >= 2:
                sa1 = _row_scales(as_ptr, off_m, 1, k_blocks, M, stride_asm, stride_ask, HALF, layout)
                sb1 = _col_scale(bs_ptr, off_n, 1, k_blocks, N, stride_bsn, stride_bsk)
                if NSUB == 2:
                    sc1 = _col_scale(bs_ptr, off_n + SUB, 1, k_blocks, N, stride_bsn, stride_bsk)
            if NSUB == 2 and PREFETCH == 0:
                if off_n + SUB < N:
                    acc0, acc1, it = _ws2_kloop_p0(a_bufs, b_bufs, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr,
                                                   off_m, off_n, M, N, k_blocks, stride_asm, stride_ask, stride_bsn,
                                                   stride_bsk, acc0, acc1, zero, it, PART, SMEM_SCALES, True, layout)
                else:
                    acc0, acc1, it = _ws2_kloop_p0(a_bufs, b_bufs, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr,
                                                   off_m, off_n, M, N, k_blocks, stride_asm, stride_ask, stride_bsn,
                                                   stride_bsk, acc0, acc1, zero, it, PART, SMEM_SCALES, False, layout)
            for kb in range(k_blocks if NSUB == 1 or PREFETCH != 0 else 0):
                s = it % STAGES
                if SMEM_SCALES:
                    mbarrier.wait(full.index(s), (it // STAGES) & 1)
                    sa = sa_smem.index(s).slice(PART * HALF, HALF).load(rows_layout)
                    sb = sb_smem.index(s).slice(0, HALF).load(rows_layout)  # the weight scale, 64 times
                    if NSUB == 2:
                        sc = sb_smem.index(s).slice(HALF, HALF).load(rows_layout)
                else:
                    nxt = kb + PREFETCH
                    sa_n = _row_scales(as_ptr, off_m, nxt, k_blocks, M, stride_asm, stride_ask, HALF, layout)
                    sb_n = _col_scale(bs_ptr, off_n, nxt, k_blocks, N, stride_bsn, stride_bsk)
                    if NSUB == 2:
                        sc_n = _col_scale(bs_ptr, off_n + SUB, nxt, k_blocks, N, stride_bsn, stride_bsk)
                    # the scales of this block (loaded PREFETCH blocks ago) ...
                    if PREFETCH == 0:
                        sa = sa_n
                        sb = sb_n
                        if NSUB == 2:
                            sc = sc_n
                    else:
                        sa = sa0
                        sb = sb0
                        if NSUB == 2:
                            sc = sc0
                    # ... and the rotation of the in-flight ones
                    if PREFETCH == 1:
                        sa0 = sa_n
                        sb0 = sb_n
                        if NSUB == 2:
                            sc0 = sc_n
                    if PREFETCH == 2:
                        sa0 = sa1
                        sb0 = sb1
                        sa1 = sa_n
                        sb1 = sb_n
                        if NSUB == 2:
                            sc0 = sc1
                            sc1 = sc_n
                    mbarrier.wait(full.index(s), (it // STAGES) & 1)
                a_s = a_bufs.index(2 * s + PART)
                b_s = b_bufs.index(s)
                if NSUB == 2:
                    b_0 = b_s.slice(0, SUB)
                    blk = warpgroup_mma(a_s, b_0.permute((1, 0)), zero, use_acc=False, is_async=True)
                    blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_0))
                    acc0 += blk * gl.expand_dims(sa * sb, 1)
                    b_1 = b_s.slice(SUB, SUB)
                    # (the first half's result as the ignored input accumulator: its registers are
                    # reused, so ptxas cannot keep both halves' results live and spill)
                    blk = warpgroup_mma(a_s, b_1.permute((1, 0)), blk, use_acc=False, is_async=True)
                    blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_1))
                    mbarrier.arrive(empty.index(s))
                    acc1 += blk * gl.expand_dims(sa * sc, 1)
                else:
                    blk = warpgroup_mma(a_s, b_s.permute((1, 0)), zero, use_acc=False, is_async=True)
                    blk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(blk, a_s, b_s))
                    mbarrier.arrive(empty.index(s))
                    acc0 += blk * gl.expand_dims(sa * sb, 1)
                it += 1
            _ws2_epilogue(acc0, c_smem, c_desc, c_ptr, off_m, off_n, M, N, stride_cm, stride_cn, PART * EPI,
                          HALF, SUB, layout, TMA_STORE, 0)
            if NSUB == 2:
                # (the second column block of the last tile column may lie wholly past N)
                if off_n + SUB < N:
                    # (one buffer: wait until the first block's store has read it; two: let it run on)
                    _ws2_epilogue(acc1, c_smem, c_desc, c_ptr, off_m, off_n + SUB, M, N, stride_cm, stride_cn,
                                  PART * EPI + EPI - 1, HALF, SUB, layout, TMA_STORE, EPI - 1)
    if TMA_STORE:
        tma.store_wait(0)


# (constexprs do not cross gl.warp_specialize in Triton 3.6: one wrapper per (part, prefetch, store))
@gluon.jit
def _ws2_c0_p0_s0(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  0, 0, False)


@gluon.jit
def _ws2_c1_p0_s0(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  1, 0, False)


@gluon.jit
def _ws2_c0_p2_s0(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  0, 2, False)


@gluon.jit
def _ws2_c1_p2_s0(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  1, 2, False)


@gluon.jit
def _ws2_c0_p0_s1(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  0, 0, True)


@gluon.jit
def _ws2_c1_p0_s1(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  1, 0, True)


@gluon.jit
def _ws2_c0_p2_s1(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  0, 2, True)


@gluon.jit
def _ws2_c1_p2_s1(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m):
    _ws2_consumer(a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2,
                  c_ptr, as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn,
                  stride_bsk, group_m,
                  1, 2, True)


@gluon.jit(do_not_specialize=["M", "stride_asm", "stride_ask", "stride_bsn", "stride_bsk"])
def gemm_ws2_kernel(a_desc, b_desc, b_desc2, c_desc, c_desc2, c_ptr, as_ptr, bs_ptr, M, N, K,
                    stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk,
                    BN: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
                    PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                    PREFETCH: gl.constexpr, TMA_STORE: gl.constexpr, SMEM_SCALES: gl.constexpr,
                    EPI_BUFS: gl.constexpr):
    HALF: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    SUB: gl.constexpr = 128 if BN > 128 else BN
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [2 * STAGES, HALF, BK], a_desc.layout)
    if BN == 192:  # the tile's 128-wide and 64-wide parts (b_desc's and b_desc2's boxes)
        b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES, 128, BK], b_desc.layout)
        b_small = gl.allocate_shared_memory(b_desc2.dtype, [STAGES, 64, BK], b_desc2.layout)
    else:
        b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES, BN, BK], b_desc.layout)
        b_small = gl.allocate_shared_memory(b_desc.dtype, [1, 32, BK], b_desc.layout)  # (unused: shape says so)
    if TMA_STORE:
        # per consumer one [64, SUB] output buffer per 128-wide column block (v2), or one (v3)
        EPI: gl.constexpr = EPI_BUFS if EPI_BUFS < BN // SUB else BN // SUB
        c_smem = gl.allocate_shared_memory(c_desc.dtype, [2 * EPI, HALF, SUB], c_desc.layout)
        if BN == 192:  # and one [64, 64] buffer per consumer for the 64-wide part (c_desc2's box)
            c_smem2 = gl.allocate_shared_memory(c_desc2.dtype, [2, HALF, 64], c_desc2.layout)
        else:
            c_smem2 = gl.allocate_shared_memory(gl.int8, [1, 16, 16], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0]))
    else:
        c_smem = gl.allocate_shared_memory(gl.int8, [1, 16, 16], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0]))
        c_smem2 = gl.allocate_shared_memory(gl.int8, [1, 16, 16], gl.SwizzledSharedLayout(1, 1, 1, [2, 1, 0]))
    flat: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])  # (rank of one slot: .index() keeps it)
    if SMEM_SCALES:
        # per slot: the 128 rows' activation scales, and each column block's weight scale 64 times
        sa_smem = gl.allocate_shared_memory(gl.float32, [STAGES, 2 * HALF], flat)
        sb_smem = gl.allocate_shared_memory(gl.float32, [STAGES, ((BN + SUB - 1) // SUB) * HALF], flat)
    else:
        sa_smem = gl.allocate_shared_memory(gl.float32, [1, 32], flat)  # (unused: shape says "not staged")
        sb_smem = gl.allocate_shared_memory(gl.float32, [1, 32], flat)
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    fence_async_shared()
    consumer_args = (a_bufs, b_bufs, b_small, c_smem, c_smem2, sa_smem, sb_smem, full, empty, c_desc, c_desc2, c_ptr,
                     as_ptr, bs_ptr, M, N, K, stride_cm, stride_cn, stride_asm, stride_ask, stride_bsn, stride_bsk,
                     GROUP_M)
    producer_args = (a_desc, b_desc, b_desc2, a_bufs, b_bufs, b_small, sa_smem, sb_smem, full, empty, as_ptr, bs_ptr,
                     M, N, K,
                     stride_asm, stride_ask, stride_bsn, stride_bsk, GROUP_M)
    if TMA_STORE:
        if PREFETCH == 2:
            gl.warp_specialize([(_ws2_c0_p2_s1, consumer_args), (_ws2_c1_p2_s1, consumer_args),
                                (_ws2_producer, producer_args)], [4, 1],
                               [CONSUMER_REGS, PRODUCER_REGS])
        else:
            gl.warp_specialize([(_ws2_c0_p0_s1, consumer_args), (_ws2_c1_p0_s1, consumer_args),
                                (_ws2_producer, producer_args)], [4, 1],
                               [CONSUMER_REGS, PRODUCER_REGS])
    else:
        if PREFETCH == 2:
            gl.warp_specialize([(_ws2_c0_p2_s0, consumer_args), (_ws2_c1_p2_s0, consumer_args),
                                (_ws2_producer, producer_args)], [4, 1],
                               [CONSUMER_REGS, PRODUCER_REGS])
        else:
            gl.warp_specialize([(_ws2_c0_p0_s0, consumer_args), (_ws2_c1_p0_s0, consumer_args),
                                (_ws2_producer, producer_args)], [4, 1],
                               [CONSUMER_REGS, PRODUCER_REGS])


# ------------------------------------------------------------------------------------------------
# Host side
# ------------------------------------------------------------------------------------------------


def _fail(arg: str, expected: str, got: Any) -> None:
    raise ValueError(f"{arg}: expected {expected}, got {got}")


def check_tma_operands(x_q: torch.Tensor, w_q: torch.Tensor) -> None:
    """What TMA needs beyond :func:`triton_blockscale.check_inputs`: K % 128 == 0, K-contiguous
    operands with 16-byte aligned base pointers and row strides."""
    k = x_q.shape[1]
    if k % GROUP_K:
        _fail("x_q", f"K a multiple of {GROUP_K} (TMA loads whole 128-wide K blocks)", f"K = {k}")
    for name, t in (("x_q", x_q), ("w_q", w_q)):
        if t.stride(1) != 1:
            _fail(name, "a K-contiguous tensor (stride(1) == 1)", f"strides {t.stride()}")
        if t.data_ptr() % 16:
            _fail(name, "a 16-byte aligned base pointer (TMA)", f"address {t.data_ptr():#x}")
        if (t.stride(0) * t.element_size()) % 16:
            _fail(name, "a row stride that is a multiple of 16 bytes (TMA)", f"stride {t.stride(0)}")


def _gl_fp8(dtype: torch.dtype):
    if dtype == torch.float8_e4m3fn:
        return gl.float8e4nv
    _fail("x_q", "torch.float8_e4m3fn (the FP8 format of sm90 wgmma)", dtype)


def descriptors(x_q: torch.Tensor, w_q: Optional[torch.Tensor], cfg: GluonConfig):
    """(A descriptor, B descriptor or None without ``w_q``) for ``cfg``: A blocks are the 64-row
    halves in the ws kernel, whole 128-row tiles in the pipelined one."""
    elt = _gl_fp8(x_q.dtype)
    a_rows = BLOCK_M if cfg.variant == "pipelined" else BLOCK_M // 2
    a_layout = gl.NVMMASharedLayout.get_default_for([a_rows, GROUP_K], elt)
    b_layout = gl.NVMMASharedLayout.get_default_for([cfg.block_n, GROUP_K], elt)
    a = TensorDescriptor(x_q, list(x_q.shape), list(x_q.stride()), [a_rows, GROUP_K], a_layout)
    if w_q is None:
        return a, None
    if cfg.block_n == 192:  # (ws2, v3) the tile's 128-wide and 64-wide parts: two boxes, a tuple
        return a, tuple(TensorDescriptor(w_q, list(w_q.shape), list(w_q.stride()), [rows, GROUP_K],
                                         gl.NVMMASharedLayout.get_default_for([rows, GROUP_K], elt))
                        for rows in (128, 64))
    b = TensorDescriptor(w_q, list(w_q.shape), list(w_q.stride()), [cfg.block_n, GROUP_K], b_layout)
    return a, b


_SMS: dict[int, int] = {}


def _num_sms(device: torch.device) -> int:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SMS:
        _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SMS[idx]


def tma_storable(out: torch.Tensor) -> bool:
    """Whether ws2 may write ``out`` with TMA stores: a 16-bit row-major tensor with 16-byte aligned
    base and rows (fp32 out would need 128 KiB of staging at BN 256: it takes the plain stores)."""
    return (out.dtype in (torch.bfloat16, torch.float16) and out.dim() == 2 and out.stride(1) == 1
            and not out.data_ptr() % 16 and not (out.stride(0) * out.element_size()) % 16)


def _out_descriptor(out: torch.Tensor, sub: int):
    elt = gl.bfloat16 if out.dtype == torch.bfloat16 else gl.float16
    layout = gl.NVMMASharedLayout.get_default_for([BLOCK_M // 2, sub], elt)
    return TensorDescriptor(out, list(out.shape), list(out.stride()), [BLOCK_M // 2, sub], layout)


def launch(x_q, x_scale, w_q, w_scale, out, cfg: GluonConfig, b_desc=None):
    """Launch with no checks beyond the descriptors' own; returns Triton's compiled kernel."""
    m, k = x_q.shape
    n = w_q.shape[0]
    # (the weight's descriptor can be made once per layer: BoundGluonGemm passes it)
    a_desc, b_fresh = descriptors(x_q, w_q if b_desc is None else None, cfg)
    if b_desc is None:
        b_desc = b_fresh
    tiles = triton.cdiv(m, BLOCK_M) * triton.cdiv(n, cfg.block_n)
    grid = (min(tiles, _num_sms(x_q.device)),)
    args = (a_desc, b_desc, out, x_scale, w_scale, m, n, k, out.stride(0), out.stride(1),
            x_scale.stride(0), x_scale.stride(1), w_scale.stride(0), w_scale.stride(1))
    if cfg.variant == "ws2":
        store = cfg.tma_store and tma_storable(out)
        c_desc = _out_descriptor(out, min(cfg.block_n, 128)) if store else out
        # (BN 192: a second box of 64 columns for the tile's 64-wide part)
        c_desc2 = _out_descriptor(out, 64) if store and cfg.block_n == 192 else c_desc
        b_desc, b_desc2 = b_desc if isinstance(b_desc, tuple) else (b_desc, b_desc)
        return gemm_ws2_kernel[grid](a_desc, b_desc, b_desc2, c_desc, c_desc2, *args[2:], BN=cfg.block_n,
                                     STAGES=cfg.stages,
                                     GROUP_M=cfg.group_m, PRODUCER_REGS=cfg.producer_regs,
                                     CONSUMER_REGS=cfg.consumer_regs, PREFETCH=2 if cfg.scales == "ahead" else 0,
                                     TMA_STORE=store, SMEM_SCALES=cfg.scales == "smem",
                                     EPI_BUFS=cfg.epilogue_bufs, num_warps=4)
    if cfg.variant in ("ws", "ws_lag"):
        return gemm_ws_kernel[grid](*args, BN=cfg.block_n, STAGES=cfg.stages, GROUP_M=cfg.group_m,
                                    PRODUCER_REGS=cfg.producer_regs, CONSUMER_REGS=cfg.consumer_regs,
                                    LAG=cfg.variant == "ws_lag", num_warps=4)
    return gemm_pipelined_kernel[grid](*args, BN=cfg.block_n, STAGES=cfg.stages, GROUP_M=cfg.group_m,
                                       num_warps=8)


class BoundGluonGemm:
    """``run(x_q, x_scale) -> y`` for one weight, out dtype and (Gluon) ``KernelConfig``: the
    weight's TMA descriptor is made once. Activations TMA cannot load (misaligned, strided rows,
    K not a multiple of 128) go to a Triton :class:`BoundGemm` of the same tile, made on first need."""

    def __init__(self, w_q: torch.Tensor, w_scale: torch.Tensor, out_dtype: torch.dtype, config) -> None:
        self.w_q, self.w_scale, self.out_dtype, self.config = w_q, w_scale, out_dtype, config
        self.gcfg = config.gluon_config()
        self.n, self.k = w_q.shape
        self._b_desc = descriptors(w_q[:1], w_q, self.gcfg)[1]
        self._fallback = None
        self.warmed = True  # launches go straight to the compiled kernel's JIT entry

    def __call__(self, x_q: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        m = x_q.shape[0]
        out = torch.empty((m, self.n), dtype=self.out_dtype, device=self.w_q.device)
        if m == 0:
            return out
        if x_q.stride(1) == 1 and not x_q.data_ptr() % 16 and not (x_q.stride(0) * x_q.element_size()) % 16:
            launch(x_q, x_scale, self.w_q, self.w_scale, out, self.gcfg, b_desc=self._b_desc)
            return out
        if self._fallback is None:
            from rocm_fp8.kernels.triton_blockscale import BoundGemm

            self._fallback = BoundGemm(self.w_q, self.w_scale, self.out_dtype, self.config.triton_fallback())
        return self._fallback(x_q, x_scale)


def gluon_blockscale_gemm(x_q: torch.Tensor, x_scale: torch.Tensor, w_q: torch.Tensor, w_scale: torch.Tensor,
                          out_dtype: torch.dtype = torch.bfloat16, config: Optional[GluonConfig] = None,
                          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``[M, K] fp8 x [N, K] fp8 -> [M, N]`` on sm90 with the Gluon kernel of ``config.variant``.

    Checks the operands like the Triton launcher, then what TMA needs (K % 128 == 0, 16-byte
    alignment); every error names the argument.
    """
    from rocm_fp8.kernels.triton_blockscale import check_inputs

    m, n, k = check_inputs(x_q, x_scale, w_q, w_scale, out_dtype)
    check_tma_operands(x_q, w_q)
    if x_q.device.type != "cuda":
        _fail("x_q", "a CUDA tensor (the Gluon kernel runs on sm90 GPUs only)", x_q.device)
    cfg = (config or GluonConfig()).validate()
    if out is None:
        out = torch.empty((m, n), dtype=out_dtype, device=x_q.device)
    launch(x_q, x_scale, w_q, w_scale, out, cfg)
    return out


# ------------------------------------------------------------------------------------------------
# Cross-compilation (no GPU needed): what the CPU-side gate and the compile test use
# ------------------------------------------------------------------------------------------------


def compile_for_sm90(cfg: GluonConfig, out_dtype: str = "bf16"):
    """Compile the kernel of ``cfg`` for sm_90a with Triton's bundled ptxas; returns the
    ``CompiledKernel`` (``.asm['ptx']``, ``.asm['cubin']``, ``.metadata``)."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    cfg = cfg.validate()
    elt = gl.float8e4nv
    a_rows = BLOCK_M if cfg.variant == "pipelined" else BLOCK_M // 2
    a_layout = gl.NVMMASharedLayout.get_default_for([a_rows, GROUP_K], elt)
    a_ty = f"tensordesc<fp8e4nv[{a_rows}, {GROUP_K}],{a_layout!r}>"

    def b_type(rows):
        b_layout = gl.NVMMASharedLayout.get_default_for([rows, GROUP_K], elt)
        return f"tensordesc<fp8e4nv[{rows}, {GROUP_K}],{b_layout!r}>"

    # (ws2 at BN 192: the tile's 128-wide and 64-wide parts, two boxes)
    b_ty = b_type(128 if cfg.block_n == 192 else cfg.block_n)
    sig = {"a_desc": a_ty, "b_desc": b_ty, "c_ptr": f"*{out_dtype}", "as_ptr": "*fp32", "bs_ptr": "*fp32",
           "M": "i32", "N": "i32", "K": "i32", "stride_cm": "i32", "stride_cn": "i32",
           "stride_asm": "i32", "stride_ask": "i32", "stride_bsn": "i32", "stride_bsk": "i32"}
    consts = {"BN": cfg.block_n, "STAGES": cfg.stages, "GROUP_M": cfg.group_m}
    if cfg.variant == "ws2":
        fn, num_warps = gemm_ws2_kernel, 4
        consts.update(PRODUCER_REGS=cfg.producer_regs, CONSUMER_REGS=cfg.consumer_regs,
                      PREFETCH=2 if cfg.scales == "ahead" else 0, TMA_STORE=cfg.tma_store and out_dtype != "fp32",
                      SMEM_SCALES=cfg.scales == "smem", EPI_BUFS=cfg.epilogue_bufs)
        sub = min(cfg.block_n, 128)

        def c_type(width):
            if not consts["TMA_STORE"]:
                return f"*{out_dtype}"
            c_elt = gl.bfloat16 if out_dtype == "bf16" else gl.float16
            c_layout = gl.NVMMASharedLayout.get_default_for([BLOCK_M // 2, width], c_elt)
            return f"tensordesc<{out_dtype}[{BLOCK_M // 2}, {width}],{c_layout!r}>"

        sig = {"a_desc": a_ty, "b_desc": b_ty, "b_desc2": b_type(64) if cfg.block_n == 192 else b_ty,
               "c_desc": c_type(sub),
               "c_desc2": c_type(64 if cfg.block_n == 192 else sub),
               **{k: v for k, v in sig.items() if k not in ("a_desc", "b_desc")}}
    elif cfg.variant in ("ws", "ws_lag"):
        fn, num_warps = gemm_ws_kernel, 4
        consts.update(PRODUCER_REGS=cfg.producer_regs, CONSUMER_REGS=cfg.consumer_regs,
                      LAG=cfg.variant == "ws_lag")
    else:
        fn, num_warps = gemm_pipelined_kernel, 8
        consts["num_warps"] = num_warps
    for name in ("BN", "STAGES", "GROUP_M", "PRODUCER_REGS", "CONSUMER_REGS", "LAG", "PREFETCH", "TMA_STORE",
                 "SMEM_SCALES", "EPI_BUFS", "num_warps"):
        if name in consts:
            sig[name] = "constexpr"
    src = GluonASTSource(fn, sig, dict(consts))
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def resources(cfg: GluonConfig) -> dict[str, Any]:
    """Compile ``cfg`` for sm_90a here (no GPU needed) and read what the cubin uses: registers per
    thread at launch, stack/local bytes (spills), shared memory, and the wgmma/setmaxnreg/QGMMA counts
    of the PTX and SASS (through the cuobjdump/nvdisasm Triton ships)."""

    k = compile_for_sm90(cfg)
    ptx = k.asm["ptx"]
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as fh:
            fh.write(k.asm["cubin"])
        usage = subprocess.run([os.path.join(bindir, "cuobjdump"), "-res-usage", path], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([os.path.join(bindir, "nvdisasm"), path], capture_output=True, text=True,
                              check=True).stdout

        # ptxas's own notes: C7514/C7515 say the wgmmas were serialized (no overlap with other work)
        with open(os.path.join(tmp, "k.ptx"), "w") as fh:
            fh.write(ptx)
        notes = subprocess.run([os.path.join(bindir, "ptxas"), "-arch=sm_90a", "-v", os.path.join(tmp, "k.ptx"),
                                "-o", os.path.join(tmp, "again.cubin")], capture_output=True, text=True).stderr

    def field(name):
        found = re.search(rf"\b{name}:(\d+)", usage)
        return int(found.group(1)) if found else None

    return {"config": cfg.__dict__, "registers": field("REG"), "stack_bytes": field("STACK"),
            "local_bytes": field("LOCAL"), "shared_bytes": k.metadata.shared,
            "wgmma_ptx": ptx.count("wgmma.mma_async"), "qgmma_sass": sass.count("QGMMA"),
            "setmaxnreg": re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", ptx),
            "wgmma_serialized": "serialized" in notes,
            "ptxas_notes": [ln.strip() for ln in notes.splitlines() if "Performance" in ln or "warning" in ln]}


def _main(argv=None) -> int:

    p = argparse.ArgumentParser(description="cross-compile the Gluon sm90 kernels and print their resources")
    p.add_argument("--resources", action="store_true")
    p.add_argument("--variant", action="append", choices=VARIANTS)
    p.add_argument("--block-n", type=int, action="append")
    p.add_argument("--stages", type=int, action="append")
    p.add_argument("--scales", action="append", choices=SCALE_SOURCES, help="ws2's scale source")
    p.add_argument("--no-tma-store", action="store_true", help="ws2 with plain stores")
    p.add_argument("--epilogue-bufs", type=int, default=2, choices=(1, 2), help="ws2's output buffers per consumer")
    args = p.parse_args(argv)
    for variant in args.variant or VARIANTS:
        for bn in args.block_n or (128,):
            for st in args.stages or (4, 5):
                for src in (args.scales or ("smem",)) if variant == "ws2" else ("smem",):
                    cfg = GluonConfig(variant=variant, block_n=bn, stages=st, scales=src,
                                      tma_store=not args.no_tma_store, epilogue_bufs=args.epilogue_bufs)
                    print(json.dumps(resources(cfg)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
