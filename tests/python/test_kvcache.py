"""flash_attn_with_kvcache: append, rotary (both styles), leftpad, cache_batch_idx, paged caches
with shuffled block tables, num_splits, int cache_seqlens, and every score modifier."""

import math

import pytest
import torch

from flash_attn import flash_attn_with_kvcache
from helpers import skip_unsupported_dtype
from reference import assert_close_rule, kvcache_ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# name -> overrides of the defaults in run_kvcache
CONFIGS = {
    "decode": {},
    "decode_causal": {"causal": True},
    "prefill_chunk_causal": {"seqlen_q": 5, "seqlen_new": 5, "causal": True},
    "append_noncausal": {"seqlen_q": 3, "seqlen_new": 3},
    "append_more_keys_than_queries": {"seqlen_q": 2, "seqlen_new": 4, "causal": True},
    "rotary_interleaved": {"seqlen_q": 3, "seqlen_new": 3, "rotary": "interleaved", "causal": True},
    "rotary_neox": {"seqlen_q": 3, "seqlen_new": 3, "rotary": "neox", "causal": True},
    "rotary_noncausal_full_dim": {"seqlen_q": 2, "seqlen_new": 2, "rotary": "neox", "rotary_dim": 64},
    "rotary_interleaved_local": {"seqlen_q": 4, "seqlen_new": 4, "rotary": "interleaved",
                                 "window": (6, 0)},
    "leftpad": {"seqlen_q": 2, "seqlen_new": 2, "leftpad": True, "causal": True},
    "leftpad_rotary": {"seqlen_q": 2, "seqlen_new": 2, "leftpad": True, "rotary": "neox", "causal": True},
    "cache_batch_idx": {"seqlen_q": 2, "seqlen_new": 2, "batch_idx": True, "causal": True},
    "paged_1": {"seqlen_q": 2, "seqlen_new": 2, "page_size": 1, "causal": True},
    "paged_16": {"seqlen_q": 3, "seqlen_new": 3, "page_size": 16, "causal": True, "rotary": "interleaved"},
    "paged_64": {"seqlen_q": 1, "seqlen_new": 1, "page_size": 64, "seqlen_cache": 150},
    "paged_16_no_append": {"page_size": 16, "seqlen_q": 4, "causal": True},
    "num_splits_1": {"num_splits": 1, "seqlen_cache": 130},
    "num_splits_3": {"num_splits": 3, "seqlen_cache": 130, "seqlen_new": 1},
    "cache_seqlens_int": {"seqlens_int": True, "seqlen_new": 1},
    "window_softcap_alibi": {"seqlen_q": 3, "seqlen_new": 3, "window": (9, 1), "softcap": 2.0, "alibi": True},
    "mqa": {"hk": 1, "seqlen_q": 2, "seqlen_new": 2, "causal": True},
    "whole_cache_seqlens_none": {"seqlens_none": True},
    "head_dim_59": {"d": 59, "seqlen_q": 2, "seqlen_new": 2, "causal": True},  # padded on CUDA
    "odd_head_dim": {"d": 40, "seqlen_q": 2, "seqlen_new": 2, "rotary": "neox", "rotary_dim": 16,
                     "causal": True},
}


def _rotary_tables(seqlen, rotary_dim, dtype, device):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    angles = torch.arange(seqlen, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype).to(device), angles.sin().to(dtype).to(device)


