"""Empty inputs give defined results: batch 0, seqlen 0, varlen batches of empty sequences, kvcache
without keys. A query row that sees no key has out = 0 and lse = +inf; gradients are zero (or empty)."""

import pytest
import torch

from flash_attn import (flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func,
                        flash_attn_varlen_func, flash_attn_with_kvcache)


def _dt(device):
    return torch.bfloat16 if device == "cuda" else torch.float32


def _r(*shape, device, grad=True):
    return torch.randn(*shape, device=device, dtype=_dt(device)).requires_grad_(grad)


def _check_no_keys(out, lse):
    assert torch.all(out == 0), "rows without keys must be 0"
    assert torch.all(torch.isinf(lse) & (lse > 0)), "lse of rows without keys must be +inf"


@pytest.mark.parametrize("shape", [(0, 5, 7), (2, 0, 7), (2, 5, 0), (0, 0, 0)], ids=["batch0", "sq0", "sk0", "all0"])
def test_fixed_length_empty(device, shape):
    b, sq, sk = shape
    q, k, v = _r(b, sq, 4, 32, device=device), _r(b, sk, 2, 32, device=device), _r(b, sk, 2, 32, device=device)
    out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.shape == q.shape and lse.shape == (b, 4, sq) and lse.dtype == torch.float32
    if sk == 0:
        _check_no_keys(out, lse)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    if sk == 0:
        assert torch.all(dq == 0)
    if sq == 0:
        assert torch.all(dk == 0) and torch.all(dv == 0)


def test_packed_empty(device):
    qkv = _r(0, 5, 3, 2, 16, device=device)
    out = flash_attn_qkvpacked_func(qkv, causal=True)
    assert out.shape == (0, 5, 2, 16)
    q, kv = _r(2, 3, 2, 16, device=device), _r(2, 0, 2, 2, 16, device=device)
    out = flash_attn_kvpacked_func(q, kv)
    assert torch.all(out == 0)
    (g,) = torch.autograd.grad(out.sum(), (q,))
    assert torch.all(g == 0)


@pytest.mark.parametrize("lens", [([], []), ([0, 0], [0, 0]), ([3, 0], [0, 4]), ([0, 2], [5, 0])],
                         ids=["batch0", "all_empty", "empty_k_then_q", "empty_q_then_k"])
def test_varlen_empty_sequences(device, lens):
    lq, lk = lens
    cu = lambda ls: torch.tensor([0] + torch.tensor(ls, dtype=torch.long).cumsum(0).tolist(),  # noqa: E731
                                 dtype=torch.int32, device=device)
    tq, tk = sum(lq), sum(lk)
    q, k, v = _r(tq, 2, 16, device=device), _r(tk, 1, 16, device=device), _r(tk, 1, 16, device=device)
    out, lse, _ = flash_attn_varlen_func(q, k, v, cu(lq), cu(lk), max(lq, default=0), max(lk, default=0),
                                         causal=True, return_attn_probs=True)
    assert out.shape == q.shape and lse.shape == (2, tq)
    start = 0
    for nq, nk in zip(lq, lk):
        if nk == 0 and nq:
            _check_no_keys(out[start:start + nq], lse[:, start:start + nq])
        start += nq
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    for g, x in zip(grads, (q, k, v)):
        assert g.shape == x.shape and torch.isfinite(g).all()


def test_kvcache_empty(device):
    dt = _dt(device)
    kc = torch.randn(2, 8, 1, 16, device=device, dtype=dt)
    # batch 0
    out, lse = flash_attn_with_kvcache(torch.randn(0, 1, 2, 16, device=device, dtype=dt), kc, kc.clone(),
                                       cache_seqlens=torch.zeros(0, dtype=torch.int32, device=device),
                                       return_softmax_lse=True)
    assert out.shape == (0, 1, 2, 16) and lse.shape == (0, 2, 1)
    # no keys in the cache and none appended
    q = torch.randn(2, 3, 2, 16, device=device, dtype=dt)
    out, lse = flash_attn_with_kvcache(q, kc, kc.clone(), cache_seqlens=0, return_softmax_lse=True)
    _check_no_keys(out, lse)
    out, lse = flash_attn_with_kvcache(q, kc, kc.clone(), cache_seqlens=torch.tensor([0, 0], dtype=torch.int32,
                                       device=device), causal=True, num_splits=3, return_softmax_lse=True)
    _check_no_keys(out, lse)
    # zero query rows
    out = flash_attn_with_kvcache(torch.randn(2, 0, 2, 16, device=device, dtype=dt), kc, kc.clone(), cache_seqlens=4)
    assert out.shape == (2, 0, 2, 16)
