"""Dropout: the mask is regenerated in Python from the Philox mapping of csrc/common/philox.h, so the
forward, S_dmask and the gradients can be checked exactly against the reference."""

import pytest
import torch

from flash_attn import flash_attn_func, flash_attn_qkvpacked_func, flash_attn_varlen_func
from helpers import compare_to_reference, rand, skip_unsupported_dtype
from philox_ref import keep_mask_batch, keep_mask_seq, philox4x32_10
from reference import attention_ref, attention_varlen_ref, visible_mask


def rng_state_for_seed(seed, device):
    """The rng_state a forward draws right after torch.manual_seed(seed) (see flash_attn/_backend.py)."""
    torch.manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=device)


def test_philox_known_answer():
    """Random123's published Philox4x32-10 known-answer vectors."""
    out = philox4x32_10(0, 0, 0, 0, 0, 0)
    assert [int(x) for x in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    out = philox4x32_10(*([0xFFFFFFFF] * 4), 0xFFFFFFFF, 0xFFFFFFFF)
    assert [int(x) for x in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_fraction(device, p):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = rand(2, 128, 4, 32, dtype=dtype, device=device, requires_grad=False)
    k = rand(2, 128, 4, 32, dtype=dtype, device=device, requires_grad=False)
    _, _, s_dmask = flash_attn_func(q, k, k, dropout_p=p, return_attn_probs=True)
    assert s_dmask.shape[:2] == (2, 4)
    s_dmask = s_dmask[:, :, :128, :128]
    dropped = (s_dmask < 0).float().mean().item()
    assert abs(dropped - p) < 0.01, dropped


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("flags", [{}, {"causal": True}, {"window_size": (5, 2), "softcap": 2.0}],
                         ids=["plain", "causal", "window_softcap"])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_dropout_matches_regenerated_mask(device, dtype, flags, heads):
    skip_unsupported_dtype(device, dtype)
    p, (b, sq, sk, d), (h, hk) = 0.17, (2, 37, 45, 64), heads
    q = rand(b, sq, h, d, dtype=dtype, device=device)
    k = rand(b, sk, hk, d, dtype=dtype, device=device)
    v = rand(b, sk, hk, d, dtype=dtype, device=device)
    rng_state = rng_state_for_seed(1234, device)
    torch.manual_seed(1234)
    out, lse, s_dmask = flash_attn_func(q, k, v, dropout_p=p, return_attn_probs=True, **flags)
    keep = keep_mask_batch(rng_state, b, h, sq, sk, p).to(device)
    ref_kw = {"causal": flags.get("causal", False), "window": flags.get("window_size", (-1, -1)),
              "softcap": flags.get("softcap", 0.0), "keep_mask": keep, "dropout_p": p}

    def ref(q_, k_, v_):
        o, l, _ = attention_ref(q_, k_, v_, **ref_kw)
        return o, l

    compare_to_reference(out, lse, [q, k, v], ref, dtype)

    # S_dmask: probabilities with dropped entries negated, invisible entries 0.
    _, _, probs64 = attention_ref(q.detach().double(), k.detach().double(), v.detach().double(), **ref_kw)
    s = s_dmask[:, :, :sq, :sk].double()
    expected = torch.where(keep, probs64, -probs64)
    vis = visible_mask(sq, sk, ref_kw["causal"], ref_kw["window"], device)
    assert torch.all(s[..., ~vis] == 0)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(s, expected, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_varlen(device, dtype):
    skip_unsupported_dtype(device, dtype)
    p, h, d = 0.25, 3, 32
    len_q, len_k = [5, 0, 17, 1], [9, 4, 17, 30]
    cu_q = torch.tensor([0, 5, 5, 22, 23], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 9, 13, 30, 60], dtype=torch.int32, device=device)
    q = rand(sum(len_q), h, d, dtype=dtype, device=device)
    k = rand(sum(len_k), h, d, dtype=dtype, device=device)
    v = rand(sum(len_k), h, d, dtype=dtype, device=device)
    rng_state = rng_state_for_seed(7, device)
    torch.manual_seed(7)
    out, lse, _ = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(len_q), max(len_k), dropout_p=p,
                                         causal=True, return_attn_probs=True)
    masks = [keep_mask_seq(rng_state, i, h, len_q[i], len_k[i], p).to(device) for i in range(4)]

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q.cpu(), cu_k.cpu(), keep_masks=masks, causal=True,
                                    dropout_p=p)

    compare_to_reference(out, lse, [q, k, v], ref, dtype)


def test_same_seed_same_output(device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    qkv = rand(2, 33, 3, 2, 64, dtype=dtype, device=device)
    torch.manual_seed(5)
    a = flash_attn_qkvpacked_func(qkv, dropout_p=0.3)
    ga = torch.autograd.grad(a.sum(), qkv)[0]
    torch.manual_seed(5)
    b = flash_attn_qkvpacked_func(qkv, dropout_p=0.3)
    gb = torch.autograd.grad(b.sum(), qkv)[0]
    assert torch.equal(a, b) and torch.equal(ga, gb)
    c = flash_attn_qkvpacked_func(qkv, dropout_p=0.3)  # generator advanced: a fresh mask
    assert not torch.equal(a, c)


def test_dropout_zero_draws_no_random_numbers(device):
    """dropout_p == 0 must not consume torch's generator (rng_state is only drawn for dropout)."""
    dtype = torch.float16 if device == "cuda" else torch.float32
    q = rand(1, 8, 2, 32, dtype=dtype, device=device, requires_grad=False)
    torch.manual_seed(3)
    flash_attn_func(q, q, q)
    after = torch.rand(1, device=device)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1, device=device))


def test_return_attn_probs_with_dropout_convention(device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    q = rand(2, 8, 2, 32, dtype=dtype, device=device, requires_grad=False)
    out, lse, s_dmask = flash_attn_func(q, q, q, dropout_p=0.2, return_attn_probs=True)
    assert s_dmask is not None and s_dmask.dtype == dtype
    assert s_dmask.shape[:2] == (2, 2) and s_dmask.shape[2] >= 8 and s_dmask.shape[3] >= 8
