"""Helpers shared by the test modules: input construction and the reference comparison."""

import torch

from reference import assert_close_rule, attention_ref

DTYPES_CPU = [torch.float32, torch.float16, torch.bfloat16]


def dtypes_for(device):
    return DTYPES_CPU if device == "cpu" else [torch.float16, torch.bfloat16]


def skip_unsupported_dtype(device, dtype):
    import pytest

    if device == "cuda" and dtype == torch.float32:
        pytest.skip("the CUDA backend takes fp16/bf16 only")


def rand(*shape, dtype, device, requires_grad=True):
    return torch.randn(*shape, dtype=dtype, device=device).requires_grad_(requires_grad)


def grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout, allow_unused=False)


def compare_to_reference(ours_out, ours_lse, inputs, ref_fn, dtype, dout=None, grad_inputs=None,
                         ours_grads=None, check_grads=True):
    """Checks out/lse (and grads) of ours against the fp64 reference with the tolerance rule.

    ref_fn(*tensors) -> (out, lse) computed in the dtype of its arguments. `inputs` are the leaf
    tensors given to ours; the fp64 and baseline runs use detached copies of them.
    """
    ref64 = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    base = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    out64, lse64 = ref_fn(*ref64)
    outb, lseb = ref_fn(*base)
    assert ours_out.shape == out64.shape, (ours_out.shape, out64.shape)
    assert ours_lse.shape == lse64.shape, (ours_lse.shape, lse64.shape)
    assert ours_lse.dtype == torch.float32
    assert_close_rule("out", ours_out, outb, out64, dtype)
    assert_close_rule("softmax_lse", ours_lse, lseb, lse64, dtype)
    if not check_grads:
        return
    if dout is None:
        dout = torch.randn_like(ours_out)
    leaves = [i for i, x in enumerate(inputs) if x.requires_grad]
    if ours_grads is None:
        ours_grads = grads(ours_out, [inputs[i] for i in leaves], dout)
    g64 = grads(out64, [ref64[i] for i in leaves], dout.double())
    gb = grads(outb, [base[i] for i in leaves], dout)
    for n, (a, b, c) in enumerate(zip(ours_grads, gb, g64)):
        assert a.shape == c.shape, (n, a.shape, c.shape)
        assert_close_rule(f"grad[{leaves[n]}]", a, b, c, dtype, factor=3.0)


def mha_ref(**kw):
    """ref_fn for flash_attn_func-like calls: (q, k, v[, alibi]) -> (out, lse)."""
    def fn(q, k, v):
        out, lse, _ = attention_ref(q, k, v, **kw)
        return out, lse
    return fn
