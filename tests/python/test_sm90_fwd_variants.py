"""sm90 forward variants behind tuning switches (csrc/cuda/sm90/fwd_tuning.h), on the H100:

* FLASH_SM90_FWD_D64_M192[_WINDOW]: d=64 on the 192 x 128 tile with three consumer warpgroups
  (FLASH_SM90_FWD_WG_SKIP, FLASH_SM90_FWD_SCHED_ROTATE: its block skip and rotated schedule);
* FLASH_SM90_FWD_WIDE_STORE: the O epilogue with 16-byte stores after a quad transpose;
* FLASH_SM90_FWD_ILP_SOFTMAX=1: softmax reductions with shorter dependency chains;
* FLASH_SM90_FWD_D128_TILE=2: d=128 without a window on a 128 x 128 tile with 3 K/V stages;
* FLASH_SM90_FWD_PIN_WAIT=0|1: the P V wait kept after the softmax (fwd_consumer.h; default on
  for d=128 and the windowed 192-row d=64 tile);
* FLASH_SM90_FWD_D256_TILE=1: d=256 on a 128 x 48 tile with two Q buffers;
* FLASH_SM90_FWD_FAST_MASK=1: the element mask against per-thread relative bounds.
(Wide stores, ILP softmax and the block skip change only the lean kernel: softcap / ALiBi /
dropout cases run the default code of the tile.)

Each variant runs test_gpu_tier's feature grid (sm90 path) and a many-tiles-per-CTA check: the
feature grid's shapes give every persistent CTA one work unit, so the state carried from tile to
tile inside a CTA (pipeline stages, Q buffers, ping-pong token) is only exercised by larger grids.

The switches are re-read per call only with FLASH_SM90_FWD_AB=1, which the library reads once, at
its first sm90 forward call; this module sets it at import (collection runs before any test).
Skipped without an sm90 GPU."""

import os

os.environ.setdefault("FLASH_SM90_FWD_AB", "1")

import contextlib  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import flash_attn  # noqa: E402
from flash_attn import flash_attn_func, flash_attn_varlen_func  # noqa: E402
from helpers import compare_to_reference, mha_ref, rand  # noqa: E402
from reference import attention_varlen_ref  # noqa: E402
from philox_ref import keep_mask_batch  # noqa: E402
from reference import attention_ref  # noqa: E402
from test_gpu_tier import SEQLENS, FEATURES  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
    reason="needs an sm90 GPU")

