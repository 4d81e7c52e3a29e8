"""Bad input to every public function: one test per case, checking the exception TYPE and that the
message names the offending argument (issue #10).

TypeError: wrong Python/tensor type or dtype. ValueError: wrong shape, value, device or flag (the C++
API's flash::Error maps to ValueError). Cases whose check reads per-sequence values (cu_seqlens,
cache_seqlens, ...) are "host" cases: on CUDA those values live in device memory and are only checked in
the debug mode FLASH_ATTN_CHECK_INDICES=1, so there they run with it switched on.

CASES is also the source of the bad-input counts of scripts/reliability.py.
"""

import math
import os
import re

import pytest
import torch

from flash_attn import (flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func,
                        flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                        flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)

B, SQ, SK, H, HK, D = 2, 8, 10, 4, 2, 32


def _dt(device):
    return torch.float16 if device == "cuda" else torch.float32


def _t(*shape, device, dtype=None):
    return torch.randn(*shape, device=device, dtype=dtype or _dt(device))


def _i32(values, device):
    return torch.tensor(values, dtype=torch.int32, device=device)


def _qkv(d):
    return _t(B, SQ, H, D, device=d), _t(B, SK, HK, D, device=d), _t(B, SK, HK, D, device=d)


def _other_device(d):
    return "cpu" if d == "cuda" else None


# ---- flash_attn_func -------------------------------------------------------------------------------


def func(d, q=None, k=None, v=None, **kw):
    q0, k0, v0 = _qkv(d)
    return flash_attn_func(q0 if q is None else q, k0 if k is None else k, v0 if v is None else v, **kw)


FUNC = {
    "q_not_tensor": (TypeError, "q", lambda d: func(d, q=[1.0])),
    "q_int32": (TypeError, "q", lambda d: func(d, q=_t(B, SQ, H, D, device=d).to(torch.int32))),
    "q_float64": (TypeError, "q", lambda d: flash_attn_func(*(x.double() for x in _qkv(d)))),
    "k_dtype": (TypeError, "k", lambda d: func(d, k=_t(B, SK, HK, D, device=d, dtype=torch.bfloat16))),
    "v_dtype": (TypeError, "v", lambda d: func(d, v=_t(B, SK, HK, D, device=d, dtype=torch.bfloat16))),
    "q_rank": (ValueError, "q", lambda d: func(d, q=_t(SQ, H, D, device=d))),
    "k_rank": (ValueError, "k", lambda d: func(d, k=_t(SK, HK, D, device=d))),
    "k_head_dim": (ValueError, "k", lambda d: func(d, k=_t(B, SK, HK, 64, device=d), v=_t(B, SK, HK, 64, device=d))),
    "v_seqlen": (ValueError, "v", lambda d: func(d, v=_t(B, SK + 1, HK, D, device=d))),
    "k_batch": (ValueError, "k", lambda d: func(d, k=_t(B + 1, SK, HK, D, device=d), v=_t(B + 1, SK, HK, D, device=d))),
    "nheads_k_not_divisor": (ValueError, "nheads_k", lambda d: func(d, k=_t(B, SK, 3, D, device=d),
                                                                   v=_t(B, SK, 3, D, device=d))),
    "head_dim_264": (ValueError, "head_dim", lambda d: flash_attn_func(*(_t(1, 4, 1, 264, device=d) for _ in range(3)))),
    "head_dim_0": (ValueError, "head_dim", lambda d: flash_attn_func(*(_t(1, 4, 1, 0, device=d) for _ in range(3)))),
    "dropout_p_one": (ValueError, "dropout_p", lambda d: func(d, dropout_p=1.0)),
    "dropout_p_negative": (ValueError, "dropout_p", lambda d: func(d, dropout_p=-0.1)),
    "dropout_p_nan": (ValueError, "dropout_p", lambda d: func(d, dropout_p=math.nan)),
    "dropout_p_str": (TypeError, "dropout_p", lambda d: func(d, dropout_p="0.1")),
    "window_not_pair": (ValueError, "window_size", lambda d: func(d, window_size=3)),
    "window_triple": (ValueError, "window_size", lambda d: func(d, window_size=(1, 2, 3))),
    "window_left_below_minus_one": (ValueError, "window_size", lambda d: func(d, window_size=(-2, 0))),
    "window_right_below_minus_one": (ValueError, "window_size", lambda d: func(d, window_size=(0, -5))),
    "softcap_negative": (ValueError, "softcap", lambda d: func(d, softcap=-1.0)),
    "softcap_inf": (ValueError, "softcap", lambda d: func(d, softcap=math.inf)),
    "softmax_scale_nan": (ValueError, "softmax_scale", lambda d: func(d, softmax_scale=math.nan)),
    "softmax_scale_inf": (ValueError, "softmax_scale", lambda d: func(d, softmax_scale=math.inf)),
    "alibi_float64": (TypeError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(H, device=d, dtype=torch.float64))),
    "alibi_fp16": (TypeError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(H, device=d, dtype=torch.float16))),
    "alibi_nheads": (ValueError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(H - 1, device=d))),
    "alibi_batch": (ValueError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(B + 1, H, device=d))),
    "alibi_rank3": (ValueError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(1, B, H, device=d))),
    "alibi_not_tensor": (TypeError, "alibi_slopes", lambda d: func(d, alibi_slopes=[0.5] * H)),
}
FUNC_CUDA = {  # need a GPU (a second device kind, or CUDA-only rules)
    "k_on_cpu": (ValueError, "k", lambda d: func(d, k=_t(B, SK, HK, D, device="cpu", dtype=torch.float16))),
    "alibi_on_cpu": (ValueError, "alibi_slopes", lambda d: func(d, alibi_slopes=torch.ones(H))),
    "fp32_on_cuda": (TypeError, "q", lambda d: flash_attn_func(*(x.float() for x in _qkv(d)))),
    # Batch sits on a CUDA grid dimension capped at 65535: refused with the limit named, not a failed launch.
    "batch_over_grid_limit": (ValueError, "q.*batch 65536", lambda d: flash_attn_func(*(_t(65536, 1, 1, 8, device=d) for _ in range(3)))),
}

