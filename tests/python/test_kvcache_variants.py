"""Switches of the CUDA kvcache kernel (read on every call) against the previous default kernel
(FLASH_KVCACHE_LEAN=0, FLASH_KVCACHE_FASTMASK=0, FLASH_KVCACHE_DIRECT=0).

Lean layout (d97..d128 bucket: 2 stages of unpadded, XOR-swizzled K/V rows; kvcache_args.h), fast
interior masks (tiles every row sees skip the per-element tests), direct offsets (contiguous caches
compute key-row offsets in the copy loop, no smem table), deep schedule everywhere: the same key
tiles and the same warp arithmetic in the same order, so out, lse and the cache update must be
BITWISE equal to the old default. Only uncapped lean CTAs (FLASH_KVCACHE_LEAN_OCC=0: 3 per H100 SM)
change the split heuristic's slot count and hence maybe the split count (num_splits=0): out/lse are
compared with a tolerance there (the cache update is always bitwise: the append kernel is the same).
"""

import math

import pytest
import torch

from flash_attn import flash_attn_with_kvcache

CASES = {
    "decode_gqa_d128_split0": dict(batch=4, seqlen_q=1, h=32, hk=8, d=128, cache=1000),
    "decode_gqa_d128_one_split": dict(batch=4, seqlen_q=1, h=32, hk=8, d=128, cache=1000, num_splits=1),
    "decode_long_deep_one_split": dict(batch=2, seqlen_q=1, h=32, hk=8, d=128, cache=5000, num_splits=1),
    "decode_ragged_long_split0": dict(batch=2, seqlen_q=1, h=32, hk=8, d=128, cache=5000),
    "decode_batch1_split0": dict(batch=1, seqlen_q=1, h=32, hk=8, d=128, cache=8192),
    "decode_many_splits": dict(batch=1, seqlen_q=1, h=32, hk=8, d=128, cache=8192, num_splits=40),
    "decode_splits_3": dict(batch=2, seqlen_q=1, h=32, hk=8, d=128, cache=3000, num_splits=3),
    "paged_1_append_rotary": dict(batch=3, seqlen_q=2, h=8, hk=2, d=128, cache=300, page=1, new=2,
                                  rotary=True, num_splits=2),
    "paged_16_append_rotary": dict(batch=3, seqlen_q=3, h=8, hk=2, d=128, cache=700, page=16, new=3,
                                   rotary=True, num_splits=1),
    "paged_7_long": dict(batch=2, seqlen_q=1, h=16, hk=4, d=128, cache=2000, page=7, num_splits=1),
    "paged_256": dict(batch=2, seqlen_q=1, h=16, hk=4, d=128, cache=1500, page=256),
    "leftpad_batch_idx": dict(batch=3, seqlen_q=2, h=8, hk=2, d=128, cache=500, new=2, leftpad=True,
                              batch_idx=True, num_splits=1),
    "window_softcap_alibi": dict(batch=2, seqlen_q=3, h=8, hk=2, d=128, cache=400, new=3,
                                 window=(37, 1), softcap=3.0, alibi=True, causal=False, num_splits=2),
    "head_dim_104_padded_bucket": dict(batch=2, seqlen_q=1, h=8, hk=2, d=104, cache=777, num_splits=1),
    "prefill_rows_2_mtiles": dict(batch=2, seqlen_q=5, h=8, hk=1, d=128, cache=600, new=5,
                                  num_splits=3),
    # row ranges ending / starting on a 64-key tile boundary (sequence 0 full): FASTMASK's interior test
    "causal_sq4_tile_aligned": dict(batch=2, seqlen_q=4, h=8, hk=2, d=128, cache=256, num_splits=1),
    "local_sq4_tile_aligned": dict(batch=2, seqlen_q=4, h=8, hk=2, d=128, cache=320, window=(70, 0),
                                   causal=False, num_splits=2),
    "empty_rows": dict(batch=3, seqlen_q=4, h=4, hk=2, d=128, cache=3, causal=True, zero_seqlen=True,
                       num_splits=1),
    # Buckets without a lean layout: the switch must change nothing.
    "head_dim_64_unaffected": dict(batch=2, seqlen_q=1, h=8, hk=2, d=64, cache=900),
    "head_dim_256_unaffected": dict(batch=2, seqlen_q=1, h=8, hk=1, d=256, cache=900),
}


