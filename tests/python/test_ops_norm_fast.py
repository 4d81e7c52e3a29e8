"""The plain fused-norm forward (csrc/ops/cuda/norm_fwd.cu, norm_fwd_plain_kernel: 16-bit x0, no
dropout / x1 / colscale / subsets) against the double-precision reference and against the general
kernel (FLASH_ATTN_NORM_FWD_PLAIN=0), for every chunks-per-thread setting
(FLASH_ATTN_NORM_FWD_CHUNKS) and dtype mix it instantiates. On the CPU the switches do nothing and
the tests check the CPU backend against the reference."""

import pytest
import torch
import torch.nn.functional as F

from flash_attn.ops.triton.layer_norm import layer_norm_fn

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def reference(x, res, rowscale, w, b, eps, rms):
    a = x.double()
    if rowscale is not None:
        a = a * rowscale.double()[:, None]
    if res is not None:
        a = a + res.double()
    if rms:
        y = a * torch.rsqrt(a.square().mean(-1, keepdim=True) + eps) * w.double()
        return (y + b.double() if b is not None else y), a
    return F.layer_norm(a, a.shape[-1:], w.double(), None if b is None else b.double(), eps), a


def run(x, res, rowscale, w, b, rms, residual_in_fp32=False):
    return layer_norm_fn(x, w, b, residual=res, eps=1e-5, rowscale=rowscale, prenorm=True,
                         residual_in_fp32=residual_in_fp32, is_rms_norm=rms)


def make(device, rows, hidden, dtype, res_dtype, w_dtype, bias, rowscale, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(rows, hidden, generator=g).to(device=device, dtype=dtype)
    res = None if res_dtype is None else (2 * torch.randn(rows, hidden, generator=g) + 0.5).to(device, res_dtype)
    w = (1 + 0.2 * torch.randn(hidden, generator=g)).to(device, w_dtype)
    b = (0.1 * torch.randn(hidden, generator=g)).to(device, w_dtype) if bias else None
    rs = torch.rand(rows, generator=g).to(device, dtype) if rowscale else None
    return x, res, rs, w, b


@pytest.mark.parametrize("chunks", ["", "1", "2", "4"])
@pytest.mark.parametrize("hidden", [1024, 1032, 2056, 4096])
@pytest.mark.parametrize("mix", ["bf16", "fp16", "bf16_res32", "bf16_w32", "fp16_res32_w32"])
@pytest.mark.parametrize("rms", [False, True])
def test_plain_forward_matches_reference_and_general(device, monkeypatch, chunks, hidden, mix, rms):
    if device == "cpu" and chunks:
        pytest.skip("the chunk setting is a CUDA knob")
    dtype = torch.float16 if mix.startswith("fp16") else torch.bfloat16
    res_dtype = torch.float32 if "res32" in mix else dtype
    w_dtype = torch.float32 if "w32" in mix else dtype
    x, res, rs, w, b = make(device, 19, hidden, dtype, res_dtype, w_dtype, bias=not rms, rowscale=False)
    monkeypatch.setenv("FLASH_ATTN_NORM_FWD_CHUNKS", chunks)
    y, a = run(x, res, rs, w, b, rms)
    y_ref, a_ref = reference(x, res, rs, w, b, 1e-5, rms)
    assert y.dtype == dtype and a.dtype == res_dtype
    # The kernel adds in fp32 and rounds once to the residual dtype.
    assert torch.equal(a, (x.float() + res.float()).to(res_dtype))
    torch.testing.assert_close(y.double(), y_ref, atol=TOL[dtype], rtol=TOL[dtype])
    monkeypatch.setenv("FLASH_ATTN_NORM_FWD_PLAIN", "0")
    y_gen, a_gen = run(x, res, rs, w, b, rms)
    assert torch.equal(a, a_gen)
    # Same formula in the same order; only fp32 contraction / reduction order may differ: at most
    # one step of the output dtype.
    torch.testing.assert_close(y.double(), y_gen.double(), atol=1e-6, rtol=8e-3 if dtype == torch.bfloat16 else 2e-3)


@pytest.mark.parametrize("chunks", ["", "1", "2", "4"])
@pytest.mark.parametrize("rms", [False, True])
def test_plain_rowscale_no_residual_and_fp32_residual_out(device, monkeypatch, chunks, rms):
    monkeypatch.setenv("FLASH_ATTN_NORM_FWD_CHUNKS", chunks)
    x, _, rs, w, b = make(device, 23, 4096, torch.bfloat16, None, torch.bfloat16, bias=True, rowscale=True, seed=1)
    for residual_in_fp32 in (False, True):
        y, a = run(x, None, rs, w, b, rms, residual_in_fp32)
        y_ref, a_ref = reference(x, None, rs, w, b, 1e-5, rms)
        assert a.dtype == (torch.float32 if residual_in_fp32 else torch.bfloat16)
        torch.testing.assert_close(a.double(), a_ref.to(a.dtype).double(), atol=0, rtol=0)
        torch.testing.assert_close(y.double(), y_ref, atol=2e-2, rtol=2e-2)


def fwd_bwd(x, res, w, b, rms, g, ga):
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in (x, res, w, b)]
    y, a = run(leaves[0], leaves[1], None, leaves[2], leaves[3], rms)
    return torch.autograd.grad((y, a), [t for t in leaves if t is not None], (g, ga))


