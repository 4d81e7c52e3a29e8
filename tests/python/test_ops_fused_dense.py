"""flash_attn.ops.fused_dense against PyTorch, forward and backward, on CPU (plain GEMMs) and CUDA
(cuBLASLt with fused epilogues for fp16/bf16). The tensor-parallel layers are in test_tp_ops.py."""

import pytest
import torch
import torch.nn.functional as F

from flash_attn.ops.fused_dense import FusedDense, FusedMLP, fused_dense_func, fused_mlp_func

TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def dtypes(device):
    return [torch.float32] if device == "cpu" else [torch.float16, torch.bfloat16]


def ref_act(pre, activation):
    if activation == "gelu_approx":
        return F.gelu(pre, approximate="tanh")
    if activation == "relu":
        return F.relu(pre)
    return F.relu(pre).square()


def close(a, b, dtype, name=""):
    scale = max(1.0, b.abs().max().item())
    tol = TOL[dtype]
    torch.testing.assert_close(a.float() / scale, b.float() / scale, atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("return_residual", [False, True])
@pytest.mark.parametrize("has_bias", [True, False])
def test_fused_dense(device, return_residual, has_bias):
    for dtype in dtypes(device):
        lin = FusedDense(64, 96, bias=has_bias, return_residual=return_residual, device=device, dtype=dtype)
        x = torch.randn(2, 9, 64, device=device, dtype=dtype, requires_grad=True)
        out = lin(x)
        if return_residual:
            out, res = out
            assert res is x or torch.equal(res, x)
        ref_x = x.detach().float().requires_grad_(True)
        ref_w = lin.weight.detach().float().requires_grad_(True)
        ref_b = lin.bias.detach().float().requires_grad_(True) if has_bias else None
        ref = F.linear(ref_x, ref_w, ref_b)
        close(out, ref, dtype, "out")
        g = torch.randn_like(out)
        params = [x, lin.weight] + ([lin.bias] if has_bias else [])
        refs = [ref_x, ref_w] + ([ref_b] if has_bias else [])
        if return_residual:
            g2 = torch.randn_like(x)
            ours = torch.autograd.grad((out, res), params, (g, g2))
            theirs = torch.autograd.grad((ref, ref_x), refs, (g.float(), g2.float()))
        else:
            ours = torch.autograd.grad(out, params, g)
            theirs = torch.autograd.grad(ref, refs, g.float())
        for name, o, t in zip(["dx", "dw", "db"], ours, theirs):
            close(o, t, dtype, name)


@pytest.mark.parametrize("activation", ["gelu_approx", "relu", "sqrelu"])
@pytest.mark.parametrize("checkpoint_lvl", [0, 1, 2])
def test_fused_mlp(device, activation, checkpoint_lvl):
    for dtype in dtypes(device):
        mlp = FusedMLP(64, 128, activation=activation, checkpoint_lvl=checkpoint_lvl, device=device, dtype=dtype)
        x = torch.randn(3, 8, 64, device=device, dtype=dtype, requires_grad=True)
        out = mlp(x)
        params = [x, mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias]
        refs = [p.detach().float().requires_grad_(True) for p in params]
        ref = F.linear(ref_act(F.linear(refs[0], refs[1], refs[2]), activation), refs[3], refs[4])
        close(out, ref, dtype, "out")
        g = torch.randn_like(out)
        ours = torch.autograd.grad(out, params, g)
        theirs = torch.autograd.grad(ref, refs, g.float())
        for name, o, t in zip(["dx", "dw1", "db1", "dw2", "db2"], ours, theirs):
            close(o, t, dtype, name)


def test_fused_mlp_no_bias_and_inference(device):
    for dtype in dtypes(device):
        w1 = torch.randn(128, 64, device=device, dtype=dtype) * 0.1
        w2 = torch.randn(64, 128, device=device, dtype=dtype) * 0.1
        x = torch.randn(5, 64, device=device, dtype=dtype)
        out = fused_mlp_func(x, w1, w2, save_pre_act=False)
        ref = F.linear(F.gelu(F.linear(x.float(), w1.float()), approximate="tanh"), w2.float())
        close(out, ref, dtype)
        out2 = fused_dense_func(x, w1)
        close(out2, F.linear(x.float(), w1.float()), dtype)


def test_cublaslt_path_is_used_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    from flash_attn import _C
    assert _C.gemm_epilogue_available(), "libcublasLt could not be loaded"