# ---- packed variants -----------------------------------------------------------------------------


def _qkv_packed(d, three=3):
    return _t(B, SQ, three, H, D, device=d)


PACKED = {
    "qkv_not_tensor": (TypeError, "qkv", lambda d: flash_attn_qkvpacked_func((1, 2, 3))),
    "qkv_rank": (ValueError, "qkv", lambda d: flash_attn_qkvpacked_func(_t(B, SQ, H, D, device=d))),
    "qkv_pack_axis_2": (ValueError, "qkv", lambda d: flash_attn_qkvpacked_func(_qkv_packed(d, 2))),
    "qkv_int": (TypeError, "q", lambda d: flash_attn_qkvpacked_func(_qkv_packed(d).to(torch.int32))),
    "qkv_dropout": (ValueError, "dropout_p", lambda d: flash_attn_qkvpacked_func(_qkv_packed(d), dropout_p=2.0)),
    "qkv_window": (ValueError, "window_size", lambda d: flash_attn_qkvpacked_func(_qkv_packed(d), window_size=(-3, -1))),
    "kv_not_tensor": (TypeError, "kv", lambda d: flash_attn_kvpacked_func(_qkv(d)[0], None)),
    "kv_rank": (ValueError, "kv", lambda d: flash_attn_kvpacked_func(_qkv(d)[0], _t(B, SK, HK, D, device=d))),
    "kv_pack_axis_3": (ValueError, "kv", lambda d: flash_attn_kvpacked_func(_qkv(d)[0], _t(B, SK, 3, HK, D, device=d))),
    "kv_dtype": (TypeError, r"\bk\b", lambda d: flash_attn_kvpacked_func(
        _qkv(d)[0], _t(B, SK, 2, HK, D, device=d, dtype=torch.bfloat16))),
    "kv_heads": (ValueError, "nheads_k", lambda d: flash_attn_kvpacked_func(_qkv(d)[0], _t(B, SK, 2, 3, D, device=d))),
    "kv_softcap": (ValueError, "softcap", lambda d: flash_attn_kvpacked_func(
        _qkv(d)[0], _t(B, SK, 2, HK, D, device=d), softcap=-2.0)),
}

# ---- varlen --------------------------------------------------------------------------------------

LQ, LK = (3, 5), (4, 6)  # per-sequence lengths


def _cu(lengths, d, dtype=torch.int32):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=dtype, device=d)


def varlen(d, **over):
    a = dict(q=_t(sum(LQ), H, D, device=d), k=_t(sum(LK), HK, D, device=d), v=_t(sum(LK), HK, D, device=d),
             cu_seqlens_q=_cu(LQ, d), cu_seqlens_k=_cu(LK, d), max_seqlen_q=max(LQ), max_seqlen_k=max(LK))
    a.update(over)
    return flash_attn_varlen_func(**a)


