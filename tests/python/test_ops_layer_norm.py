"""flash_attn.ops.layer_norm / rms_norm / triton.layer_norm against PyTorch references, forward and
backward, on CPU and (when present) CUDA. Dropout is checked with the mask the op returns."""

import pytest
import torch
import torch.nn.functional as F

from flash_attn.ops.layer_norm import (
    DropoutAddLayerNorm,
    dropout_add_layer_norm,
    dropout_add_layer_norm_parallel_residual,
    dropout_add_layer_norm_subset,
)
from flash_attn.ops.rms_norm import dropout_add_rms_norm
from flash_attn.ops.triton.layer_norm import LayerNorm, RMSNorm, layer_norm_fn, rms_norm_fn

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def norm_ref(a, weight, bias, eps, rms):
    a = a.double()
    if rms:
        out = a * torch.rsqrt(a.square().mean(-1, keepdim=True) + eps) * weight.double()
        return out + bias.double() if bias is not None else out
    return F.layer_norm(a, a.shape[-1:], weight.double(), None if bias is None else bias.double(), eps)


def leaf(t):
    return t.detach().double().requires_grad_(True)


def close(a, b, dtype, factor=1.0, name=""):
    tol = TOL[dtype] * factor
    torch.testing.assert_close(a.double(), b.double(), atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("hidden", [64, 1024])
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
@pytest.mark.parametrize("prenorm", [False, True])
def test_dropout_add_norm(device, dtype, hidden, rms, dropout_p, prenorm):
    rows = 37
    x0 = torch.randn(rows, hidden, device=device, dtype=dtype, requires_grad=True)
    res = torch.randn(rows, hidden, device=device, dtype=dtype, requires_grad=True)
    w = (1 + 0.1 * torch.randn(hidden, device=device)).to(dtype).requires_grad_(True)
    b = (0.1 * torch.randn(hidden, device=device)).to(dtype).requires_grad_(True) if not rms else None
    rowscale = torch.rand(rows, device=device, dtype=dtype)
    colscale = torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)
    fn = dropout_add_rms_norm if rms else dropout_add_layer_norm
    outs = fn(x0, res, w, b, dropout_p, 1e-5, rowscale=rowscale, layerscale=colscale, prenorm=prenorm,
              return_dropout_mask=True)
    out, a_out, mask = (outs if prenorm else (outs[0], None, outs[1]))
    assert mask.dtype == torch.bool and mask.shape == x0.shape
    if dropout_p == 0.0:
        assert mask.all()
    else:
        kept = mask.float().mean().item()
        assert abs(kept - (1 - dropout_p)) < 0.05, kept
    X0, RES, W, CS = leaf(x0), leaf(res), leaf(w), leaf(colscale)
    B = leaf(b) if b is not None else None
    a = X0 * rowscale.double()[:, None] * CS * mask.double() / (1 - dropout_p) + RES
    ref = norm_ref(a, W, B, 1e-5, rms)
    assert out.dtype == dtype
    close(out, ref, dtype, name="out")
    if prenorm:
        close(a_out, a, dtype, name="residual_out")
    g = torch.randn_like(out)
    leaves = [x0, res, w, colscale] + ([b] if b is not None else [])
    refs = [X0, RES, W, CS] + ([B] if B is not None else [])
    if prenorm:
        g2 = torch.randn_like(a_out)
        ours = torch.autograd.grad((out, a_out), leaves, (g, g2))
        theirs = torch.autograd.grad((ref, a), refs, (g.double(), g2.double()))
    else:
        ours = torch.autograd.grad(out, leaves, g)
        theirs = torch.autograd.grad(ref, refs, g.double())
    for name, o, t in zip(["dx0", "dres", "dw", "dcolscale", "db"], ours, theirs):
        scale = max(1.0, t.abs().max().item())
        close(o / scale, t / scale, dtype, factor=4.0, name=name)