# variant name -> (environment switches, head dims it applies to). The defaults (no switch set)
# are covered by test_gpu_tier; these force the other choices.
M192_ALL = {"FLASH_SM90_FWD_D64_M192": "1", "FLASH_SM90_FWD_D64_M192_WINDOW": "1"}
VARIANTS = {
    # the defaults, forward only (test_gpu_tier skips dropout on sm90: it asks for S_dmask)
    "default": ({}, [64, 128, 256]),
    # 192 x 128 for every d=64 call (default: lean calls only, windowed ones from seqlen_q 16K), with its
    # rotated schedule; and with the warpgroup block skip (off by default)
    "d64_m192_all": (M192_ALL, [64]),
    "d64_m192_skip": ({**M192_ALL, "FLASH_SM90_FWD_WG_SKIP": "1"}, [64]),
    "d64_m192_ilp": ({**M192_ALL, "FLASH_SM90_FWD_ILP_SOFTMAX": "1"}, [64]),
    # the 128 x 128 tile for every d=64 call
    "d64_t128": ({"FLASH_SM90_FWD_D64_M192": "0", "FLASH_SM90_FWD_D64_M192_WINDOW": "0"}, [64]),
    "wide_store": ({"FLASH_SM90_FWD_WIDE_STORE": "1"}, [128, 256]),
    "ilp_softmax": ({"FLASH_SM90_FWD_ILP_SOFTMAX": "1"}, [64, 128, 256]),
    # d=128 without a window on the 128 x 128 tile with 3 K/V stages and 1 Q buffer (windowed calls
    # keep the default tile, so here only the non-windowed features and shapes exercise it)
    "d128_s3": ({"FLASH_SM90_FWD_D128_TILE": "2"}, [128]),
    # the P V wait pinned after the softmax (lean kernels; default tiles, then the 192-row tile
    # with its block skip, then the 3-stage d=128 tile)
    "pin_wait": ({"FLASH_SM90_FWD_PIN_WAIT": "1"}, [64, 128, 256]),
    "d64_m192_skip_pin": ({**M192_ALL, "FLASH_SM90_FWD_WG_SKIP": "1", "FLASH_SM90_FWD_PIN_WAIT": "1"}, [64]),
    "d128_s3_pin": ({"FLASH_SM90_FWD_D128_TILE": "2", "FLASH_SM90_FWD_PIN_WAIT": "1"}, [128]),
    # without the pin where it is now the default (d=128, the windowed 192-row tile)
    "no_pin": ({"FLASH_SM90_FWD_PIN_WAIT": "0"}, [64, 128]),
    # d=256 on the 128 x 48 tile with two Q buffers, with and without the pin
    "d256_n48": ({"FLASH_SM90_FWD_D256_TILE": "1"}, [256]),
    "d256_n48_pin": ({"FLASH_SM90_FWD_D256_TILE": "1", "FLASH_SM90_FWD_PIN_WAIT": "1"}, [256]),
    # the element mask with per-thread relative bounds (every kernel, score modifiers included)
    "fast_mask": ({"FLASH_SM90_FWD_FAST_MASK": "1"}, [64, 128, 256]),
}


@contextlib.contextmanager
def switches(env):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    flash_attn.set_cuda_path("sm90")
    try:
        yield
    finally:
        flash_attn.set_cuda_path("auto")
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check_dense_fwd(dtype, hdim, sq, sk, feature):
    """test_gpu_tier's dense case, forward only (out and lse against fp64; the backward is not
    what the variants change, and forcing sm90 would mix in the backward path's state)."""
    b, h, hk = 2, 4, 4
    kw, ref_kw = {}, {}
    if feature == "causal":
        kw["causal"] = ref_kw["causal"] = True
    elif feature == "local":
        kw["window_size"] = ref_kw["window"] = (97, 13)
    elif feature == "softcap":
        kw["softcap"] = ref_kw["softcap"] = 5.0
    elif feature == "gqa":
        h, hk = 6, 2
        kw["causal"] = ref_kw["causal"] = True
    q = rand(b, sq, h, hdim, dtype=dtype, device="cuda")
    k = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    v = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    if feature == "alibi":
        kw["alibi_slopes"] = ref_kw["alibi_slopes"] = torch.rand(b, h, device="cuda") * 0.3 + 0.01
    p = 0.17 if feature == "dropout" else 0.0
    if p:
        torch.manual_seed(99)
        rng_state = torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device="cuda")
        torch.manual_seed(99)
        ref_kw["keep_mask"] = keep_mask_batch(rng_state, b, h, sq, sk, p).cuda()
        ref_kw["dropout_p"] = p
    def ref(q_, k_, v_):
        o, l, _ = attention_ref(q_, k_, v_, **ref_kw)
        return o, l

    if p:
        # return_attn_probs with dropout asks for S_dmask, which the sm90 path declines (forcing
        # sm90 then raises; test_gpu_tier skips those cases). Without it there is no lse to
        # return: out is checked, lse is the reference's own (dropout does not change lse).
        out = flash_attn_func(q, k, v, dropout_p=p, **kw)
        assert flash_attn.last_impl() == "sm90"
        lse = ref(*[x.detach().double() for x in (q, k, v)])[1].float()
    else:
        out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **kw)
        assert flash_attn.last_impl() == "sm90"
    compare_to_reference(out, lse, [q, k, v], ref, dtype, check_grads=False)