def paged(d, page=4, pages_per_seq=2, **over):
    """Paged varlen: LK keys per sequence in pages of 4 (2 pages per row are enough)."""
    n_pages = len(LK) * pages_per_seq
    table = torch.arange(n_pages, dtype=torch.int32, device=d).view(len(LK), pages_per_seq)
    a = dict(k=_t(n_pages, page, HK, D, device=d), v=_t(n_pages, page, HK, D, device=d), block_table=table)
    a.update(over)
    return varlen(d, **a)


VARLEN = {
    "q_rank4": (ValueError, "q", lambda d: varlen(d, q=_t(1, sum(LQ), H, D, device=d))),
    "k_rank4": (ValueError, "k", lambda d: varlen(d, k=_t(1, sum(LK), HK, D, device=d))),
    "v_rows": (ValueError, "v", lambda d: varlen(d, v=_t(sum(LK) + 1, HK, D, device=d))),
    "k_heads": (ValueError, "nheads_k", lambda d: varlen(d, k=_t(sum(LK), 3, D, device=d), v=_t(sum(LK), 3, D, device=d))),
    "cu_seqlens_q_int64": (TypeError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_cu(LQ, d, torch.int64))),
    "cu_seqlens_k_int64": (TypeError, "cu_seqlens_k", lambda d: varlen(d, cu_seqlens_k=_cu(LK, d, torch.int64))),
    "cu_seqlens_q_float": (TypeError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_cu(LQ, d, torch.float32))),
    "cu_seqlens_q_not_tensor": (TypeError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=[0, 3, 8])),
    "cu_seqlens_q_rank2": (ValueError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_cu(LQ, d).view(1, -1))),
    "cu_seqlens_k_batch": (ValueError, "cu_seqlens_k", lambda d: varlen(d, cu_seqlens_k=_cu((4, 2, 4), d))),
    "max_seqlen_q_negative": (ValueError, "max_seqlen_q", lambda d: varlen(d, max_seqlen_q=-1)),
    "max_seqlen_k_negative": (ValueError, "max_seqlen_k", lambda d: varlen(d, max_seqlen_k=-1)),
    "alibi_batch_varlen": (ValueError, "alibi_slopes", lambda d: varlen(d, alibi_slopes=torch.ones(3, H, device=d))),
    "dropout_varlen": (ValueError, "dropout_p", lambda d: varlen(d, dropout_p=1.5)),
    "block_table_int64": (TypeError, "block_table", lambda d: paged(
        d, block_table=torch.zeros(2, 2, dtype=torch.int64, device=d))),
    "block_table_rank1": (ValueError, "block_table", lambda d: paged(d, block_table=_i32([0, 1, 2, 3], d))),
    "block_table_rows": (ValueError, "block_table", lambda d: paged(d, block_table=_i32([[0, 1]], d))),
    "paged_k_rank3": (ValueError, "k", lambda d: paged(d, k=_t(16, HK, D, device=d))),
    "paged_v_shape": (ValueError, "v", lambda d: paged(d, v=_t(4, 5, HK, D, device=d))),
    "paged_max_seqlen_k_beyond_row": (ValueError, "max_seqlen_k", lambda d: paged(d, max_seqlen_k=9)),
    "paged_row_too_short": (ValueError, "block_table", lambda d: paged(d, block_table=_i32([[0], [1]], d))),
    "paged_page_size_0": (ValueError, "page_size", lambda d: paged(d, k=_t(4, 0, HK, D, device=d),
                                                                   v=_t(4, 0, HK, D, device=d))),
}
# Per-sequence values: checked on the host (CPU tensors), on CUDA in the debug mode.
VARLEN_HOST = {
    "cu_seqlens_q_decreasing": (ValueError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_i32([0, 6, 3], d),
                                                                             max_seqlen_q=6)),
    "cu_seqlens_q_not_from_0": (ValueError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_i32([1, 3, 8], d))),
    "cu_seqlens_q_last_not_total": (ValueError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_cu((3, 4), d))),
    "cu_seqlens_q_beyond_total": (ValueError, "cu_seqlens_q", lambda d: varlen(d, cu_seqlens_q=_cu((3, 9), d),
                                                                               max_seqlen_q=9)),
    "cu_seqlens_k_beyond_k": (ValueError, "cu_seqlens_k", lambda d: varlen(d, cu_seqlens_k=_cu((4, 9), d),
                                                                           max_seqlen_k=9)),
    "cu_seqlens_k_decreasing": (ValueError, "cu_seqlens_k", lambda d: varlen(d, cu_seqlens_k=_i32([0, 8, 2], d),
                                                                             max_seqlen_k=8)),
    "max_seqlen_q_too_small": (ValueError, "max_seqlen_q", lambda d: varlen(d, max_seqlen_q=4)),
    "max_seqlen_k_too_small": (ValueError, "max_seqlen_k", lambda d: varlen(d, max_seqlen_k=5)),
}
VARLEN_DEBUG_ONLY = {  # page ids: the kernels mask bad pages, so only the debug mode reports them
    "paged_negative_page": (ValueError, "block_table", lambda d: paged(d, block_table=_i32([[0, 1], [2, -1]], d))),
    "paged_page_out_of_range": (ValueError, "block_table", lambda d: paged(d, block_table=_i32([[0, 1], [2, 9]], d))),
}