@pytest.mark.parametrize("residual_in_fp32", [False, True])
def test_residual_in_fp32_and_no_residual(device, residual_in_fp32):
    x0 = torch.randn(8, 128, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.ones(128, device=device, dtype=torch.bfloat16, requires_grad=True)
    b = torch.zeros(128, device=device, dtype=torch.bfloat16, requires_grad=True)
    out, resid = dropout_add_layer_norm(x0, None, w, b, 0.0, 1e-5, prenorm=True, residual_in_fp32=residual_in_fp32)
    assert resid.dtype == (torch.float32 if residual_in_fp32 else torch.bfloat16)
    torch.testing.assert_close(resid.float(), x0.float())
    close(out, norm_ref(x0, w, b, 1e-5, False), torch.bfloat16)
    out.sum().backward()
    assert x0.grad is not None and w.grad is not None


def test_mask_reproducible_and_device_independent(device):
    x0 = torch.randn(16, 256, device=device)
    w = torch.ones(256, device=device)
    torch.manual_seed(123)
    _, m1 = dropout_add_layer_norm(x0, None, w, None, 0.5, 1e-5, return_dropout_mask=True)
    torch.manual_seed(123)
    _, m2 = dropout_add_layer_norm(x0, None, w, None, 0.5, 1e-5, return_dropout_mask=True)
    assert torch.equal(m1, m2)
    torch.manual_seed(123)
    _, mc = dropout_add_layer_norm(x0.cpu(), None, w.cpu(), None, 0.5, 1e-5, return_dropout_mask=True)
    assert torch.equal(m1.cpu(), mc)  # the Philox mask is the same on CPU and GPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_subset(device, dtype):
    rows, hidden, x0_rows, out_rows = 10, 64, 4, 3
    x0 = torch.randn(x0_rows, hidden, device=device, dtype=dtype, requires_grad=True)
    res = torch.randn(rows, hidden, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(hidden, device=device, dtype=dtype, requires_grad=True)
    x0_subset = torch.tensor([1, 0, 2, 0, 0, 3, 0, 4, 0, 0], device=device, dtype=torch.int32)
    out_subset = torch.tensor([0, 2, 0, 0, 1, 0, 0, 0, 3, 0], device=device, dtype=torch.int32)
    out, resid = dropout_add_layer_norm_subset(x0, res, w, b, 0.0, 1e-5, x0_subset=x0_subset, out_subset=out_subset,
                                               rowscale_const=0.5, out_numrows=out_rows, prenorm=True)
    X0, RES, W, B = leaf(x0), leaf(res), leaf(w), leaf(b)
    full_x0 = torch.zeros(rows, hidden, dtype=torch.float64, device=device)
    idx = (x0_subset > 0).nonzero().squeeze(1)
    full_x0 = full_x0.index_copy(0, idx, X0[(x0_subset[idx] - 1).long()])
    a = full_x0 * 0.5 + RES
    normed = norm_ref(a, W, B, 1e-5, False)
    oidx = (out_subset > 0).nonzero().squeeze(1)
    ref = torch.zeros(out_rows, hidden, dtype=torch.float64, device=device).index_copy(
        0, (out_subset[oidx] - 1).long(), normed[oidx])
    close(out, ref, dtype, name="out")
    close(resid, a, dtype, name="residual_out")
    g, g2 = torch.randn_like(out), torch.randn_like(resid)
    ours = torch.autograd.grad((out, resid), [x0, res, w, b], (g, g2))
    theirs = torch.autograd.grad((ref, a), [X0, RES, W, B], (g.double(), g2.double()))
    for name, o, t in zip(["dx0", "dres", "dw", "db"], ours, theirs):
        close(o, t, dtype, factor=4.0, name=name)


@pytest.mark.parametrize("rms", [False, True])
def test_parallel_residual(device, rms):
    dtype, hidden = torch.float32, 96
    x0, x1, res = (torch.randn(6, hidden, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    w0, w1 = (torch.randn(hidden, device=device, requires_grad=True) for _ in range(2))
    b0, b1 = (torch.randn(hidden, device=device, requires_grad=True) for _ in range(2))
    if rms:
        from flash_attn.ops.rms_norm import dropout_add_rms_norm_parallel_residual as fn
    else:
        fn = dropout_add_layer_norm_parallel_residual
    o0, o1, resid, m0, m1 = fn(x0, x1, res, w0, b0, w1, b1, 0.2, 1e-5, prenorm=True, return_dropout_mask=True)
    L = [leaf(t) for t in (x0, x1, res, w0, b0, w1, b1)]
    a = L[0] * m0.double() / 0.8 + L[1] * m1.double() / 0.8 + L[2]
    r0, r1 = norm_ref(a, L[3], L[4], 1e-5, rms), norm_ref(a, L[5], L[6], 1e-5, rms)
    close(o0, r0, dtype)
    close(o1, r1, dtype)
    close(resid, a, dtype)
    gs = [torch.randn_like(t) for t in (o0, o1, resid)]
    ours = torch.autograd.grad((o0, o1, resid), [x0, x1, res, w0, b0, w1, b1], gs)
    theirs = torch.autograd.grad((r0, r1, a), L, [g.double() for g in gs])
    for o, t in zip(ours, theirs):
        close(o, t, dtype, factor=4.0)


@pytest.mark.parametrize("is_rms_norm", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_layer_norm_fn(device, is_rms_norm, dtype):
    hidden = 256
    x = torch.randn(2, 5, hidden, device=device, dtype=dtype, requires_grad=True)
    res = torch.randn(2, 5, hidden, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(hidden, device=device, dtype=torch.float32, requires_grad=True)
    b = torch.randn(hidden, device=device, dtype=torch.float32, requires_grad=True)
    rowscale = torch.rand(2, 5, device=device, dtype=dtype)
    fn = rms_norm_fn if is_rms_norm else layer_norm_fn
    kw = {} if is_rms_norm else {"is_rms_norm": False}
    y, resid = fn(x, w, b, residual=res, eps=1e-6, rowscale=rowscale, prenorm=True, residual_in_fp32=True,
                  zero_centered_weight=True, **kw)
    assert y.shape == x.shape and y.dtype == dtype and resid.dtype == dtype  # residual given: its dtype
    X, R, W, B = leaf(x), leaf(res), leaf(w), leaf(b)
    a = X * rowscale.double()[..., None] + R
    ref = norm_ref(a, W + 1.0, B, 1e-6, is_rms_norm)
    close(y, ref, dtype, factor=2.0)
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, [x, res, w, b], g)
    theirs = torch.autograd.grad(ref, [X, R, W, B], g.double())
    for o, t in zip(ours, theirs):
        scale = max(1.0, t.abs().max().item())
        close(o / scale, t / scale, dtype, factor=4.0)


def test_layer_norm_fn_x1_weight1_out_dtype(device):
    hidden = 64
    x, x1 = (torch.randn(7, hidden, device=device, requires_grad=True) for _ in range(2))
    w, w1 = (torch.randn(hidden, device=device, requires_grad=True) for _ in range(2))
    y, y1, m, m1 = layer_norm_fn(x, w, None, x1=x1, weight1=w1, dropout_p=0.25, return_dropout_mask=True,
                                 out_dtype=torch.float16)
    assert y.dtype == torch.float16 and y1.dtype == torch.float16
    X, X1, W, W1 = leaf(x), leaf(x1), leaf(w), leaf(w1)
    a = X * m / 0.75 + X1 * m1 / 0.75
    close(y, norm_ref(a, W, None, 1e-6, False), torch.float16)
    close(y1, norm_ref(a, W1, None, 1e-6, False), torch.float16)
    assert not torch.equal(m, m1)  # x and x1 draw independent masks
    (y.float().sum() + 2 * y1.float().sum()).backward()
    assert x.grad is not None and x1.grad is not None and w1.grad is not None


def test_modules(device):
    ln = LayerNorm(128, device=device)
    rms = RMSNorm(128, device=device)
    dln = DropoutAddLayerNorm(128, prenorm=True, p=0.1, device=device).eval()
    x = torch.randn(3, 128, device=device)
    res = torch.randn(3, 128, device=device)
    close(ln(x), F.layer_norm(x, (128,), ln.weight, ln.bias, 1e-5), torch.float32)
    close(rms(x), norm_ref(x, rms.weight, None, 1e-5, True), torch.float32)
    out, r = dln(x, res)
    close(out, F.layer_norm(x + res, (128,), dln.weight, dln.bias, 1e-5), torch.float32)
    y, resid = ln(x, residual=res, prenorm=True)
    close(resid, x + res, torch.float32)


def test_unaligned_and_large_hidden(device):
    # hidden % 8 != 0 takes the scalar path on CUDA; 16K the widest vector path.
    for hidden in (13, 16384):
        x = torch.randn(3, hidden, device=device, requires_grad=True)
        w = torch.randn(hidden, device=device, requires_grad=True)
        y = dropout_add_layer_norm(x, None, w, None, 0.0, 1e-5)
        ref = norm_ref(leaf(x), leaf(w), None, 1e-5, False)
        close(y, ref, torch.float32, factor=5.0)
        y.sum().backward()
        assert torch.isfinite(x.grad).all()
