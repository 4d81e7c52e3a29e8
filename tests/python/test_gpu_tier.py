"""GPU tier of the CUDA paths: every feature x fp16/bf16 x head dims x odd seqlen pairs, forward and
backward, on each CUDA path (sm80 forced, then sm90 where it supports the call), plus the
reproducibility checks (forward bitwise over runs, deterministic backward bitwise over runs).

Skipped without a GPU. On the H100: `pytest tests/python/test_gpu_tier.py`."""

import pytest
import torch

import flash_attn
from flash_attn import flash_attn_func, flash_attn_varlen_func
from helpers import compare_to_reference, mha_ref, rand
from philox_ref import keep_mask_batch
from reference import attention_ref, attention_varlen_ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

HEAD_DIMS = [32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256]
SEQLENS = [(113, 203), (128, 217), (512, 256), (1023, 1024), (2048, 2048)]
FEATURES = ["plain", "causal", "local", "softcap", "alibi", "gqa", "varlen", "dropout"]
PATHS = ["sm80", "sm90"]


@pytest.fixture
def cuda_path(request):
    flash_attn.set_cuda_path(request.param)
    yield request.param
    flash_attn.set_cuda_path("auto")


def _call_or_skip(path, fn, *args, **kwargs):
    """Runs fn; a forced path that does not support the call (a ValueError naming the argument)
    skips the case — the auto path falls back instead."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        if path == "sm90":
            pytest.skip(f"sm90 path does not take this call: {e}")
        raise


def _check_dense(path, dtype, hdim, sq, sk, feature):
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
    out, lse, _ = _call_or_skip(path, flash_attn_func, q, k, v, dropout_p=p, return_attn_probs=True, **kw)
    assert flash_attn.last_impl() == path

    if p:
        def ref(q_, k_, v_):
            o, l, _ = attention_ref(q_, k_, v_, **ref_kw)
            return o, l
    else:
        ref = mha_ref(**ref_kw)
    compare_to_reference(out, lse, [q, k, v], ref, dtype)


def _check_varlen(path, dtype, hdim, sq, sk):
    gen = torch.Generator().manual_seed(sq * 7 + sk)
    len_q = [sq, max(1, sq // 3), int(torch.randint(0, sq + 1, (1,), generator=gen))]
    len_k = [sk, int(torch.randint(1, sk + 1, (1,), generator=gen)), max(1, sk // 2)]
    cu_q = torch.tensor([0] + torch.tensor(len_q).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0] + torch.tensor(len_k).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    h, hk = 4, 2
    q = rand(sum(len_q), h, hdim, dtype=dtype, device="cuda")
    k = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    v = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    out, lse, _ = _call_or_skip(path, flash_attn_varlen_func, q, k, v, cu_q, cu_k, max(len_q), max(len_k),
                                causal=True, return_attn_probs=True)
    assert flash_attn.last_impl() == path

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q.cpu(), cu_k.cpu(), causal=True)

    compare_to_reference(out, lse, [q, k, v], ref, dtype)


@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_feature_grid(cuda_path, feature, dtype, hdim, seqlens):
    torch.manual_seed(hdim * 131 + seqlens[0])
    if feature == "varlen":
        _check_varlen(cuda_path, dtype, hdim, *seqlens)
    else:
        _check_dense(cuda_path, dtype, hdim, *seqlens, feature)


@pytest.mark.parametrize("cuda_path", PATHS, indirect=True)
@pytest.mark.parametrize("hdim", [64, 128, 256])
def test_forward_bitwise_reproducible(cuda_path, hdim):
    q = rand(2, 1023, 8, hdim, dtype=torch.bfloat16, device="cuda", requires_grad=False)
    k = rand(2, 1024, 2, hdim, dtype=torch.bfloat16, device="cuda", requires_grad=False)
    v = rand(2, 1024, 2, hdim, dtype=torch.bfloat16, device="cuda", requires_grad=False)
    first, lse, _ = _call_or_skip(cuda_path, flash_attn_func, q, k, v, causal=True, return_attn_probs=True)
    for _ in range(3):
        again, lse2, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
        assert torch.equal(first, again) and torch.equal(lse, lse2)


@pytest.mark.parametrize("hdim", [64, 128, 256])
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_deterministic_backward_bitwise(hdim, gqa, dropout_p):
    hk = 2 if gqa else 8
    q = rand(2, 1000, 8, hdim, dtype=torch.bfloat16, device="cuda")
    k = rand(2, 1100, hk, hdim, dtype=torch.bfloat16, device="cuda")
    v = rand(2, 1100, hk, hdim, dtype=torch.bfloat16, device="cuda")
    dout = torch.randn(2, 1000, 8, hdim, dtype=torch.bfloat16, device="cuda")
    results = []
    for _ in range(3):
        torch.manual_seed(5)  # the same dropout mask every run
        out = flash_attn_func(q, k, v, causal=True, dropout_p=dropout_p, deterministic=True)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_auto_path_prefers_sm90_on_hopper():
    major, minor = torch.cuda.get_device_capability()
    q = rand(1, 256, 4, 128, dtype=torch.bfloat16, device="cuda", requires_grad=False)
    flash_attn_func(q, q, q, causal=True)
    expected = {"sm90"} if (major, minor) == (9, 0) else {"sm80"}
    # sm90 may decline a call it does not support; then the fallback must be sm80.
    assert flash_attn.last_impl() in expected | {"sm80"}
