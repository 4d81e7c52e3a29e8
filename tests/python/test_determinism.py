"""Determinism: the forward is bitwise identical over 10 runs (every path: fixed, varlen, paged,
kvcache with split-KV, dropout under the same seed), and so is the backward with deterministic=True
(GQA, varlen, dropout). On CUDA the shapes are large enough to launch many CTAs per head, so an
order-dependent reduction (atomics, split combine) would show."""

import pytest
import torch

from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

RUNS = 10


def _shapes(device):
    # (batch, seqlen_q, seqlen_k, nheads, nheads_k, head_dim)
    return (2, 1000, 1100, 8, 2, 128) if device == "cuda" else (2, 37, 45, 4, 2, 32)


def _dtype(device):
    return torch.bfloat16 if device == "cuda" else torch.float32


def _assert_all_equal(results, what):
    first = results[0]
    for n, r in enumerate(results[1:], 1):
        for a, b in zip(first, r):
            assert torch.equal(a, b), f"{what}: run {n} differs from run 0 (max diff {(a.float() - b.float()).abs().max()})"


def _inputs(device, requires_grad):
    b, sq, sk, h, hk, d = _shapes(device)
    g = torch.Generator(device="cpu").manual_seed(7)
    mk = lambda *s: torch.randn(*s, generator=g).to(device, _dtype(device)).requires_grad_(requires_grad)  # noqa: E731
    return mk(b, sq, h, d), mk(b, sk, hk, d), mk(b, sk, hk, d)


@pytest.mark.parametrize("flags", [{}, {"causal": True}, {"window_size": (100, 3), "softcap": 5.0},
                                   {"dropout_p": 0.2, "causal": True}], ids=["plain", "causal", "local_softcap", "dropout"])
def test_forward_bitwise(device, flags):
    q, k, v = _inputs(device, False)
    results = []
    for _ in range(RUNS):
        torch.manual_seed(3)  # dropout: same seed -> same mask
        out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **flags)
        results.append((out, lse))
    _assert_all_equal(results, "forward")


@pytest.mark.parametrize("flags", [{}, {"causal": True}, {"dropout_p": 0.15, "window_size": (64, 64)}],
                         ids=["plain", "causal", "dropout_local"])
def test_backward_deterministic_bitwise(device, flags):
    q, k, v = _inputs(device, True)
    dout = torch.randn_like(q)
    results = []
    for _ in range(RUNS):
        torch.manual_seed(5)
        out = flash_attn_func(q, k, v, deterministic=True, **flags)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
    _assert_all_equal(results, "backward (deterministic=True)")


def _varlen_inputs(device, requires_grad):
    lens = [300, 1, 0, 777, 64] if device == "cuda" else [13, 1, 0, 29, 8]
    _, _, _, h, hk, d = _shapes(device)
    g = torch.Generator(device="cpu").manual_seed(11)
    total = sum(lens)
    mk = lambda *s: torch.randn(*s, generator=g).to(device, _dtype(device)).requires_grad_(requires_grad)  # noqa: E731
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    return mk(total, h, d), mk(total, hk, d), mk(total, hk, d), cu, max(lens)


def test_varlen_forward_and_deterministic_backward_bitwise(device):
    q, k, v, cu, m = _varlen_inputs(device, True)
    dout = torch.randn_like(q)
    fwd, bwd = [], []
    for _ in range(RUNS):
        torch.manual_seed(9)
        out, lse, _ = flash_attn_varlen_func(q, k, v, cu, cu, m, m, dropout_p=0.1, causal=True, deterministic=True,
                                             return_attn_probs=True)
        fwd.append((out.detach(), lse))
        bwd.append(torch.autograd.grad(out, (q, k, v), dout))
    _assert_all_equal(fwd, "varlen forward")
    _assert_all_equal(bwd, "varlen backward (deterministic=True)")


def test_paged_forward_bitwise(device):
    q, k, v, cu, m = _varlen_inputs(device, False)
    page = 16
    lens = (cu[1:] - cu[:-1]).tolist()
    per_seq = max(1, -(-max(lens) // page))
    n_pages = len(lens) * per_seq
    table = torch.randperm(n_pages, generator=torch.Generator().manual_seed(1)).to(torch.int32)
    table = table.view(len(lens), per_seq).to(device)
    kp = torch.randn(n_pages, page, k.shape[1], k.shape[2], dtype=k.dtype).to(device)
    vp = torch.randn_like(kp)
    results = [tuple(flash_attn_varlen_func(q, kp, vp, cu, cu, m, m, block_table=table, causal=True,
                                            return_attn_probs=True)[:2]) for _ in range(RUNS)]
    _assert_all_equal(results, "paged varlen forward")


@pytest.mark.parametrize("num_splits", [0, 1, 4])
def test_kvcache_forward_bitwise(device, num_splits):
    b, _, sk, h, hk, d = _shapes(device)
    dtype = _dtype(device)
    g = torch.Generator().manual_seed(4)
    q = torch.randn(b, 1, h, d, generator=g).to(device, dtype)
    kc = torch.randn(b, 4 * sk, hk, d, generator=g).to(device, dtype)
    vc = torch.randn(b, 4 * sk, hk, d, generator=g).to(device, dtype)
    seqlens = torch.tensor([4 * sk, sk + 3], dtype=torch.int32, device=device)
    results = [tuple(flash_attn_with_kvcache(q, kc, vc, cache_seqlens=seqlens, num_splits=num_splits,
                                             return_softmax_lse=True)) for _ in range(RUNS)]
    _assert_all_equal(results, f"kvcache forward (num_splits={num_splits})")