@pytest.mark.parametrize("chunks", ["", "2", "4"])
@pytest.mark.parametrize("hidden", [1032, 2056, 4096])
@pytest.mark.parametrize("mix", ["bf16_w32", "fp16", "bf16_res32"])
@pytest.mark.parametrize("rms", [False, True])
def test_plain_forward_then_backward(device, monkeypatch, chunks, hidden, mix, rms):
    """The plain backward (FLASH_ATTN_NORM_BWD_PLAIN) against the reference and the general kernel;
    it also reads the forward's mean / rstd."""
    if device == "cpu" and chunks:
        pytest.skip("the chunk setting is a CUDA knob")
    monkeypatch.setenv("FLASH_ATTN_NORM_FWD_CHUNKS", chunks)
    dtype = torch.float16 if mix.startswith("fp16") else torch.bfloat16
    res_dtype = torch.float32 if "res32" in mix else dtype
    w_dtype = torch.float32 if "w32" in mix else dtype
    x, res, _, w, b = make(device, 17, hidden, dtype, res_dtype, w_dtype, bias=not rms, rowscale=False)
    g = torch.randn(x.shape, device=device).to(dtype)
    ga = torch.randn(x.shape, device=device).to(res_dtype)
    ours = fwd_bwd(x, res, w, b, rms, g, ga)
    ref_leaves = [t.detach().double().requires_grad_(True) for t in (x, res, w, b) if t is not None]
    y_ref, a_ref = reference(ref_leaves[0], ref_leaves[1], None, ref_leaves[2], None if rms else ref_leaves[3],
                             1e-5, rms)
    theirs = torch.autograd.grad((y_ref, a_ref), ref_leaves, (g.double(), ga.double()))
    monkeypatch.setenv("FLASH_ATTN_NORM_BWD_PLAIN", "0")
    general = fwd_bwd(x, res, w, b, rms, g, ga)
    for name, o, t, gen in zip(["dx", "dres", "dw", "db"], ours, theirs, general):
        scale = max(1.0, t.abs().max().item())
        torch.testing.assert_close(o.double() / scale, t / scale, atol=8e-2, rtol=8e-2, msg=lambda m: f"{name}: {m}")
        # Same arithmetic as the general kernel: at most a step of the 16-bit output from fp32
        # contraction differences.
        torch.testing.assert_close(o.double() / scale, gen.double() / scale, atol=1e-5, rtol=8e-3,
                                   msg=lambda m: f"{name} vs general: {m}")


@pytest.mark.parametrize("chunks", ["", "2"])
def test_plain_large_rows_grid(device, monkeypatch, chunks):
    """More rows than one wave of blocks, hidden 16384 (4 chunks x 512 threads or 2 chunks x 1024)."""
    if device != "cuda":
        pytest.skip("sizes for the GPU")
    monkeypatch.setenv("FLASH_ATTN_NORM_FWD_CHUNKS", chunks)
    x, res, _, w, b = make(device, 3000, 16384, torch.bfloat16, torch.bfloat16, torch.bfloat16, True, False)
    y, a = run(x, res, None, w, b, False)
    y_ref, a_ref = reference(x, res, None, w, b, 1e-5, False)
    torch.testing.assert_close(a.double(), a_ref.to(a.dtype).double(), atol=0, rtol=0)
    torch.testing.assert_close(y.double(), y_ref, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("hidden", [1024, 4096])
def test_plain_backward_many_rows_per_block(device, monkeypatch, hidden):
    """More rows than the backward's one-wave grid, so blocks loop over rows."""
    if device != "cuda":
        pytest.skip("sizes for the GPU")
    x, res, _, w, b = make(device, 1500, hidden, torch.bfloat16, torch.bfloat16, torch.bfloat16, True, False)
    g, ga = torch.randn_like(x), torch.randn_like(x)
    ours = fwd_bwd(x, res, w, b, False, g, ga)
    monkeypatch.setenv("FLASH_ATTN_NORM_BWD_PLAIN", "0")
    general = fwd_bwd(x, res, w, b, False, g, ga)
    for name, o, gen in zip(["dx", "dres", "dw", "db"], ours, general):
        scale = max(1.0, gen.abs().max().item())
        torch.testing.assert_close(o.double() / scale, gen.double() / scale, atol=1e-5, rtol=8e-3,
                                   msg=lambda m: f"{name} vs general: {m}")