PACKED_VARLEN = {
    "varlen_qkv_rank": (ValueError, "qkv", lambda d: flash_attn_varlen_qkvpacked_func(
        _t(B, SQ, 3, H, D, device=d), _cu((3, 5), d), 5)),
    "varlen_qkv_pack_axis": (ValueError, "qkv", lambda d: flash_attn_varlen_qkvpacked_func(
        _t(8, 2, H, D, device=d), _cu((3, 5), d), 5)),
    "varlen_qkv_cu_int64": (TypeError, "cu_seqlens", lambda d: flash_attn_varlen_qkvpacked_func(
        _t(8, 3, H, D, device=d), _cu((3, 5), d, torch.int64), 5)),
    "varlen_kv_rank": (ValueError, "kv", lambda d: flash_attn_varlen_kvpacked_func(
        _t(8, H, D, device=d), _t(10, HK, D, device=d), _cu((3, 5), d), _cu((4, 6), d), 5, 6)),
    "varlen_kv_pack_axis": (ValueError, "kv", lambda d: flash_attn_varlen_kvpacked_func(
        _t(8, H, D, device=d), _t(10, 1, HK, D, device=d), _cu((3, 5), d), _cu((4, 6), d), 5, 6)),
    "varlen_kv_window": (ValueError, "window_size", lambda d: flash_attn_varlen_kvpacked_func(
        _t(8, H, D, device=d), _t(10, 2, HK, D, device=d), _cu((3, 5), d), _cu((4, 6), d), 5, 6, window_size=None)),
}

# ---- kvcache -------------------------------------------------------------------------------------

CACHE = 16


def kvc(d, **over):
    a = dict(q=_t(B, 1, H, D, device=d), k_cache=_t(B, CACHE, HK, D, device=d), v_cache=_t(B, CACHE, HK, D, device=d))
    a.update(over)
    return flash_attn_with_kvcache(**a)


def _new(d, n=1, hk=HK, dim=D, b=B):
    return _t(b, n, hk, dim, device=d)