def _check_varlen_fwd(dtype, hdim, sq, sk):
    gen = torch.Generator().manual_seed(sq * 7 + sk)
    len_q = [sq, max(1, sq // 3), int(torch.randint(0, sq + 1, (1,), generator=gen))]
    len_k = [sk, int(torch.randint(1, sk + 1, (1,), generator=gen)), max(1, sk // 2)]
    cu_q = torch.tensor([0] + torch.tensor(len_q).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + torch.tensor(len_k).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    h, hk = 4, 2
    q = rand(sum(len_q), h, hdim, dtype=dtype, device="cuda")
    k = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    v = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    out, lse, _ = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(len_q), max(len_k), causal=True,
                                         return_attn_probs=True)
    assert flash_attn.last_impl() == "sm90"

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q.cpu(), cu_k.cpu(), causal=True)

    compare_to_reference(out, lse, [q, k, v], ref, dtype, check_grads=False)


def _grid_cases():
    for name, (_, hdims) in VARIANTS.items():
        for hdim in hdims:
            yield name, hdim


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("variant,hdim", list(_grid_cases()))
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_variant_feature_grid(variant, hdim, dtype, feature, seqlens):
    torch.manual_seed(hdim * 131 + seqlens[0])
    with switches(VARIANTS[variant][0]):
        if feature == "varlen":
            _check_varlen_fwd(dtype, hdim, *seqlens)
        else:
            _check_dense_fwd(dtype, hdim, *seqlens, feature)


# (batch, seqlen_q, seqlen_k, nheads, nheads_k, causal, window): each CTA walks many tiles.
MANY_TILES = [
    (16, 1024, 1024, 16, 16, False, (-1, -1)),
    (16, 1024, 1024, 16, 16, True, (-1, -1)),
    (2, 4096, 4096, 8, 2, True, (-1, -1)),
    (8, 1000, 1333, 12, 4, False, (300, 77)),
    (6, 777, 777, 10, 10, True, (-1, -1)),
]


@pytest.mark.parametrize("variant,hdim", list(_grid_cases()))
@pytest.mark.parametrize("shape", MANY_TILES, ids=lambda s: "x".join(map(str, s[:5])) + f"-c{int(s[5])}")
def test_variant_many_tiles_per_cta(variant, hdim, shape):
    b, sq, sk, h, hk, causal, window = shape
    dtype = torch.bfloat16
    q = rand(b, sq, h, hdim, dtype=dtype, device="cuda")
    k = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    v = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    with switches(VARIANTS[variant][0]):
        out, lse, _ = flash_attn_func(q, k, v, causal=causal, window_size=window, return_attn_probs=True)
        assert flash_attn.last_impl() == "sm90"
    ref_kw = {"causal": causal}
    if window != (-1, -1):
        ref_kw["window"] = window
    compare_to_reference(out, lse, [q, k, v], mha_ref(**ref_kw), dtype, check_grads=False)


def test_variant_many_tiles_varlen():
    """48 sequences of mixed lengths, d=64 on the 192-row tile, causal."""
    gen = torch.Generator().manual_seed(5)
    lens = torch.randint(1, 700, (48,), generator=gen).tolist()
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    dtype, h, hk, hdim = torch.bfloat16, 8, 4, 64
    q = rand(sum(lens), h, hdim, dtype=dtype, device="cuda")
    k = rand(sum(lens), hk, hdim, dtype=dtype, device="cuda")
    v = rand(sum(lens), hk, hdim, dtype=dtype, device="cuda")
    with switches(VARIANTS["d64_m192_all"][0]):
        out, lse, _ = flash_attn_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True,
                                             return_attn_probs=True)
        assert flash_attn.last_impl() == "sm90"

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu.cpu(), cu.cpu(), causal=True)

    compare_to_reference(out, lse, [q, k, v], ref, dtype, check_grads=False)
