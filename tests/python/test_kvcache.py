"""flash_attn_with_kvcache: append, rotary (both styles), leftpad, cache_batch_idx, paged caches
with shuffled block tables, num_splits, int cache_seqlens, and every score modifier."""

import math

import pytest
import torch

from flash_attn import flash_attn_with_kvcache
from helpers import skip_unsupported_dtype
from reference import assert_close_rule, kvcache_ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _kvcache(*args, **kwargs):
    """flash_attn_with_kvcache, skipping the test when this build lacks the kernel (a build with
    FLASH_ATTN_DTYPES / FLASH_ATTN_HDIMS restricted raises an error saying "not built")."""
    try:
        return flash_attn_with_kvcache(*args, **kwargs)
    except (ValueError, RuntimeError) as exc:
        if "not built" in str(exc):
            pytest.skip(f"kernel not in this build: {exc}")
        raise

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
    "paged_256": {"seqlen_q": 1, "seqlen_new": 1, "page_size": 256, "seqlen_cache": 600, "causal": True,
                  "rotary": "neox"},
    "paged_512": {"seqlen_q": 2, "seqlen_new": 2, "page_size": 512, "seqlen_cache": 1100, "causal": True,
                  "rotary": "interleaved"},
    "paged_256_many_splits": {"page_size": 256, "seqlen_cache": 3000, "num_splits": 40, "hk": 1},
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

    out, lse = _kvcache(
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
    out = _kvcache(q, kc, kc, cache_seqlens=5)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape
    res = _kvcache(q, kc, kc, cache_seqlens=5, return_softmax_lse=True)
    assert isinstance(res, tuple) and len(res) == 2
    torch.testing.assert_close(res[0], out, atol=0, rtol=0)


def test_num_splits_agree(device):
    """Split-KV is combined exactly through lse: every split count gives (nearly) the same output."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = torch.randn(2, 1, 8, 128, dtype=dtype, device=device)
    kc = torch.randn(2, 700, 2, 128, dtype=dtype, device=device)
    vc = torch.randn(2, 700, 2, 128, dtype=dtype, device=device)
    seqlens = torch.tensor([700, 333], dtype=torch.int32, device=device)
    outs = [_kvcache(q, kc, vc, cache_seqlens=seqlens, num_splits=n) for n in (1, 2, 5, 0, 11, 128)]
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


def _rotate_fp32(x, cos, sin, interleaved):
    """Rotary in fp32 exactly as the kernels do it: each product rounded to fp32, then one fp32
    add/sub, then one round-to-nearest-even into the storage dtype (x: (..., d); cos/sin: (..., r/2))."""
    r = cos.shape[-1] * 2
    xf, c, s_ = x.float(), cos.float(), sin.float()
    out = xf.clone()
    if interleaved:
        x0, x1 = xf[..., 0:r:2], xf[..., 1:r:2]
        out[..., 0:r:2] = x0 * c - x1 * s_
        out[..., 1:r:2] = x0 * s_ + x1 * c
    else:
        h = r // 2
        x0, x1 = xf[..., :h], xf[..., h:r]
        out[..., :h] = x0 * c - x1 * s_
        out[..., h:r] = x0 * s_ + x1 * c
    return out.to(x.dtype)


@pytest.mark.parametrize("page_size", [None, 1, 16, 64, 256, 512])
@pytest.mark.parametrize("rotary", ["interleaved", "neox"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cache_update_bitwise(device, dtype, rotary, page_size):
    """The appended keys (rotated in fp32, one rounding) and values land bitwise where they belong:
    logical slot cache_seqlens[b] + i of sequence b, through a shuffled block table when paged;
    every other cache element is untouched."""
    batch, hk, d, seqlen_new, rotary_dim = 3, 2, 64, 3, (64 if rotary == "neox" else 32)
    capacity = 2 * (page_size or 1) + 40 if page_size else 90
    if page_size:
        max_blocks = math.ceil(capacity / page_size)
        capacity = max_blocks * page_size
        num_blocks = batch * max_blocks + 3
        block_table = torch.randperm(num_blocks)[: batch * max_blocks].view(batch, max_blocks).to(torch.int32)
        cache_shape = (num_blocks, page_size, hk, d)
    else:
        block_table = None
        cache_shape = (batch, capacity, hk, d)
    k_cache = torch.randn(cache_shape, dtype=dtype)
    v_cache = torch.randn(cache_shape, dtype=dtype)
    k_new = torch.randn(batch, seqlen_new, hk, d, dtype=dtype)
    v_new = torch.randn(batch, seqlen_new, hk, d, dtype=dtype)
    seqlens = torch.randint(0, capacity - seqlen_new + 1, (batch,), dtype=torch.int32)
    seqlens[0] = capacity - seqlen_new
    cos, sin = _rotary_tables(capacity, rotary_dim, dtype, "cpu")
    q = torch.randn(batch, 1, 4, d, dtype=dtype)

    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    for b in range(batch):
        for i in range(seqlen_new):
            slot = int(seqlens[b]) + i
            if page_size:
                where = (int(block_table[b, slot // page_size]), slot % page_size)
            else:
                where = (b, slot)
            expected_k[where] = _rotate_fp32(k_new[b, i], cos[slot], sin[slot], rotary == "interleaved")
            expected_v[where] = v_new[b, i]

    to = lambda x: None if x is None else x.to(device)  # noqa: E731
    kc, vc = to(k_cache), to(v_cache)
    _kvcache(to(q), kc, vc, to(k_new), to(v_new), to(cos), to(sin), cache_seqlens=to(seqlens),
                            block_table=to(block_table), causal=True, rotary_interleaved=rotary == "interleaved")
    assert torch.equal(kc.cpu(), expected_k), "k_cache differs from the expected bitwise update"
    assert torch.equal(vc.cpu(), expected_v), "v_cache differs from the expected bitwise update"


def test_split_combine_repeats_and_streams(device):
    """Split-KV decode merged inside the attention kernel (the last split of each group combines,
    with arrival counters that must be reset after each call): repeated calls on one stream, calls
    on a second stream and a CUDA-graph replay all give bitwise the same result, equal to the
    unsplit result within rounding."""
    if device != "cuda":
        pytest.skip("CUDA split-KV path")
    dtype = torch.bfloat16
    q = torch.randn(2, 1, 32, 128, dtype=dtype, device=device)
    kc = torch.randn(2, 4096, 8, 128, dtype=dtype, device=device)
    vc = torch.randn_like(kc)
    seqlens = torch.tensor([4096, 1777], dtype=torch.int32, device=device)
    call = lambda n: _kvcache(q, kc, vc, cache_seqlens=seqlens, num_splits=n,  # noqa: E731
                              causal=True, return_softmax_lse=True)
    ref_out, ref_lse = call(1)
    for n in (0, 7, 32, 64):
        first = call(n)
        torch.testing.assert_close(first[0], ref_out, atol=2e-2, rtol=0)
        torch.testing.assert_close(first[1], ref_lse, atol=1e-3, rtol=0)
        for _ in range(3):
            again = call(n)
            assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            other = call(n)
        torch.cuda.current_stream().wait_stream(side)
        assert torch.equal(other[0], first[0]) and torch.equal(other[1], first[1])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = call(32)
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(captured[0], ref_out, atol=2e-2, rtol=0)


def test_eager_plan_cache(device):
    """The eager fast path (a plan per metadata signature, see _kvcache_ops.KvcachePlan) gives the
    same results as a fresh call: changing int cache_seqlens, new tensors with the same metadata,
    different shapes, a strided q (copied by validation: no plan), and errors still raised."""
    from flash_attn import _kvcache as kvmod

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kvmod._plans().clear()
    kc = torch.randn(2, 64, 2, 64, dtype=dtype, device=device)
    vc = torch.randn_like(kc)

    def reference(q, n, k_cache=kc, v_cache=vc):
        out, lse, _, _ = kvcache_ref(q.cpu().double(), k_cache.cpu().double(), v_cache.cpu().double(),
                                     cache_seqlens=torch.full((q.shape[0],), n, dtype=torch.int32), causal=True)
        return out.to(dtype), lse

    for n in (5, 64, 17, 0, 33):  # one plan ("int" seqlens), the value changes per call
        q = torch.randn(2, 1, 4, 64, dtype=dtype, device=device)
        out, lse = _kvcache(q, kc, vc, cache_seqlens=n, causal=True, return_softmax_lse=True)
        ref_out, ref_lse = reference(q, n)
        torch.testing.assert_close(out.cpu(), ref_out, atol=2e-2, rtol=0)
        if n > 0:
            torch.testing.assert_close(lse.cpu(), ref_lse.float(), atol=1e-3, rtol=0)
        else:
            assert torch.isinf(lse).all()
    assert len(kvmod._plans()) == 1
    q3 = torch.randn(2, 3, 4, 64, dtype=dtype, device=device)  # new shape: a second plan
    out3 = _kvcache(q3, kc, vc, cache_seqlens=40, causal=True)
    torch.testing.assert_close(out3.cpu(), reference(q3, 40)[0], atol=2e-2, rtol=0)
    assert len(kvmod._plans()) == 2
    q_strided = torch.randn(2, 1, 4, 128, dtype=dtype, device=device)[..., ::2]  # copied: no plan
    out_s = _kvcache(q_strided, kc, vc, cache_seqlens=9, causal=True)
    torch.testing.assert_close(out_s.cpu(), reference(q_strided, 9)[0], atol=2e-2, rtol=0)
    assert len(kvmod._plans()) == 2
    with pytest.raises(ValueError, match="cache_seqlens"):  # same plan, a bad value: still checked
        _kvcache(torch.randn(2, 1, 4, 64, dtype=dtype, device=device), kc, vc, cache_seqlens=65, causal=True)
