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
    p = build_params(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_seqlen_const,
                     cache_batch_idx, cache_leftpad, block_table, alibi_slopes, softmax_scale, causal,
                     window_size_left, window_size_right, softcap, rotary_interleaved, num_splits, cuda_path,
                     out, lse)
    ws = B.workspace_for(_C.kvcache_workspace_size(p), q.device)
    if ws is not None:
        p.workspace, p.workspace_bytes = ws.data_ptr(), ws.numel()
    B.record_impl(_C.fwd_kvcache(p, B.stream_of(q)))
    return out, lse


def build_params(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_seqlen_const,
                 cache_batch_idx, cache_leftpad, block_table, alibi_slopes, softmax_scale, causal,
                 window_size_left, window_size_right, softcap, rotary_interleaved, num_splits, cuda_path,
                 out, lse):
    """The KvcacheParams of one call (no workspace). Every field is a function of the tensors'
    metadata and the options, except the data pointers: KvcachePlan relies on that."""
    batch, seqlen_q = q.shape[:2]
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
    return p


@_flash_attn_kvcache_forward.register_fake
def _(q, k_cache, v_cache, *args):
    batch, seqlen_q, nheads, _ = q.shape
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty((batch, nheads, seqlen_q), dtype=torch.float32))


# ---- eager fast path ---------------------------------------------------------------------------
# A decode loop calls flash_attn_with_kvcache with the same shapes, strides, dtypes and options
# every step; only data pointers (and an int cache_seqlens) change. Going through the custom op,
# the Python validation and ~60 nanobind attribute writes costs ~100 us per call, ten times the
# kernel at small batch. A KvcachePlan keeps what a validated call derived from that metadata (the
# filled KvcacheParams, output shapes, workspace size) and a call with the same metadata only
# rewrites the pointers. The C++ API still validates every call (it is authoritative).

_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


class KvcachePlan:
    """Prepared launch of one metadata signature (see _kvcache.py's _plan_key)."""

    __slots__ = ("p", "out_shape", "lse_shape", "dtype", "device", "device_index", "ws_bytes",
                 "has_new", "has_rotary", "seqlens", "has_batch_idx", "has_leftpad", "has_block_table",
                 "has_alibi", "int_seqlens", "scratch_lse")

    def __init__(self, p, q, k, rotary_cos, cache_seqlens, cache_seqlens_is_int, cache_batch_idx,
                 cache_leftpad, block_table, alibi_slopes):
        batch, seqlen_q, nheads, _ = q.shape
        self.p = p
        self.out_shape = q.shape
        self.lse_shape = (batch, nheads, seqlen_q)
        self.dtype = q.dtype
        self.device = q.device
        self.device_index = p.device_index if q.device.type == "cuda" else -1
        self.ws_bytes = _C.kvcache_workspace_size(p)
        self.has_new = k is not None
        self.has_rotary = rotary_cos is not None
        self.seqlens = cache_seqlens is not None
        self.int_seqlens = cache_seqlens_is_int
        self.has_batch_idx = cache_batch_idx is not None
        self.has_leftpad = cache_leftpad is not None
        self.has_block_table = block_table is not None
        self.has_alibi = alibi_slopes is not None
        # Where the kernels write lse when the caller does not want it: saves an allocation per
        # call. Concurrent calls (other streams, graph replays) may write it at the same time:
        # harmless, nobody reads it. Not created during a graph capture (it would live in the
        # graph's private pool); such a plan allocates lse per call.
        capturing = q.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        self.scratch_lse = None if capturing else torch.empty(self.lse_shape, dtype=torch.float32,
                                                              device=q.device)

    def run(self, q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
            cache_leftpad, block_table, alibi_slopes, want_lse):
        p = self.p
        out = torch.empty(self.out_shape, dtype=self.dtype, device=self.device)
        lse = self.scratch_lse
        if want_lse or lse is None:
            lse = torch.empty(self.lse_shape, dtype=torch.float32, device=self.device)
        p.q = q.data_ptr()
        p.k = k_cache.data_ptr()
        p.v = v_cache.data_ptr()
        p.out = out.data_ptr()
        p.softmax_lse = lse.data_ptr()
        if self.seqlens:
            p.cache_seqlens = cache_seqlens.data_ptr()
        elif self.int_seqlens:
            p.cache_seqlen_const = cache_seqlens
        if self.has_new:
            p.k_new = k.data_ptr()
            p.v_new = v.data_ptr()
        if self.has_rotary:
            p.rotary_cos = rotary_cos.data_ptr()
            p.rotary_sin = rotary_sin.data_ptr()
        if self.has_batch_idx:
            p.cache_batch_idx = cache_batch_idx.data_ptr()
        if self.has_leftpad:
            p.cache_leftpad = cache_leftpad.data_ptr()
        if self.has_block_table:
            p.block_table = block_table.data_ptr()
        if self.has_alibi:
            p.alibi_slopes = alibi_slopes.data_ptr()
        ws = None
        if self.ws_bytes:
            ws = torch.empty(self.ws_bytes, dtype=torch.uint8, device=self.device)
            p.workspace, p.workspace_bytes = ws.data_ptr(), self.ws_bytes
        if self.device_index < 0:
            stream = 0
        elif _raw_stream is not None:
            stream = _raw_stream(self.device_index)
        else:
            stream = torch.cuda.current_stream(self.device).cuda_stream
        B.record_impl(_C.fwd_kvcache(p, stream))
        if self.has_new:
            # What the custom op does for its mutated arguments: autograd sees the in-place update.
            _bump_version(k_cache)
            _bump_version(v_cache)
        return out, lse


def _bump_version(t):
    if not t.is_inference():
        torch.autograd.graph.increment_version(t)
