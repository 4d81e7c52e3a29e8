"""Custom op flash_attn::_flash_attn_kvcache_forward: decoding-style attention over a KV cache.

When k/v (new tokens) are given the op appends them into k_cache/v_cache in place (after rotary,
if rotary_cos/sin are given), so the op declares both caches as mutated.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C
from . import _backend as B


@torch.library.custom_op(
    "flash_attn::_flash_attn_kvcache_forward",
    mutates_args=("k_cache", "v_cache"),
    device_types=("cpu", "cuda"),
)
def _flash_attn_kvcache_forward(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    k: Optional[Tensor],
    v: Optional[Tensor],
    rotary_cos: Optional[Tensor],
    rotary_sin: Optional[Tensor],
    cache_seqlens: Optional[Tensor],
    cache_seqlen_const: int,
    cache_batch_idx: Optional[Tensor],
    cache_leftpad: Optional[Tensor],
    block_table: Optional[Tensor],
    alibi_slopes: Optional[Tensor],
    softmax_scale: float,
    causal: bool,
    window_size_left: int,
    window_size_right: int,
    softcap: float,
    rotary_interleaved: bool,
    num_splits: int,
    cuda_path: int,
) -> Tuple[Tensor, Tensor]:
    batch, seqlen_q, nheads, _ = q.shape
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    p = _C.KvcacheParams()
    B.init_params(p, q, cuda_path)
    B.set_qkv(p, q, k_cache, v_cache)
    B.set_out_lse(p, out, lse)
    p.batch, p.seqlen_q = batch, seqlen_q
    if block_table is not None:
        p.block_table = block_table.data_ptr()
        p.block_table_batch_stride = block_table.stride(0)
        p.num_pages, p.page_size = k_cache.shape[0], k_cache.shape[1]
        p.seqlen_k = block_table.shape[1] * k_cache.shape[1]
    else:
        p.seqlen_k = k_cache.shape[1]
    p.batch_cache = k_cache.shape[0]
    if cache_seqlens is not None:
        p.cache_seqlens = cache_seqlens.data_ptr()
    p.cache_seqlen_const = cache_seqlen_const
    if cache_batch_idx is not None:
        p.cache_batch_idx = cache_batch_idx.data_ptr()
    if cache_leftpad is not None:
        p.cache_leftpad = cache_leftpad.data_ptr()
    if k is not None:
        p.k_new = k.data_ptr()
        p.knew_batch_stride, p.knew_row_stride, p.knew_head_stride = B.strides3(k)
        p.seqlen_new = k.shape[1]
    if v is not None:
        p.v_new = v.data_ptr()
        p.vnew_batch_stride, p.vnew_row_stride, p.vnew_head_stride = B.strides3(v)
    if rotary_cos is not None:
        p.rotary_cos = rotary_cos.data_ptr()
        p.rotary_dim = rotary_cos.shape[1] * 2
        p.seqlen_rotary = rotary_cos.shape[0]
    if rotary_sin is not None:
        p.rotary_sin = rotary_sin.data_ptr()
    p.rotary_interleaved = rotary_interleaved
    p.num_splits = num_splits
    B.set_masks(p, softmax_scale, causal, window_size_left, window_size_right, softcap, alibi_slopes)
    ws = B.workspace_for(_C.kvcache_workspace_size(p), q.device)
    if ws is not None:
        p.workspace, p.workspace_bytes = ws.data_ptr(), ws.numel()
    B.record_impl(_C.fwd_kvcache(p, B.stream_of(q)))
    return out, lse


@_flash_attn_kvcache_forward.register_fake
def _(q, k_cache, v_cache, *args):
    batch, seqlen_q, nheads, _ = q.shape
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty((batch, nheads, seqlen_q), dtype=torch.float32))
