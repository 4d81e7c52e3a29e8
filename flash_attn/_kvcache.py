"""flash_attn_with_kvcache: the flash-attn 2.8 decoding entry point (no autograd)."""

import threading

import torch
import torch.nn.functional as F

from . import _backend as B
from . import _kvcache_ops as _ops  # also registers torch.ops.flash_attn._flash_attn_kvcache_forward
from . import _validate as V

_kvcache_op = torch.ops.flash_attn._flash_attn_kvcache_forward

# Eager fast path (see _kvcache_ops.KvcachePlan): plans per thread (a plan's parameter struct is
# rewritten by each call), keyed by everything the validation looked at.
_local = threading.local()
_MAX_PLANS = 64
_dispatch_modes = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)


def _meta(t):
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def _plan_key(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
              block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved, alibi_slopes,
              num_splits):
    """Hashable metadata of a call, or None when the call must take the general path (tracing,
    tensor subclasses, unusual argument types)."""
    if torch.compiler.is_compiling() or type(q) is not torch.Tensor or type(k_cache) is not torch.Tensor \
            or _dispatch_modes():
        return None
    if isinstance(cache_seqlens, torch.Tensor):
        seqlens_meta = _meta(cache_seqlens)
    elif cache_seqlens is None:
        seqlens_meta = None
    elif type(cache_seqlens) is int:
        seqlens_meta = "int"  # the value is passed per call, not part of the key
    else:
        return None
    return (_meta(q), _meta(k_cache), _meta(v_cache), _meta(k), _meta(v), _meta(rotary_cos), _meta(rotary_sin),
            seqlens_meta, _meta(cache_batch_idx), _meta(cache_leftpad), _meta(block_table), _meta(alibi_slopes),
            softmax_scale, bool(causal), tuple(window_size), softcap, bool(rotary_interleaved), num_splits,
            B.get_cuda_path())


