"""The wide-head-dim Hopper (sm90) backward (head_dim 192, 256; bwd256_*.h): gradients of
flash_attn_func on that path against the fp64 reference under the 3x rule, that the sm90 backward
actually ran, and the bitwise reproducibility of its deterministic mode.

Skipped without an sm90 GPU. On the H100: `pytest tests/python/test_sm90_bwd256.py`."""

import pytest
import torch

import flash_attn
from flash_attn import flash_attn_func, flash_attn_varlen_func
from helpers import compare_to_reference, grads, mha_ref, rand
from philox_ref import keep_mask_batch, keep_mask_seq
from reference import assert_close_rule, attention_ref, attention_varlen_ref

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
def _sm90_path(monkeypatch):
    # Varlen / dropout on this path: on unless switched off (bwd256_api.cu).
    monkeypatch.delenv("FLASH_SM90_BWD256_VARLEN", raising=False)
    monkeypatch.delenv("FLASH_SM90_BWD256_DROPOUT", raising=False)
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


def test_sm90_bwd256_dropout_switch_off_falls_back(monkeypatch):
    """FLASH_SM90_BWD256_DROPOUT=0 sends dropout back to the sm80 backward."""
    monkeypatch.setenv("FLASH_SM90_BWD256_DROPOUT", "0")
    flash_attn.set_cuda_path("auto")
    q = rand(1, 256, 2, 256, dtype=torch.bfloat16, device="cuda")
    out = flash_attn_func(q, q, q, dropout_p=0.1)
    out.sum().backward()
    assert flash_attn.last_impl() == "sm80"


# ---- varlen ----------------------------------------------------------------------------------------
# Packed back to back: a tail tile's box covers rows of the next sequence, which must contribute
# nothing and must not be written. Lengths include 1 and values that are not multiples of 64.
VARLEN_Q = [113, 1, 203, 1023, 64, 300]
VARLEN_K = {"self": VARLEN_Q, "cross": [200, 77, 203, 990, 129, 1]}
VARLEN_FEATURES = ["plain", "causal", "local", "softcap", "gqa", "mqa_causal", "softcap_alibi_local"]


def _cu(lengths):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return cu.cuda()


@pytest.mark.parametrize("feature", VARLEN_FEATURES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_sm90_bwd256_varlen_matches_reference(feature, dtype, hdim, kind):
    torch.manual_seed(hdim * 17 + len(feature) * 3 + (kind == "cross"))
    len_q, len_k = VARLEN_Q, VARLEN_K[kind]
    b = len(len_q)
    h, hk, kw, ref_kw = _case(feature, b)
    cu_q, cu_k = _cu(len_q), _cu(len_k)
    q = rand(sum(len_q), h, hdim, dtype=dtype, device="cuda")
    k = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    v = rand(sum(len_k), hk, hdim, dtype=dtype, device="cuda")
    out, lse, _ = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(len_q), max(len_k),
                                         return_attn_probs=True, **kw)
    dout = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), dout)
    assert flash_attn.last_impl() == "sm90", "the varlen backward did not run on the sm90 path"

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q.cpu(), cu_k.cpu(), **ref_kw)

    compare_to_reference(out, lse, [q, k, v], ref, dtype, dout=dout, ours_grads=ours)


@pytest.mark.parametrize("hdim", HEAD_DIMS)
def test_sm90_bwd256_varlen_deterministic_bitwise(hdim):
    torch.manual_seed(5)
    len_q = [700, 3, 1500, 129]
    cu = _cu(len_q)
    q, k, v = [rand(sum(len_q), 4, hdim, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    dout = torch.randn(sum(len_q), 4, hdim, dtype=torch.bfloat16, device="cuda")
    results = []
    for _ in range(3):
        out = flash_attn_varlen_func(q, k, v, cu, cu, max(len_q), max(len_q), causal=True,
                                     deterministic=True)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
        assert flash_attn.last_impl() == "sm90"
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)


@pytest.mark.parametrize("hdim", HEAD_DIMS)
def test_sm90_bwd256_varlen_dropout_auto_path(hdim):
    """cuda_path auto picks the sm90 backward for d192 / d256 varlen with dropout (on by default
    since session 5; it used to fall back to sm80)."""
    flash_attn.set_cuda_path("auto")
    lengths = [300, 1, 513]
    cu = _cu(lengths)
    q, k, v = [rand(sum(lengths), 4, hdim, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    out = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), dropout_p=0.1,
                                 causal=True)
    out.sum().backward()
    assert flash_attn.last_impl() == "sm90"


def test_sm90_bwd256_varlen_switch_off_falls_back(monkeypatch):
    monkeypatch.setenv("FLASH_SM90_BWD256_VARLEN", "0")
    lengths = [300, 1, 513]
    cu = _cu(lengths)
    q, k, v = [rand(sum(lengths), 2, 256, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    out = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), causal=True)
    out.sum().backward()
    assert flash_attn.last_impl() == "sm80"


# ---- dropout ---------------------------------------------------------------------------------------
# The keep mask is regenerated from the rng_state the forward drew (tests/python/philox_ref.py):
# a keep bit of the backward that differs from the forward's shows as an O(1) gradient error.

def _rng_state_for_seed(seed):
    """The rng_state a forward draws right after torch.manual_seed(seed) (flash_attn/_backend.py)."""
    torch.manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device="cuda")


