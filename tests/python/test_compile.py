"""torch.compile(fullgraph=True) traces the custom ops (fake impls) forward and backward."""

import pytest
import torch

from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from helpers import rand


@pytest.mark.parametrize("backend,dropout_p", [("aot_eager", 0.0), ("aot_eager", 0.2), ("inductor", 0.0)])
def test_compile_flash_attn_func(device, backend, dropout_p):
    torch._dynamo.reset()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = rand(2, 33, 4, 64, dtype=dtype, device=device)
    k = rand(2, 40, 2, 64, dtype=dtype, device=device)
    v = rand(2, 40, 2, 64, dtype=dtype, device=device)
    dout = torch.randn(2, 33, 4, 64, dtype=dtype, device=device)

    def fn(q, k, v):
        return flash_attn_func(q, k, v, dropout_p=dropout_p, causal=True, softcap=3.0) * 2.0

    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    torch.manual_seed(11)
    out_c = compiled(q, k, v)
    grads_c = torch.autograd.grad(out_c, (q, k, v), dout)
    torch.manual_seed(11)
    out_e = fn(q, k, v)
    grads_e = torch.autograd.grad(out_e, (q, k, v), dout)
    torch.testing.assert_close(out_c, out_e, atol=0, rtol=0)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_compile_varlen_and_kvcache(device):
    torch._dynamo.reset()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cu = torch.tensor([0, 3, 10], dtype=torch.int32, device=device)
    q, k, v = (rand(10, 2, 32, dtype=dtype, device=device) for _ in range(3))

    def varlen(q, k, v):
        return flash_attn_varlen_func(q, k, v, cu, cu, 7, 7, causal=True)

    out_c = torch.compile(varlen, fullgraph=True, backend="aot_eager")(q, k, v)
    torch.testing.assert_close(out_c, varlen(q, k, v), atol=0, rtol=0)

    qd = torch.randn(2, 1, 2, 32, dtype=dtype, device=device)
    kc = torch.zeros(2, 16, 2, 32, dtype=dtype, device=device)
    vc = torch.zeros(2, 16, 2, 32, dtype=dtype, device=device)
    kn = torch.randn(2, 1, 2, 32, dtype=dtype, device=device)
    seqlens = torch.tensor([3, 8], dtype=torch.int32, device=device)

    vn = torch.randn(2, 1, 2, 32, dtype=dtype, device=device)

    def decode(qd, kc, vc, kn):
        return flash_attn_with_kvcache(qd, kc, vc, kn, vn, cache_seqlens=seqlens)

    kc2, vc2 = kc.clone(), vc.clone()
    out_c = torch.compile(decode, fullgraph=True, backend="aot_eager")(qd, kc, vc, kn)
    out_e = decode(qd, kc2, vc2, kn)
    torch.testing.assert_close(out_c, out_e, atol=0, rtol=0)
    torch.testing.assert_close(kc, kc2, atol=0, rtol=0)  # the in-place append survives compilation
    assert torch.equal(kc[0, 3], kn[0, 0]) and torch.equal(kc[1, 8], kn[1, 0])


def test_opcheck(device):
    """torch.library.opcheck: schema, fake tensors and autograd registration are consistent."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = torch.randn(1, 9, 2, 32, dtype=dtype, device=device)
    k = torch.randn(1, 12, 1, 32, dtype=dtype, device=device)
    args = (q, k, k, 0.0, 0.2, True, -1, -1, 0.0, None, False, 0)
    torch.library.opcheck(torch.ops.flash_attn._flash_attn_forward.default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
def test_compile_return_attn_probs_and_packed(device, dropout_p):
    """The (out, lse, S_dmask) convention (S_dmask None without dropout) survives fullgraph tracing."""
    from flash_attn import flash_attn_qkvpacked_func

    torch._dynamo.reset()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    qkv = rand(1, 9, 3, 2, 32, dtype=dtype, device=device)

    def fn(qkv):
        out, lse, s_dmask = flash_attn_qkvpacked_func(qkv, dropout_p=dropout_p, causal=True, return_attn_probs=True)
        assert (s_dmask is None) == (dropout_p == 0.0)
        return out.sum() + lse.sum() + (0 if s_dmask is None else s_dmask.float().sum())

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.manual_seed(2)
    a = compiled(qkv)
    (ga,) = torch.autograd.grad(a, qkv)
    torch.manual_seed(2)
    b = fn(qkv)
    (gb,) = torch.autograd.grad(b, qkv)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(ga, gb, atol=0, rtol=0)
