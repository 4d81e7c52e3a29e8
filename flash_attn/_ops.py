"""torch.library custom ops (namespace "flash_attn") over the C++ API.

Each op allocates its outputs with torch, fills a parameter struct with raw addresses and calls
flash_attn._C. Every op has a fake (meta) implementation so torch.compile(fullgraph=True) traces
through it. Optional outputs (S_dmask) are returned as empty tensors: custom ops cannot return None.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C
from . import _backend as B

_EMPTY_SHAPE = (0,)


def _wants_probs(return_softmax: bool, dropout_p: float) -> bool:
    # flash-attn 2.8: S_dmask only exists when dropout is active.
    return return_softmax and dropout_p > 0.0


def _run_forward(p, q: Tensor, dropout_p: float, return_softmax: bool, probs_shape) -> Tuple[Tensor, Tensor]:
    """Shared tail of both forward ops: rng, S_dmask, workspace, launch."""
    if dropout_p > 0.0:
        rng_state = B.new_rng_state(q.device)
        p.dropout_p = dropout_p
        p.rng_state = rng_state.data_ptr()
    else:
        rng_state = torch.empty(2, dtype=torch.int64, device=q.device)
    if _wants_probs(return_softmax, dropout_p):
        probs = torch.zeros(probs_shape, dtype=q.dtype, device=q.device)
        B.set_probs(p, probs)
    else:
        probs = q.new_empty(_EMPTY_SHAPE)
    ws = B.workspace_for(_C.fwd_workspace_size(p), q.device)
    if ws is not None:
        p.workspace, p.workspace_bytes = ws.data_ptr(), ws.numel()
    B.record_impl(_C.fwd(p, B.stream_of(q)))
    return probs, rng_state


# ---- fixed-length forward ----------------------------------------------------------------------


@torch.library.custom_op("flash_attn::_flash_attn_forward", mutates_args=(), device_types=("cpu", "cuda"))
def _flash_attn_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: Optional[Tensor],
    return_softmax: bool,
    cuda_path: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    batch, seqlen_q, nheads, _ = q.shape
    seqlen_k = k.shape[1]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    p = _C.FwdParams()
    B.init_params(p, q, cuda_path)
    B.set_qkv(p, q, k, v)
    B.set_out_lse(p, out, lse)
    p.batch, p.seqlen_q, p.seqlen_k = batch, seqlen_q, seqlen_k
    B.set_masks(p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes)
    probs, rng_state = _run_forward(p, q, dropout_p, return_softmax, (batch, nheads, seqlen_q, seqlen_k))
    return out, lse, probs, rng_state


@_flash_attn_forward.register_fake
def _(q, k, v, dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap,
      alibi_slopes, return_softmax, cuda_path):
    batch, seqlen_q, nheads, _ = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((batch, nheads, seqlen_q), dtype=torch.float32)
    if _wants_probs(return_softmax, dropout_p):
        probs = q.new_empty((batch, nheads, seqlen_q, k.shape[1]))
    else:
        probs = q.new_empty(_EMPTY_SHAPE)
    return out, lse, probs, q.new_empty((2,), dtype=torch.int64)


# ---- variable-length forward (optionally paged through block_table) ------------------------------


@torch.library.custom_op("flash_attn::_flash_attn_varlen_forward", mutates_args=(), device_types=("cpu", "cuda"))
def _flash_attn_varlen_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: Optional[Tensor],
    return_softmax: bool,
    block_table: Optional[Tensor],
    seqused_k: Optional[Tensor],
    cuda_path: int,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    total_q, nheads, _ = q.shape
    batch = cu_seqlens_q.shape[0] - 1
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((nheads, total_q), dtype=torch.float32, device=q.device)
    p = _C.FwdParams()
    B.init_params(p, q, cuda_path)
    B.set_qkv(p, q, k, v)
    B.set_out_lse(p, out, lse)
    p.batch, p.seqlen_q, p.seqlen_k, p.total_q = batch, max_seqlen_q, max_seqlen_k, total_q
    p.total_k = k.shape[0]  # rows (paged: pages) of k; kernels clamp cu_seqlens_k into it
    p.cu_seqlens_q = cu_seqlens_q.data_ptr()
    p.cu_seqlens_k = cu_seqlens_k.data_ptr()
    if seqused_k is not None:
        p.seqused_k = seqused_k.data_ptr()
    if block_table is not None:
        # k/v are (num_pages, page_size, nheads_k, d): their "batch" stride steps between pages.
        p.block_table = block_table.data_ptr()
        p.block_table_batch_stride = block_table.stride(0)
        p.num_pages, p.page_size = k.shape[0], k.shape[1]
        p.k_batch_stride, p.k_row_stride, p.k_head_stride = k.stride()[:3]
        p.v_batch_stride, p.v_row_stride, p.v_head_stride = v.stride()[:3]
    B.set_masks(p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes)
    probs, rng_state = _run_forward(p, q, dropout_p, return_softmax, (batch, nheads, max_seqlen_q, max_seqlen_k))
    return out, lse, probs, rng_state


@_flash_attn_varlen_forward.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
      causal, window_size_left, window_size_right, softcap, alibi_slopes, return_softmax,
      block_table, seqused_k, cuda_path):
    total_q, nheads, _ = q.shape
    batch = cu_seqlens_q.shape[0] - 1
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = q.new_empty((nheads, total_q), dtype=torch.float32)
    if _wants_probs(return_softmax, dropout_p):
        probs = q.new_empty((batch, nheads, max_seqlen_q, max_seqlen_k))
    else:
        probs = q.new_empty(_EMPTY_SHAPE)
    return out, lse, probs, q.new_empty((2,), dtype=torch.int64)


# ---- backward ----------------------------------------------------------------------------------


def _run_backward(p, q, k, v, out, lse, dout, dq, dk, dv, dropout_p, softmax_scale, causal,
                  window_left, window_right, softcap, alibi_slopes, deterministic, rng_state):
    B.set_qkv(p, q, k, v)
    B.set_out_lse(p, out, lse)
    B.set_grads(p, dout, dq, dk, dv)
    B.set_masks(p, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes)
    if dropout_p > 0.0:
        p.dropout_p = dropout_p
        p.rng_state = rng_state.data_ptr()
    p.deterministic = deterministic
    ws = B.workspace_for(_C.bwd_workspace_size(p), q.device)
    if ws is not None:
        p.workspace, p.workspace_bytes = ws.data_ptr(), ws.numel()
    B.record_impl(_C.bwd(p, B.stream_of(q)))


@torch.library.custom_op("flash_attn::_flash_attn_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _flash_attn_backward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: Optional[Tensor],
    deterministic: bool,
    rng_state: Tensor,
    cuda_path: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    p = _C.BwdParams()
    B.init_params(p, q, cuda_path)
    p.batch, p.seqlen_q, p.seqlen_k = q.shape[0], q.shape[1], k.shape[1]
    _run_backward(p, q, k, v, out, softmax_lse, dout, dq, dk, dv, dropout_p, softmax_scale, causal,
                  window_size_left, window_size_right, softcap, alibi_slopes, deterministic, rng_state)
    return dq, dk, dv


@_flash_attn_backward.register_fake
def _(dout, q, k, v, out, softmax_lse, *args):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))


@torch.library.custom_op("flash_attn::_flash_attn_varlen_backward", mutates_args=(), device_types=("cpu", "cuda"))
def _flash_attn_varlen_backward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    softmax_lse: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float,
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    alibi_slopes: Optional[Tensor],
    deterministic: bool,
    rng_state: Tensor,
    cuda_path: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    # Rows past cu_seqlens[-1] belong to no sequence and are never written: start from zeros.
    dq = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
    p = _C.BwdParams()
    B.init_params(p, q, cuda_path)
    p.batch = cu_seqlens_q.shape[0] - 1
    p.seqlen_q, p.seqlen_k, p.total_q, p.total_k = max_seqlen_q, max_seqlen_k, q.shape[0], k.shape[0]
    p.cu_seqlens_q = cu_seqlens_q.data_ptr()
    p.cu_seqlens_k = cu_seqlens_k.data_ptr()
    _run_backward(p, q, k, v, out, softmax_lse, dout, dq, dk, dv, dropout_p, softmax_scale, causal,
                  window_size_left, window_size_right, softcap, alibi_slopes, deterministic, rng_state)
    return dq, dk, dv


@_flash_attn_varlen_backward.register_fake
def _(dout, q, k, v, out, softmax_lse, *args):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format))
