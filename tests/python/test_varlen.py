"""flash_attn_varlen_func (incl. paged block_table) and the varlen packed variants."""

import pytest
import torch

from flash_attn import (flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                        flash_attn_varlen_qkvpacked_func)
from helpers import compare_to_reference, rand, skip_unsupported_dtype
from reference import attention_varlen_ref, paged_to_contiguous

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def cu_seqlens(lengths, device):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return cu.to(device)


def random_lengths(batch, max_len, include_edge=True):
    lengths = torch.randint(0, max_len + 1, (batch,)).tolist()
    if include_edge and batch >= 3:
        lengths[0], lengths[1] = 0, 1  # an empty sequence and a single token
    return lengths


def varlen_ref(cu_q, cu_k, **kw):
    def fn(q, k, v):
        return attention_varlen_ref(q, k, v, cu_q, cu_k, **kw)
    return fn


FLAGS = [
    ("plain", {}),
    ("causal", {"causal": True}),
    ("window", {"window_size": (4, 2)}),
    ("softcap_alibi", {"softcap": 2.0, "alibi": True}),
    ("causal_window_softcap", {"causal": True, "window_size": (5, -1), "softcap": 1.0}),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", FLAGS, ids=[f[0] for f in FLAGS])
@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_varlen(device, dtype, flags, heads):
    skip_unsupported_dtype(device, dtype)
    flags = dict(flags[1])
    batch, (h, hk), d = 5, heads, 48
    len_q = random_lengths(batch, 23)
    len_k = [max(0, lq + int(torch.randint(-3, 9, ()))) for lq in len_q]
    cu_q, cu_k = cu_seqlens(len_q, device), cu_seqlens(len_k, device)
    q = rand(sum(len_q), h, d, dtype=dtype, device=device)
    k = rand(sum(len_k), hk, d, dtype=dtype, device=device)
    v = rand(sum(len_k), hk, d, dtype=dtype, device=device)
    alibi = torch.rand(batch, h, device=device) * 0.4 if flags.pop("alibi", False) else None
    out, lse, s = flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(len_q), max(len_k), alibi_slopes=alibi,
                                         return_attn_probs=True, **flags)
    assert s is None
    assert lse.shape == (h, sum(len_q))
    ref_kw = {"causal": flags.get("causal", False), "window": flags.get("window_size", (-1, -1)),
              "softcap": flags.get("softcap", 0.0), "alibi_slopes": alibi}
    compare_to_reference(out, lse, [q, k, v], varlen_ref(cu_q.cpu(), cu_k.cpu(), **ref_kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_qkvpacked(device, dtype, causal):
    skip_unsupported_dtype(device, dtype)
    lengths = random_lengths(4, 19)
    cu = cu_seqlens(lengths, device)
    qkv = rand(sum(lengths), 3, 2, 40, dtype=dtype, device=device)
    out, lse, _ = flash_attn_varlen_qkvpacked_func(qkv, cu, max(lengths), causal=causal, return_attn_probs=True)

    def ref(qkv_):
        return attention_varlen_ref(qkv_[:, 0], qkv_[:, 1], qkv_[:, 2], cu.cpu(), cu.cpu(), causal=causal)

    compare_to_reference(out, lse, [qkv], ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_kvpacked(device, dtype, causal):
    skip_unsupported_dtype(device, dtype)
    len_q, len_k = random_lengths(4, 17), random_lengths(4, 25)
    cu_q, cu_k = cu_seqlens(len_q, device), cu_seqlens(len_k, device)
    q = rand(sum(len_q), 6, 64, dtype=dtype, device=device)
    kv = rand(sum(len_k), 2, 3, 64, dtype=dtype, device=device)
    out, lse, _ = flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, max(len_q), max(len_k), causal=causal,
                                                  return_attn_probs=True)

    def ref(q_, kv_):
        return attention_varlen_ref(q_, kv_[:, 0], kv_[:, 1], cu_q.cpu(), cu_k.cpu(), causal=causal)

    compare_to_reference(out, lse, [q, kv], ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("page_size", [1, 16, 64])
@pytest.mark.parametrize("causal", [False, True])
def test_varlen_paged(device, dtype, page_size, causal):
    """k/v in shuffled pages addressed through block_table (forward only, as in flash-attn)."""
    skip_unsupported_dtype(device, dtype)
    batch, h, hk, d = 3, 4, 2, 64
    len_q = [3, 1, 7]
    len_k = [37, 5, 70]
    max_blocks = (max(len_k) + page_size - 1) // page_size
    num_blocks = batch * max_blocks + 3
    perm = torch.randperm(num_blocks)[: batch * max_blocks].view(batch, max_blocks)
    block_table = perm.to(torch.int32).to(device)
    k_pages = rand(num_blocks, page_size, hk, d, dtype=dtype, device=device, requires_grad=False)
    v_pages = rand(num_blocks, page_size, hk, d, dtype=dtype, device=device, requires_grad=False)
    cu_q, cu_k = cu_seqlens(len_q, device), cu_seqlens(len_k, device)
    q = rand(sum(len_q), h, d, dtype=dtype, device=device, requires_grad=False)
    out, lse, _ = flash_attn_varlen_func(q, k_pages, v_pages, cu_q, cu_k, max(len_q), max(len_k),
                                         causal=causal, block_table=block_table, return_attn_probs=True)
    k = torch.cat([paged_to_contiguous(k_pages, block_table.cpu(), b, n) for b, n in enumerate(len_k)])
    v = torch.cat([paged_to_contiguous(v_pages, block_table.cpu(), b, n) for b, n in enumerate(len_k)])

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q.cpu(), cu_k.cpu(), causal=causal)

    compare_to_reference(out, lse, [q, k, v], ref, dtype, check_grads=False)


def test_varlen_matches_padded_batch(device):
    """Equal lengths: varlen must give exactly what the fixed-length path gives (same rows)."""
    from flash_attn import flash_attn_func

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = rand(3, 16, 2, 32, dtype=dtype, device=device, requires_grad=False)
    k = rand(3, 20, 2, 32, dtype=dtype, device=device, requires_grad=False)
    v = rand(3, 20, 2, 32, dtype=dtype, device=device, requires_grad=False)
    fixed = flash_attn_func(q, k, v, causal=True)
    var = flash_attn_varlen_func(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu_seqlens([16] * 3, device),
                                 cu_seqlens([20] * 3, device), 16, 20, causal=True)
    torch.testing.assert_close(var.view_as(fixed), fixed, atol=2e-6 if dtype == torch.float32 else 1e-2, rtol=0)