def run_kvcache(device, dtype, batch=3, seqlen_q=1, seqlen_new=0, seqlen_cache=40, h=4, hk=2, d=64,
                rotary=None, rotary_dim=32, leftpad=False, batch_idx=False, page_size=None, num_splits=0,
                seqlens_int=False, seqlens_none=False, causal=False, window=(-1, -1), softcap=0.0,
                alibi=False):
    skip_unsupported_dtype(device, dtype)
    q = torch.randn(batch, seqlen_q, h, d, dtype=dtype, device=device)
    k_new = torch.randn(batch, seqlen_new, hk, d, dtype=dtype, device=device) if seqlen_new else None
    v_new = torch.randn(batch, seqlen_new, hk, d, dtype=dtype, device=device) if seqlen_new else None
    block_table = cache_batch_idx = None
    if page_size is not None:
        max_blocks = math.ceil(seqlen_cache / page_size)
        num_blocks = batch * max_blocks + 2
        block_table = torch.randperm(num_blocks)[: batch * max_blocks].view(batch, max_blocks)
        block_table = block_table.to(torch.int32).to(device)
        cache_shape = (num_blocks, page_size, hk, d)
        capacity = max_blocks * page_size
    else:
        batch_cache = batch + 2 if batch_idx else batch
        cache_shape = (batch_cache, seqlen_cache, hk, d)
        capacity = seqlen_cache
        if batch_idx:
            cache_batch_idx = torch.randperm(batch_cache)[:batch].to(torch.int32).to(device)
    k_cache = torch.randn(cache_shape, dtype=dtype, device=device)
    v_cache = torch.randn(cache_shape, dtype=dtype, device=device)
    if seqlens_none:
        seqlens = torch.full((batch,), capacity, dtype=torch.int32)
        cache_seqlens_arg = None
    elif seqlens_int:
        n = int(torch.randint(0, capacity - seqlen_new + 1, ()))
        seqlens = torch.full((batch,), n, dtype=torch.int32)
        cache_seqlens_arg = n
    else:
        seqlens = torch.randint(0, capacity - seqlen_new + 1, (batch,), dtype=torch.int32)
        seqlens[0] = capacity - seqlen_new  # one full cache
        cache_seqlens_arg = seqlens.to(device)
    cache_leftpad = None
    if leftpad:
        cache_leftpad = torch.stack([torch.randint(0, int(s) + 1, ()) for s in seqlens]).to(torch.int32)
        cache_leftpad = cache_leftpad.to(device)
    cos = sin = None
    if rotary is not None:
        cos, sin = _rotary_tables(capacity, rotary_dim, dtype, device)
    alibi_slopes = (torch.rand(h, device=device) * 0.3) if alibi else None

    ref_args = dict(k_cache=k_cache.clone(), v_cache=v_cache.clone(), k=k_new, v=v_new, rotary_cos=cos,
                    rotary_sin=sin, cache_batch_idx=None if cache_batch_idx is None else cache_batch_idx.cpu(),
                    cache_leftpad=None if cache_leftpad is None else cache_leftpad.cpu(),
                    block_table=None if block_table is None else block_table.cpu(), causal=causal,
                    window=window, softcap=softcap, rotary_interleaved=rotary == "interleaved",
                    alibi_slopes=alibi_slopes)

    out, lse = flash_attn_with_kvcache(
        q, k_cache, v_cache, k=k_new, v=v_new, rotary_cos=cos, rotary_sin=sin, cache_seqlens=cache_seqlens_arg,
        cache_batch_idx=cache_batch_idx, cache_leftpad=cache_leftpad, block_table=block_table, causal=causal,
        window_size=window, softcap=softcap, rotary_interleaved=rotary == "interleaved",
        alibi_slopes=alibi_slopes, num_splits=num_splits, return_softmax_lse=True)
    assert out.shape == q.shape and lse.shape == (batch, h, seqlen_q) and lse.dtype == torch.float32

    args64 = {key: x.double() if isinstance(x, torch.Tensor) and torch.is_floating_point(x)
              and key != "alibi_slopes" else x for key, x in ref_args.items()}
    out64, lse64, kc64, vc64 = kvcache_ref(q.double(), cache_seqlens=seqlens, **args64)
    outb, lseb, kcb, vcb = kvcache_ref(q, cache_seqlens=seqlens, **ref_args)
    assert_close_rule("out", out, outb, out64, dtype)
    assert_close_rule("softmax_lse", lse, lseb, lse64, dtype)
    # The appended (rotated) keys/values land in the caller's caches; the rest is untouched.
    assert_close_rule("k_cache", k_cache, kcb, kc64, dtype)
    assert_close_rule("v_cache", v_cache, vcb, vc64, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_kvcache(device, dtype, config):
    run_kvcache(device, dtype, **CONFIGS[config])


def test_return_convention(device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    q = torch.randn(2, 1, 2, 32, dtype=dtype, device=device)
    kc = torch.randn(2, 10, 2, 32, dtype=dtype, device=device)
    out = flash_attn_with_kvcache(q, kc, kc, cache_seqlens=5)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape
    res = flash_attn_with_kvcache(q, kc, kc, cache_seqlens=5, return_softmax_lse=True)
    assert isinstance(res, tuple) and len(res) == 2
    torch.testing.assert_close(res[0], out, atol=0, rtol=0)


def test_num_splits_agree(device):
    """Split-KV is combined exactly through lse: every split count gives (nearly) the same output."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = torch.randn(2, 1, 8, 128, dtype=dtype, device=device)
    kc = torch.randn(2, 700, 2, 128, dtype=dtype, device=device)
    vc = torch.randn(2, 700, 2, 128, dtype=dtype, device=device)
    seqlens = torch.tensor([700, 333], dtype=torch.int32, device=device)
    outs = [flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, num_splits=n) for n in (1, 2, 5, 0)]
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], atol=tol, rtol=0)


def test_kvcache_hdim_padding_path():
    """The CUDA-only padded path (head_dim % 8 != 0), exercised on the CPU: same result, and the
    appended keys/values still land in the caller's caches."""
    from flash_attn import _kvcache

    torch.manual_seed(1)
    d = 36
    q = torch.randn(2, 2, 4, d)
    kc, vc = torch.randn(2, 20, 2, d), torch.randn(2, 20, 2, d)
    kn, vn = torch.randn(2, 2, 2, d), torch.randn(2, 2, 2, d)
    cos, sin = _rotary_tables(20, 16, torch.float32, "cpu")
    seqlens = torch.tensor([5, 18], dtype=torch.int32)
    kc2, vc2 = kc.clone(), vc.clone()
    expected = flash_attn_with_kvcache(q, kc2, vc2, kn, vn, cos, sin, cache_seqlens=seqlens, causal=True,
                                       return_softmax_lse=True, rotary_interleaved=False)
    got = _kvcache._with_padded_hdim(q, kc, vc, kn, vn, cos, sin, seqlens, 0, None, None, None, None, d ** -0.5,
                                     True, (-1, -1), 0.0, False, 0, True)
    torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], expected[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(kc, kc2, atol=0, rtol=0)
    torch.testing.assert_close(vc, vc2, atol=0, rtol=0)
