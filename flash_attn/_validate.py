"""Cheap Python-side input checks with messages that name the argument.

The C++ API validates everything again (it is the source of truth); these checks exist so the
common mistakes fail before any allocation, with flash-attn-like exception types.
"""

import numbers
import os

import torch

_CUDA_DTYPES = (torch.float16, torch.bfloat16)
_CPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def maybe_contiguous(x):
    # flash-attn only requires the head dim to be contiguous; anything else is handled by strides.
    return x.contiguous() if x is not None and x.stride(-1) != 1 else x


# Packed inputs: (name, rank) -> (axis, size) of the packing axis. qkv (b, s, 3, h, d) or varlen
# (total, 3, h, d); kv (b, s, 2, h, d) or (total, 2, h, d). Checked here because the wrappers slice
# the packing axis right after check_tensor, which would otherwise fail with a bare IndexError.
_PACKED_AXIS = {("qkv", 5): (2, 3), ("qkv", 4): (1, 3), ("kv", 5): (2, 2), ("kv", 4): (1, 2)}

MAX_HEAD_DIM = 256


def index_debug_mode() -> bool:
    """FLASH_ATTN_CHECK_INDICES=1: also check values that live in device memory (costs a sync).
    The C++ API checks the per-sequence values (cu_seqlens, seqused_k, cache_seqlens, block_table...);
    Python adds what only it knows (e.g. the rows of k against cu_seqlens_k[-1])."""
    v = os.environ.get("FLASH_ATTN_CHECK_INDICES", "")
    return v not in ("", "0") and not torch.compiler.is_compiling()


def check_tensor(name: str, x, ndim=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    packed = _PACKED_AXIS.get((name, x.dim()))
    if packed is not None and x.shape[packed[0]] != packed[1]:
        raise ValueError(f"{name}: dimension {packed[0]} must have size {packed[1]} (the packed "
                         f"{'q, k, v' if packed[1] == 3 else 'k, v'}), got shape {tuple(x.shape)}")


def check_attention_inputs(names, tensors, ndim):
    """q/k/v-like tensors: type, rank, dtype (shared), device (shared)."""
    first = tensors[0]
    for name, x in zip(names, tensors):
        check_tensor(name, x, ndim)
    allowed = _CUDA_DTYPES if first.device.type == "cuda" else _CPU_DTYPES
    if first.dtype not in allowed:
        kinds = "float16 or bfloat16" if first.device.type == "cuda" else "float16, bfloat16 or float32"
        raise TypeError(f"{names[0]}: dtype {first.dtype} is not supported on {first.device.type} (use {kinds})")
    for name, x in zip(names[1:], tensors[1:]):
        if x.dtype != first.dtype:
            raise TypeError(f"{name} must have the same dtype as {names[0]} ({first.dtype}), got {x.dtype}")
        if x.device != first.device:
            raise ValueError(f"{name} must be on the same device as {names[0]} ({first.device}), got {x.device}")
    if first.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{names[0]}: device {first.device} is not supported (cpu or cuda)")
    for name, x in zip(names, tensors):
        if x.shape[-1] != first.shape[-1] and name not in ("v", "v_cache"):
            raise ValueError(f"{name}: head dim {x.shape[-1]} differs from {names[0]}'s {first.shape[-1]}")
    head_dim = first.shape[-1]
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim of {names[0]} must be in [1, {MAX_HEAD_DIM}], got {head_dim}")


def check_index_tensor(name: str, x, device, ndim=1):
    """cu_seqlens, seqused, cache_seqlens, block tables...: int32 on the tensors' device."""
    if x is None:
        return None
    check_tensor(name, x, ndim)
    if x.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} must be on the same device as q ({device}), got {x.device}")
    return x.contiguous()


def check_alibi(alibi_slopes, device):
    if alibi_slopes is None:
        return None
    check_tensor("alibi_slopes", alibi_slopes, (1, 2))
    if alibi_slopes.dtype != torch.float32:
        raise TypeError(f"alibi_slopes must have dtype torch.float32, got {alibi_slopes.dtype}")
    if alibi_slopes.device != device:
        raise ValueError(f"alibi_slopes must be on the same device as q ({device}), got {alibi_slopes.device}")
    return maybe_contiguous(alibi_slopes)


def check_window(window_size):
    try:
        left, right = window_size
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair (left, right), got {window_size!r}") from None
    return int(left), int(right)


def check_dropout(dropout_p):
    if not isinstance(dropout_p, (numbers.Real, torch.Tensor)):
        raise TypeError(f"dropout_p must be a float, got {type(dropout_p).__name__}")
    p = float(dropout_p)
    if not 0.0 <= p < 1.0:  # also rejects NaN
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return p


# ---- shape agreement (the C++ API sees raw pointers, so only Python can compare tensor shapes) ----


def _require(cond, msg):
    if not cond:
        raise ValueError(msg)