def _compare_out_and_grads(out, inputs, ref_fn, dtype, dout, ours):
    ref64 = [x.detach().double().requires_grad_() for x in inputs]
    base = [x.detach().clone().requires_grad_() for x in inputs]
    out64, outb = ref_fn(*ref64), ref_fn(*base)
    assert_close_rule("out", out, outb, out64, dtype)
    g64 = grads(out64, ref64, dout.double())
    gb = grads(outb, base, dout)
    for n, (a, b_, c) in enumerate(zip(ours, gb, g64)):
        assert_close_rule(f"grad[{n}]", a, b_, c, dtype, factor=3.0)


@pytest.mark.parametrize("feature", ["plain", "causal", "gqa", "softcap_alibi_local"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("seqlens", [(113, 203), (1000, 1100)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_sm90_bwd256_dropout_matches_reference(feature, dtype, hdim, seqlens):
    p = 0.17
    sq, sk = seqlens
    b = 2
    torch.manual_seed(hdim + sq)
    h, hk, kw, ref_kw = _case(feature, b)
    q = rand(b, sq, h, hdim, dtype=dtype, device="cuda")
    k = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    v = rand(b, sk, hk, hdim, dtype=dtype, device="cuda")
    dout = torch.randn(b, sq, h, hdim, dtype=dtype, device="cuda")
    rng_state = _rng_state_for_seed(99)
    torch.manual_seed(99)
    out = flash_attn_func(q, k, v, dropout_p=p, **kw)
    ours = torch.autograd.grad(out, (q, k, v), dout)
    assert flash_attn.last_impl() == "sm90", "the dropout backward did not run on the sm90 path"
    keep = keep_mask_batch(rng_state, b, h, sq, sk, p).cuda()

    def ref(q_, k_, v_):
        return attention_ref(q_, k_, v_, keep_mask=keep, dropout_p=p, **ref_kw)[0]

    _compare_out_and_grads(out, [q, k, v], ref, dtype, dout, ours)


@pytest.mark.parametrize("hdim", HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
def test_sm90_bwd256_dropout_varlen_matches_sm80(hdim, causal):
    """Same forward, backward on sm90 and on sm80: the same dropout mask and formula, so the
    gradients agree to accumulation-order noise (a mismatched keep bit shows as O(1))."""
    p, dtype = 0.25, torch.bfloat16
    len_q, len_k = VARLEN_Q, VARLEN_K["cross"]
    cu_q, cu_k = _cu(len_q), _cu(len_k)
    torch.manual_seed(hdim + 2 * causal)
    q = rand(sum(len_q), 4, hdim, dtype=dtype, device="cuda")
    k = rand(sum(len_k), 2, hdim, dtype=dtype, device="cuda")
    v = rand(sum(len_k), 2, hdim, dtype=dtype, device="cuda")
    dout = torch.randn(sum(len_q), 4, hdim, dtype=dtype, device="cuda")
    torch.manual_seed(13)
    out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(len_q), max(len_k), dropout_p=p,
                                 causal=causal)
    ours = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
    assert flash_attn.last_impl() == "sm90"
    flash_attn.set_cuda_path("sm80")
    theirs = torch.autograd.grad(out, (q, k, v), dout)
    assert flash_attn.last_impl() == "sm80"
    for name, a, b_ in zip(("dq", "dk", "dv"), ours, theirs):
        tol = 2e-2 * b_.abs().max().item() + 1e-3
        err = (a.float() - b_.float()).abs().max().item()
        assert err <= tol, f"{name}: sm90 vs sm80 differ by {err:.3e} (> {tol:.3e})"


def test_sm90_bwd256_dropout_deterministic_bitwise():
    torch.manual_seed(11)
    q, k, v = [rand(2, 777, 4, 256, dtype=torch.bfloat16, device="cuda") for _ in range(3)]
    dout = torch.randn(2, 777, 4, 256, dtype=torch.bfloat16, device="cuda")
    results = []
    for _ in range(3):
        torch.manual_seed(3)
        out = flash_attn_func(q, k, v, dropout_p=0.3, causal=True, deterministic=True)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
        assert flash_attn.last_impl() == "sm90"
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)