def _run(dtype, batch, seqlen_q, h, hk, d, cache, page=None, new=0, rotary=False, leftpad=False,
         batch_idx=False, window=(-1, -1), softcap=0.0, alibi=False, num_splits=0, causal=True,
         zero_seqlen=False):
    dev = "cuda"
    g = torch.Generator(device="cpu").manual_seed(1234)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(dtype).to(dev)

    q = rnd(batch, seqlen_q, h, d)
    k_new = rnd(batch, new, hk, d) if new else None
    v_new = rnd(batch, new, hk, d) if new else None
    block_table = cache_batch_idx = None
    if page is not None:
        blocks = math.ceil(cache / page)
        num_blocks = batch * blocks + 3
        block_table = torch.randperm(num_blocks, generator=g)[: batch * blocks].view(batch, blocks)
        block_table = block_table.to(torch.int32).to(dev)
        shape, capacity = (num_blocks, page, hk, d), blocks * page
    else:
        nb = batch + 2 if batch_idx else batch
        shape, capacity = (nb, cache, hk, d), cache
        if batch_idx:
            cache_batch_idx = torch.randperm(nb, generator=g)[:batch].to(torch.int32).to(dev)
    kc, vc = rnd(*shape), rnd(*shape)
    seqlens = torch.randint(0, capacity - new + 1, (batch,), generator=g, dtype=torch.int32)
    seqlens[0] = capacity - new
    if zero_seqlen:
        seqlens[1] = 0
    lp = None
    if leftpad:
        lp = torch.stack([torch.randint(0, int(s) + 1, (), generator=g) for s in seqlens])
        lp = lp.to(torch.int32).to(dev)
    cos = sin = None
    if rotary:
        ang = torch.rand(capacity, 32, generator=g) * 6.0
        cos, sin = ang.cos().to(dtype).to(dev), ang.sin().to(dtype).to(dev)
    slopes = (torch.rand(h, generator=g) * 0.3).to(dev) if alibi else None

    def call():
        k, v = kc.clone(), vc.clone()
        out, lse = flash_attn_with_kvcache(
            q, k, v, k=k_new, v=v_new, rotary_cos=cos, rotary_sin=sin,
            cache_seqlens=seqlens.to(dev), cache_batch_idx=cache_batch_idx, cache_leftpad=lp,
            block_table=block_table, causal=causal, window_size=window, softcap=softcap,
            alibi_slopes=slopes, num_splits=num_splits, return_softmax_lse=True)
        return out, lse, k, v

    return call


# The previous default kernel (padded 3-stage layout, per-element masks, smem offset table): the
# reference every variant is compared with.
OLD_DEFAULT = {"FLASH_KVCACHE_LEAN": "0", "FLASH_KVCACHE_FASTMASK": "0", "FLASH_KVCACHE_DIRECT": "0"}
VARIANTS = {
    "default": {},  # lean layout (<= 2 CTAs/SM), fast interior masks, direct offsets
    "lean_only": {"FLASH_KVCACHE_FASTMASK": "0", "FLASH_KVCACHE_DIRECT": "0"},
    "fastmask_only": {"FLASH_KVCACHE_LEAN": "0", "FLASH_KVCACHE_DIRECT": "0"},
    "direct_only": {"FLASH_KVCACHE_LEAN": "0", "FLASH_KVCACHE_FASTMASK": "0"},
    # every CTA on the deep pipeline schedule (default: only CTAs with > 8 key tiles)
    "default_deep": {"FLASH_KVCACHE_DEEP_MIN": "0"},
    # every CTA on the classic (one barrier per tile) schedule
    "default_classic": {"FLASH_KVCACHE_DEEP_MIN": "1000000000"},
    # lean CTAs not capped (3 per H100 SM): the split heuristic may pick other split counts
    "default_occ3": {"FLASH_KVCACHE_LEAN_OCC": "0"},
}
SWITCHES = ("FLASH_KVCACHE_LEAN", "FLASH_KVCACHE_DEEP_MIN", "FLASH_KVCACHE_FASTMASK",
            "FLASH_KVCACHE_DIRECT", "FLASH_KVCACHE_LEAN_OCC")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kvcache_layout_matches_default(monkeypatch, dtype, case, variant):
    params = CASES[case]
    call = _run(dtype, **params)
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    for name, value in OLD_DEFAULT.items():
        monkeypatch.setenv(name, value)
    try:
        base = call()
    except (ValueError, RuntimeError) as exc:
        if "not built" in str(exc):
            pytest.skip(f"kernel not in this build: {exc}")
        raise
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    for name, value in VARIANTS[variant].items():
        monkeypatch.setenv(name, value)
    other = call()
    again = call()  # split merge counters left at zero by the previous call
    torch.cuda.synchronize()
    # the split count can only change with uncapped lean CTAs (d97..d128, heuristic splits)
    exact = (params.get("num_splits", 0) != 0 or params["d"] > 128 or params["d"] <= 96
             or "FLASH_KVCACHE_LEAN_OCC" not in VARIANTS[variant])
    for name, a, b, c in zip(("out", "lse", "k_cache", "v_cache"), base, other, again):
        assert torch.equal(b, c), f"{name}: {variant} not repeatable"
        if exact or name.endswith("cache"):
            assert torch.equal(a, b), f"{name}: max diff {(a.float() - b.float()).abs().max().item()}"
        else:
            tol = 2e-2 if dtype == torch.bfloat16 else 4e-3
            fin = torch.isfinite(a)
            assert torch.equal(fin, torch.isfinite(b)), f"{name}: +inf rows differ"
            torch.testing.assert_close(b[fin], a[fin], atol=tol if name == "out" else 1e-3, rtol=0)
    assert not torch.isnan(other[0]).any()
