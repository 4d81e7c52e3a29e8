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


# ---- whole steps: a training step and a decode step trace into ONE graph (no graph breaks) ---------


def _no_graph_breaks(fn, *args):
    """torch._dynamo.explain: the function must trace as a single graph."""
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*args)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1, explanation.graph_count
    torch._dynamo.reset()


class _AttentionBlock(torch.nn.Module):
    """GQA attention block: projections around flash_attn_func with dropout and a causal mask."""

    def __init__(self, dim=64, h=4, hk=2, d=16):
        super().__init__()
        self.h, self.hk, self.d = h, hk, d
        self.wq = torch.nn.Linear(dim, h * d)
        self.wkv = torch.nn.Linear(dim, 2 * hk * d)
        self.wo = torch.nn.Linear(h * d, dim)

    def forward(self, x):
        b, s, _ = x.shape
        q = self.wq(x).view(b, s, self.h, self.d)
        k, v = self.wkv(x).view(b, s, 2, self.hk, self.d).unbind(2)
        o = flash_attn_func(q, k, v, dropout_p=0.1, causal=True, softcap=20.0)
        return self.wo(o.reshape(b, s, self.h * self.d))


def test_compile_training_step(device):
    import copy

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = _AttentionBlock().to(device, dtype)
    model_c = copy.deepcopy(model)
    x = torch.randn(2, 37, 64, device=device, dtype=dtype)
    target = torch.randn(2, 37, 64, device=device, dtype=dtype)

    def loss_of(m):
        def step(x, target):
            return ((m(x) - target) ** 2).mean()
        return step

    _no_graph_breaks(loss_of(model_c), x, target)
    step_c = torch.compile(loss_of(model_c), fullgraph=True, backend="aot_eager")
    opt, opt_c = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, model_c))
    for it in range(2):  # two steps: the second runs the cached graph with updated weights
        torch.manual_seed(100 + it)
        loss = loss_of(model)(x, target)
        torch.manual_seed(100 + it)
        loss_c = step_c(x, target)
        loss.backward()
        loss_c.backward()
        torch.testing.assert_close(loss_c, loss, atol=0, rtol=0)
        for p, pc in zip(model.parameters(), model_c.parameters()):
            torch.testing.assert_close(pc.grad, p.grad, atol=0, rtol=0)
        opt.step()
        opt_c.step()
        opt.zero_grad()
        opt_c.zero_grad()


def test_compile_paged_decode_step(device):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    b, h, hk, d, page, pages = 3, 4, 2, 32, 8, 4
    torch.manual_seed(1)
    kc = torch.randn(b * pages + 1, page, hk, d, dtype=dtype, device=device)
    vc = torch.randn_like(kc)
    table = torch.randperm(b * pages + 1)[: b * pages].view(b, pages).to(torch.int32).to(device)
    seqlens = torch.tensor([3, 17, 30], dtype=torch.int32, device=device)
    cos = torch.randn(page * pages, 8, dtype=dtype, device=device)
    sin = torch.randn(page * pages, 8, dtype=dtype, device=device)
    q = torch.randn(b, 1, h, d, dtype=dtype, device=device)
    kn = torch.randn(b, 1, hk, d, dtype=dtype, device=device)
    vn = torch.randn(b, 1, hk, d, dtype=dtype, device=device)

    def decode(q, kc, vc, kn, vn, seqlens):
        out, lse = flash_attn_with_kvcache(q, kc, vc, k=kn, v=vn, rotary_cos=cos, rotary_sin=sin,
                                           cache_seqlens=seqlens, block_table=table, causal=True,
                                           num_splits=2, return_softmax_lse=True)
        return out * 2.0, lse

    _no_graph_breaks(decode, q, kc.clone(), vc.clone(), kn, vn, seqlens)
    kc_e, vc_e = kc.clone(), vc.clone()
    out_c, lse_c = torch.compile(decode, fullgraph=True, backend="aot_eager")(q, kc, vc, kn, vn, seqlens)
    out_e, lse_e = decode(q, kc_e, vc_e, kn, vn, seqlens)
    torch.testing.assert_close(out_c, out_e, atol=0, rtol=0)
    torch.testing.assert_close(lse_c, lse_e, atol=0, rtol=0)
    torch.testing.assert_close(kc, kc_e, atol=0, rtol=0)  # the appended (rotated) keys, in place
    torch.testing.assert_close(vc, vc_e, atol=0, rtol=0)