KVCACHE = {
    "kvcache_q_rank": (ValueError, "q", lambda d: kvc(d, q=_t(B, H, D, device=d))),
    "kvcache_k_cache_dtype": (TypeError, "k_cache", lambda d: kvc(d, k_cache=_t(B, CACHE, HK, D, device=d, dtype=torch.bfloat16))),
    "v_cache_shape": (ValueError, "v_cache", lambda d: kvc(d, v_cache=_t(B, CACHE - 1, HK, D, device=d))),
    "k_cache_head_dim": (ValueError, "k_cache", lambda d: kvc(d, k_cache=_t(B, CACHE, HK, 64, device=d),
                                                              v_cache=_t(B, CACHE, HK, 64, device=d))),
    "k_cache_heads": (ValueError, "k_cache", lambda d: kvc(d, k_cache=_t(B, CACHE, 3, D, device=d),
                                                           v_cache=_t(B, CACHE, 3, D, device=d))),
    "k_cache_last_dim_strided": (ValueError, "k_cache", lambda d: kvc(d, k_cache=_t(B, CACHE, HK, 2 * D, device=d)[..., ::2])),
    "k_cache_batch_too_small": (ValueError, "k_cache", lambda d: kvc(d, k_cache=_t(1, CACHE, HK, D, device=d),
                                                                     v_cache=_t(1, CACHE, HK, D, device=d))),
    "k_without_v": (ValueError, "k and v", lambda d: kvc(d, k=_new(d), cache_seqlens=3)),
    "append_without_cache_seqlens": (ValueError, "cache_seqlens", lambda d: kvc(d, k=_new(d), v=_new(d))),
    "k_new_batch": (ValueError, r"\bk\b", lambda d: kvc(d, k=_new(d, b=1), v=_new(d, b=1), cache_seqlens=3)),
    "k_new_heads": (ValueError, r"\bk\b", lambda d: kvc(d, k=_new(d, hk=1), v=_new(d, hk=1), cache_seqlens=3)),
    "v_new_shape": (ValueError, r"\bv\b", lambda d: kvc(d, k=_new(d), v=_new(d, n=2), cache_seqlens=3)),
    "k_new_dtype": (TypeError, r"\bk\b", lambda d: kvc(d, k=_new(d).to(torch.bfloat16), v=_new(d), cache_seqlens=3)),
    "k_new_longer_than_cache": (ValueError, "k_cache", lambda d: kvc(d, k=_new(d, n=CACHE + 1), v=_new(d, n=CACHE + 1),
                                                                     cache_seqlens=0)),
    "cache_seqlens_int64": (TypeError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=torch.tensor([1, 2], device=d))),
    "cache_seqlens_shape": (ValueError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=_i32([1, 2, 3], d))),
    "cache_seqlens_int_too_big": (ValueError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=CACHE + 1)),
    "cache_seqlens_int_no_room": (ValueError, "cache_seqlens", lambda d: kvc(d, k=_new(d, 2), v=_new(d, 2),
                                                                           cache_seqlens=CACHE - 1)),
    "cache_seqlens_int_negative": (ValueError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=-1)),
    "cache_batch_idx_float": (TypeError, "cache_batch_idx", lambda d: kvc(d, cache_seqlens=1,
                                                                         cache_batch_idx=torch.zeros(B, device=d))),
    "cache_leftpad_shape": (ValueError, "cache_leftpad", lambda d: kvc(d, cache_seqlens=2, cache_leftpad=_i32([0], d))),
    "kvcache_block_table_float": (TypeError, "block_table", lambda d: kvc(d, cache_seqlens=1, block_table=torch.zeros(B, 1, device=d))),
    "kvcache_block_table_rows": (ValueError, "block_table", lambda d: kvc(d, cache_seqlens=1, block_table=_i32([[0, 1]], d))),
    "block_table_with_cache_batch_idx": (ValueError, "cache_batch_idx", lambda d: kvc(
        d, cache_seqlens=1, block_table=_i32([[0], [1]], d), cache_batch_idx=_i32([0, 1], d))),
    "rotary_cos_without_sin": (ValueError, "rotary_cos", lambda d: kvc(d, cache_seqlens=1, rotary_cos=_t(CACHE, 8, device=d))),
    "rotary_dim_too_big": (ValueError, "rotary_cos", lambda d: kvc(d, cache_seqlens=1, rotary_cos=_t(CACHE, 20, device=d),
                                                                   rotary_sin=_t(CACHE, 20, device=d))),
    "rotary_too_few_rows": (ValueError, "rotary_cos", lambda d: kvc(d, cache_seqlens=1, rotary_cos=_t(4, 8, device=d),
                                                                    rotary_sin=_t(4, 8, device=d))),
    "rotary_sin_shape": (ValueError, "rotary_sin", lambda d: kvc(d, cache_seqlens=1, rotary_cos=_t(CACHE, 8, device=d),
                                                                 rotary_sin=_t(CACHE, 4, device=d))),
    "rotary_dtype": (TypeError, "rotary_cos", lambda d: kvc(d, cache_seqlens=1, rotary_cos=_t(CACHE, 8, device=d).double(),
                                                            rotary_sin=_t(CACHE, 8, device=d).double())),
    "kvcache_window": (ValueError, "window_size", lambda d: kvc(d, cache_seqlens=1, window_size=(-7, 0))),
    "kvcache_softcap": (ValueError, "softcap", lambda d: kvc(d, cache_seqlens=1, softcap=-0.5)),
    "kvcache_head_dim_264": (ValueError, "head_dim", lambda d: kvc(d, q=_t(B, 1, H, 264, device=d),
                                                                   k_cache=_t(B, CACHE, HK, 264, device=d),
                                                                   v_cache=_t(B, CACHE, HK, 264, device=d))),
}
# Not checked yet: flash_attn/_kvcache.py does not call _validate.check_alibi_shape (reported to its
# owner); the C++ API cannot see the tensor's shape. Kept as a non-strict xfail until it does.
KNOWN_GAPS = {
    "kvcache_alibi_shape": (ValueError, "alibi_slopes", lambda d: kvc(d, cache_seqlens=1, alibi_slopes=torch.ones(2, device=d))),
}
KVCACHE_HOST = {
    "cache_seqlens_tensor_too_big": (ValueError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=_i32([3, CACHE + 1], d))),
    "cache_seqlens_tensor_negative": (ValueError, "cache_seqlens", lambda d: kvc(d, cache_seqlens=_i32([-1, 3], d))),
    "cache_seqlens_no_room_for_new": (ValueError, "cache_seqlens", lambda d: kvc(d, k=_new(d, 2), v=_new(d, 2),
                                                                               cache_seqlens=_i32([3, CACHE - 1], d))),
    "cache_batch_idx_out_of_range": (ValueError, "cache_batch_idx", lambda d: kvc(d, cache_seqlens=1,
                                                                                cache_batch_idx=_i32([0, 5], d))),
    "cache_batch_idx_negative": (ValueError, "cache_batch_idx", lambda d: kvc(d, cache_seqlens=1,
                                                                            cache_batch_idx=_i32([-1, 0], d))),
    "cache_leftpad_beyond_seqlen": (ValueError, "cache_leftpad", lambda d: kvc(d, cache_seqlens=2,
                                                                             cache_leftpad=_i32([0, 3], d))),
}
KVCACHE_DEBUG_ONLY = {
    "kv_paged_negative_page": (ValueError, "block_table", lambda d: kvc(
        d, k_cache=_t(4, 8, HK, D, device=d), v_cache=_t(4, 8, HK, D, device=d), cache_seqlens=_i32([3, 12], d),
        block_table=_i32([[0, 1], [-1, 3]], d))),
    "kv_paged_page_out_of_range": (ValueError, "block_table", lambda d: kvc(
        d, k_cache=_t(4, 8, HK, D, device=d), v_cache=_t(4, 8, HK, D, device=d), cache_seqlens=_i32([3, 12], d),
        block_table=_i32([[0, 1], [2, 4]], d))),
}