def _plans():
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    return plans


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False):
    """Attention of q (batch, seqlen_q, nheads, d) over a KV cache, optionally appending k/v first.

    k_cache/v_cache: (batch_cache, seqlen_cache, nheads_k, d), or paged (num_blocks, page_size,
    nheads_k, d) with block_table (batch, max_blocks_per_seq) int32. k/v (batch, seqlen_new, nheads_k,
    d) are rotated (if rotary_cos/sin (seqlen_ro, rotary_dim / 2) are given) and written in place at
    cache_seqlens[b] onwards. cache_seqlens: int or (batch,) int32 tensor; None means the whole cache.
    cache_batch_idx maps each sequence to a cache row; cache_leftpad skips the first keys of a row.
    Returns out, or (out, softmax_lse) with return_softmax_lse.
    """
    try:
        key = _plan_key(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                        cache_leftpad, block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved,
                        alibi_slopes, num_splits)
        plan = _plans().get(key) if key is not None else None
    except TypeError:  # unhashable / non-iterable option: the general path reports it
        key = plan = None
    if plan is not None:
        out, lse = plan.run(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                            cache_leftpad, block_table, alibi_slopes, return_softmax_lse)
        return (out, lse) if return_softmax_lse else out
    args = (q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad,
            block_table, alibi_slopes)
    V.check_attention_inputs(("q", "k_cache", "v_cache"), (q, k_cache, v_cache), 4)
    if k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1:
        raise ValueError("k_cache, v_cache: the last dimension must be contiguous (it is updated in place)")
    if (k is None) != (v is None):
        raise ValueError("k and v must be given together")
    if k is not None:
        V.check_attention_inputs(("q", "k", "v"), (q, k, v), 4)
        if cache_seqlens is None:
            raise ValueError("cache_seqlens must be given when k and v are appended to the cache")
    if (rotary_cos is None) != (rotary_sin is None):
        raise ValueError("rotary_cos and rotary_sin must be given together")
    if rotary_cos is not None:
        for name, x in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
            V.check_tensor(name, x, 2)
            if x.dtype != q.dtype or x.device != q.device:
                raise TypeError(f"{name} must have q's dtype and device ({q.dtype}, {q.device}), "
                                f"got ({x.dtype}, {x.device})")
        rotary_cos, rotary_sin = rotary_cos.contiguous(), rotary_sin.contiguous()
    q, k, v = (V.maybe_contiguous(x) for x in (q, k, v))
    head_size_og = q.shape[-1]
    if softmax_scale is None:
        softmax_scale = head_size_og ** (-0.5)
    window = V.check_window(window_size)
    alibi_slopes = V.check_alibi(alibi_slopes, q.device)
    V.check_alibi_shape(alibi_slopes, q.shape[0], q.shape[2])

    cache_seqlen_const = 0
    if isinstance(cache_seqlens, int):
        cache_seqlen_const, cache_seqlens = cache_seqlens, None
    elif cache_seqlens is None:
        # Every key of the cache is valid (contiguous: seqlen_cache; paged: all mapped pages).
        cache_seqlen_const = block_table.shape[1] * k_cache.shape[1] if block_table is not None else k_cache.shape[1]
    cache_seqlens = V.check_index_tensor("cache_seqlens", cache_seqlens, q.device)
    cache_batch_idx = V.check_index_tensor("cache_batch_idx", cache_batch_idx, q.device)
    cache_leftpad = V.check_index_tensor("cache_leftpad", cache_leftpad, q.device)
    block_table = V.check_index_tensor("block_table", block_table, q.device, 2)

    V.check_kvcache_shapes(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                           cache_leftpad, block_table)

    if q.device.type == "cuda" and head_size_og % 8 != 0:
        return _with_padded_hdim(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens,
                                 cache_seqlen_const, cache_batch_idx, cache_leftpad, block_table,
                                 alibi_slopes, float(softmax_scale), causal, window, softcap,
                                 rotary_interleaved, num_splits, return_softmax_lse)
    seqlens_is_int = isinstance(args[7], int)
    checked = (q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, args[7] if seqlens_is_int else cache_seqlens,
               cache_batch_idx, cache_leftpad, block_table, alibi_slopes)
    if key is not None and all(x is y for x, y in zip(args, checked)):
        # Validation passed and copied no tensor: later calls with the same metadata skip it.
        plans = _plans()
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)  # the layouts plan.run allocates
        lse = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)
        p = _ops.build_params(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_seqlen_const,
                              cache_batch_idx, cache_leftpad, block_table, alibi_slopes, float(softmax_scale),
                              causal, window[0], window[1], float(softcap), rotary_interleaved, int(num_splits),
                              B.get_cuda_path(), out, lse)
        plan = plans[key] = _ops.KvcachePlan(p, q, k, rotary_cos, cache_seqlens, seqlens_is_int, cache_batch_idx,
                                             cache_leftpad, block_table, alibi_slopes)
        out, lse = plan.run(*args, return_softmax_lse)
        return (out, lse) if return_softmax_lse else out
    out, lse = _kvcache_op(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens,
                           cache_seqlen_const, cache_batch_idx, cache_leftpad, block_table, alibi_slopes,
                           float(softmax_scale), causal, window[0], window[1], float(softcap),
                           rotary_interleaved, int(num_splits), B.get_cuda_path())
    return (out, lse) if return_softmax_lse else out


def _with_padded_hdim(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_seqlen_const,
                      cache_batch_idx, cache_leftpad, block_table, alibi_slopes, softmax_scale, causal,
                      window, softcap, rotary_interleaved, num_splits, return_softmax_lse):
    """CUDA kernels need head_dim % 8 == 0: run on zero-padded copies, then write the appended
    keys/values back into the caller's caches (the copies received them)."""
    d = head_size_og = q.shape[-1]
    d = (d + 7) // 8 * 8
    pad = [0, d - head_size_og]
    k_pad, v_pad = F.pad(k_cache, pad), F.pad(v_cache, pad)
    out, lse = _kvcache_op(F.pad(q, pad), k_pad, v_pad, None if k is None else F.pad(k, pad),
                           None if v is None else F.pad(v, pad), rotary_cos, rotary_sin, cache_seqlens,
                           cache_seqlen_const, cache_batch_idx, cache_leftpad, block_table, alibi_slopes,
                           softmax_scale, causal, window[0], window[1], float(softcap), rotary_interleaved,
                           int(num_splits), B.get_cuda_path())
    if k is not None:
        k_cache.copy_(k_pad[..., :head_size_og])
        v_cache.copy_(v_pad[..., :head_size_og])
    out = out[..., :head_size_og]
    return (out, lse) if return_softmax_lse else out
