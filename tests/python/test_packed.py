"""flash_attn_qkvpacked_func / flash_attn_kvpacked_func: outputs and gradients w.r.t. the packed
tensors."""

import pytest
import torch

from flash_attn import flash_attn_kvpacked_func, flash_attn_qkvpacked_func
from helpers import compare_to_reference, rand, skip_unsupported_dtype
from reference import attention_ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 59])
def test_qkvpacked(device, dtype, causal, head_dim):
    skip_unsupported_dtype(device, dtype)
    qkv = rand(2, 31, 3, 4, head_dim, dtype=dtype, device=device)
    out, lse, s = flash_attn_qkvpacked_func(qkv, causal=causal, return_attn_probs=True)
    assert s is None

    def ref(t):
        o, l, _ = attention_ref(t[:, :, 0], t[:, :, 1], t[:, :, 2], causal=causal)
        return o, l

    compare_to_reference(out, lse, [qkv], ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [(4, 4), (6, 2)], ids=["mha", "gqa"])
def test_kvpacked(device, dtype, causal, heads):
    skip_unsupported_dtype(device, dtype)
    h, hk = heads
    q = rand(2, 19, h, 64, dtype=dtype, device=device)
    kv = rand(2, 27, 2, hk, 64, dtype=dtype, device=device)
    out, lse, _ = flash_attn_kvpacked_func(q, kv, causal=causal, window_size=(8, 8), return_attn_probs=True)

    def ref(q_, kv_):
        o, l, _ = attention_ref(q_, kv_[:, :, 0], kv_[:, :, 1], causal=causal, window=(8, 8))
        return o, l

    compare_to_reference(out, lse, [q, kv], ref, dtype)