# name -> (exception, regex, fn, where): where = "any" | "cuda" | "host" | "debug"
CASES = {}
for table, where in ((FUNC, "any"), (FUNC_CUDA, "cuda"), (PACKED, "any"), (VARLEN, "any"), (VARLEN_HOST, "host"),
                     (VARLEN_DEBUG_ONLY, "debug"), (PACKED_VARLEN, "any"), (KVCACHE, "any"),
                     (KVCACHE_HOST, "host"), (KVCACHE_DEBUG_ONLY, "debug"), (KNOWN_GAPS, "any")):
    for name, (exc, regex, fn) in table.items():
        assert name not in CASES, name
        CASES[name] = (exc, regex, fn, where)


def run_case(name, device):
    """Runs one case; returns None when it passes, else a description of the failure."""
    exc, regex, fn, where = CASES[name]
    debug = where == "debug" or (where == "host" and device == "cuda")
    old = os.environ.get("FLASH_ATTN_CHECK_INDICES")
    if debug:
        os.environ["FLASH_ATTN_CHECK_INDICES"] = "1"
    try:
        fn(device)
    except Exception as e:  # noqa: BLE001  (the type is the point of the test)
        if not isinstance(e, exc):
            return f"raised {type(e).__name__} ({e}), expected {exc.__name__}"
        if not re.search(regex, str(e)):
            return f"message {str(e)!r} does not name {regex!r}"
        return None
    finally:
        if debug:
            if old is None:
                os.environ.pop("FLASH_ATTN_CHECK_INDICES", None)
            else:
                os.environ["FLASH_ATTN_CHECK_INDICES"] = old
    return f"no exception (expected {exc.__name__} naming {regex!r})"


def applicable(name, device):
    where = CASES[name][3]
    return not (where == "cuda" and device != "cuda")


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(device, case):
    if not applicable(case, device):
        pytest.skip("needs a CUDA device")
    failure = run_case(case, device)
    if case in KNOWN_GAPS and failure is not None:
        pytest.xfail(f"known gap: {failure}")
    assert failure is None, failure


def test_debug_only_cases_pass_without_debug_mode(device, monkeypatch):
    """Bad page ids are masked (never dereferenced) without the debug mode: no exception."""
    monkeypatch.delenv("FLASH_ATTN_CHECK_INDICES", raising=False)
    for name, (_, _, fn) in {**VARLEN_DEBUG_ONLY, **KVCACHE_DEBUG_ONLY}.items():
        fn(device)
    if device == "cuda":
        torch.cuda.synchronize()
