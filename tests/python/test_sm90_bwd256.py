"""The wide-head-dim Hopper (sm90) backward (head_dim 192, 256; bwd256_*.h): gradients of
flash_attn_func on that path against the fp64 reference under the 3x rule, that the sm90 backward
actually ran, and the bitwise reproducibility of its deterministic mode.

Skipped without an sm90 GPU. On the H100: `pytest tests/python/test_sm90_bwd256.py`."""

import pytest
import torch

import flash_attn
from flash_attn import flash_attn_func
from helpers import compare_to_reference, mha_ref, rand

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
    reason="needs an sm90 (Hopper) GPU")

HEAD_DIMS = [192, 256]
# Tails on both sides (not multiples of 64), sq < sk and sq > sk (bottom-right causal), one query
# block, many key blocks (the kernel's key block is 64).
SEQLENS = [(113, 203), (128, 217), (512, 256), (1023, 1024), (2048, 2048)]
FEATURES = ["plain", "causal", "local", "local_left", "softcap", "alibi", "alibi_causal",
            "gqa", "mqa_causal", "softcap_alibi_local"]


@pytest.fixture(autouse=True)
def _sm90_path():
    flash_attn.set_cuda_path("sm90")
    yield
    flash_attn.set_cuda_path("auto")


def _case(feature, b):
    h, hk = 4, 4
    kw, ref_kw = {}, {}
    if feature in ("causal", "alibi_causal", "mqa_causal"):
        kw["causal"] = ref_kw["causal"] = True
    if feature == "local":
        kw["window_size"] = ref_kw["window"] = (97, 13)
    if feature == "local_left":
        kw["window_size"] = ref_kw["window"] = (150, -1)
    if feature in ("softcap", "softcap_alibi_local"):
        kw["softcap"] = ref_kw["softcap"] = 5.0
    if feature == "softcap_alibi_local":
        kw["window_size"] = ref_kw["window"] = (64, 200)
    if feature == "gqa":
        h, hk = 6, 2
    if feature == "mqa_causal":
        h, hk = 4, 1
    if feature in ("alibi", "alibi_causal", "softcap_alibi_local"):
        kw["alibi_slopes"] = ref_kw["alibi_slopes"] = torch.rand(b, h, device="cuda") * 0.3 + 0.01
    return h, hk, kw, ref_kw


@pytest.mark.parametrize("feature", FEATURES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_sm90_bwd256_matches_reference(feature, dtype, hdim, seqlens):
    torch.manual_seed(hdim * 131 + seqlens[0] * 7 + seqlens[1])
    sq, sk = seqlens
    b = 2
    h, hk, kw, ref_kw = _case(feature, b)
    q = rand(b, sq, h, hdim, dtype=dtype, device="cuda")
    k = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    v = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **kw)
    dout = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), dout)
    assert flash_attn.last_impl() == "sm90", "the backward did not run on the sm90 path"
    compare_to_reference(out, lse, [q, k, v], mha_ref(**ref_kw), dtype, dout=dout, ours_grads=ours)


@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("gqa", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_sm90_bwd256_deterministic_bitwise(hdim, gqa, causal):
    torch.manual_seed(3)
    hk = 2 if gqa else 8
    q = rand(2, 1000, 8, hdim, dtype=torch.bfloat16, device="cuda")
    k = rand(2, 1100, hk, hdim, dtype=torch.bfloat16, device="cuda")
    v = rand(2, 1100, hk, hdim, dtype=torch.bfloat16, device="cuda")
    dout = torch.randn(2, 1000, 8, hdim, dtype=torch.bfloat16, device="cuda")
    results = []
    for _ in range(3):
        out = flash_attn_func(q, k, v, causal=causal, deterministic=True)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
        assert flash_attn.last_impl() == "sm90"
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)
    # Same values as the default (atomic-order) mode up to fp32 summation order.
    out = flash_attn_func(q, k, v, causal=causal, deterministic=False)
    default = torch.autograd.grad(out, (q, k, v), dout)
    for a, c in zip(results[0], default):
        torch.testing.assert_close(a.float(), c.float(), atol=2e-2, rtol=2e-2)


def test_sm90_bwd256_auto_path():
    """cuda_path auto picks the sm90 backward for d256 (it used to fall back to sm80)."""
    flash_attn.set_cuda_path("auto")
    q, k, v = [rand(2, 300, 4, 256, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    out = flash_attn_func(q, k, v, causal=True)
    out.sum().backward()
    assert flash_attn.last_impl() == "sm90"


def test_sm90_bwd256_falls_back_for_dropout():
    flash_attn.set_cuda_path("auto")
    q = rand(1, 256, 2, 256, dtype=torch.bfloat16, device="cuda")
    out = flash_attn_func(q, q, q, dropout_p=0.1)
    out.sum().backward()
    assert flash_attn.last_impl() == "sm80"