def check_same_shape(name, x, ref_name, ref):
    _require(x.shape == ref.shape, f"{name} must have the same shape as {ref_name} {tuple(ref.shape)}, "
                                   f"got {tuple(x.shape)}")


def check_fixed_shapes(q, k, v):
    """q (b, sq, h, d); k, v (b, sk, hk, d) with h % hk == 0."""
    check_same_shape("v", v, "k", k)
    _require(k.shape[0] == q.shape[0], f"k: batch {k.shape[0]} differs from q's batch {q.shape[0]}")
    _require(k.shape[3] == q.shape[3], f"k: head dim {k.shape[3]} differs from q's {q.shape[3]}")
    _require(k.shape[2] >= 1 and q.shape[2] % k.shape[2] == 0,
             f"k: nheads_k {k.shape[2]} must divide q's nheads {q.shape[2]}")


def check_varlen_shapes(q, k, v, cu_seqlens_q, cu_seqlens_k, block_table):
    """q (total_q, h, d); k, v (total_k, hk, d) or paged (pages, page_size, hk, d)."""
    check_same_shape("v", v, "k", k)
    _require(k.shape[-1] == q.shape[-1], f"k: head dim {k.shape[-1]} differs from q's {q.shape[-1]}")
    _require(k.shape[-2] >= 1 and q.shape[-2] % k.shape[-2] == 0,
             f"k: nheads_k {k.shape[-2]} must divide q's nheads {q.shape[-2]}")
    _require(cu_seqlens_q.dim() == 1 and cu_seqlens_q.shape[0] >= 1,
             f"cu_seqlens_q must be a (batch + 1,) vector, got shape {tuple(cu_seqlens_q.shape)}")
    _require(cu_seqlens_k.shape == cu_seqlens_q.shape,
             f"cu_seqlens_k must have the shape of cu_seqlens_q {tuple(cu_seqlens_q.shape)}, "
             f"got {tuple(cu_seqlens_k.shape)}")
    if block_table is not None:
        _require(block_table.shape[0] == cu_seqlens_q.shape[0] - 1,
                 f"block_table must have one row per sequence ({cu_seqlens_q.shape[0] - 1}), "
                 f"got {block_table.shape[0]}")
    elif (cu_seqlens_k.device.type == "cpu" and not torch.compiler.is_compiling()) or index_debug_mode():
        # Cheap on the CPU only (on CUDA this synchronises the stream: debug mode only).
        _require(int(cu_seqlens_k[-1]) <= k.shape[0],
                 f"cu_seqlens_k: last entry {int(cu_seqlens_k[-1])} exceeds k's {k.shape[0]} rows")


def check_alibi_shape(alibi_slopes, batch, nheads):
    if alibi_slopes is None:
        return
    ok = alibi_slopes.shape in ((nheads,), (batch, nheads))
    _require(ok, f"alibi_slopes must have shape ({nheads},) or ({batch}, {nheads}), "
                 f"got {tuple(alibi_slopes.shape)}")


def check_kvcache_shapes(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
                         cache_leftpad, block_table):
    batch, _, nheads, head_dim = q.shape
    check_same_shape("v_cache", v_cache, "k_cache", k_cache)
    hk = k_cache.shape[2]
    _require(k_cache.shape[3] == head_dim, f"k_cache: head dim {k_cache.shape[3]} differs from q's {head_dim}")
    _require(hk >= 1 and nheads % hk == 0, f"k_cache: nheads_k {hk} must divide q's nheads {nheads}")
    if k is not None:
        check_same_shape("v", v, "k", k)
        _require(k.shape[0] == batch and k.shape[2] == hk and k.shape[3] == head_dim,
                 f"k must have shape ({batch}, seqlen_new, {hk}, {head_dim}), got {tuple(k.shape)}")
    for name, x in (("cache_seqlens", cache_seqlens), ("cache_batch_idx", cache_batch_idx),
                    ("cache_leftpad", cache_leftpad)):
        if x is not None:
            _require(x.shape == (batch,), f"{name} must have shape ({batch},), got {tuple(x.shape)}")
    if block_table is not None:
        _require(block_table.shape[0] == batch,
                 f"block_table must have one row per sequence ({batch}), got {block_table.shape[0]}")
        capacity = block_table.shape[1] * k_cache.shape[1]
    else:
        capacity = k_cache.shape[1]
    if rotary_cos is not None:
        check_same_shape("rotary_sin", rotary_sin, "rotary_cos", rotary_cos)
        _require(2 * rotary_cos.shape[1] <= head_dim,
                 f"rotary_cos: rotary dim {2 * rotary_cos.shape[1]} exceeds head dim {head_dim}")
        _require(rotary_cos.shape[0] >= capacity,
                 f"rotary_cos: {rotary_cos.shape[0]} rows, must cover the cache's {capacity} positions")
