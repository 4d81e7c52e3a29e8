"""flash_attn.losses.cross_entropy / flash_attn.ops.triton.cross_entropy against PyTorch, forward and
backward, on CPU and (when present) CUDA. The vocab-parallel split is in test_tp_ops.py."""

import pytest
import torch
import torch.nn.functional as F

from flash_attn.losses.cross_entropy import CrossEntropyLoss
from flash_attn.ops.triton.cross_entropy import cross_entropy_loss

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def ref_losses(logits, labels, smoothing, logit_scale, lse_square_scale, ignore_index):
    """fp64 reference: (loss per row incl. z-loss, z-loss per row)."""
    z = logit_scale * logits.double()
    ce = F.cross_entropy(z, labels, reduction="none", label_smoothing=smoothing, ignore_index=ignore_index)
    lse = torch.logsumexp(z, dim=-1)
    zl = (lse_square_scale * lse.square()).masked_fill(labels == ignore_index, 0.0)
    return ce + zl, zl


def make(device, dtype, rows, vocab, ignore_some=True):
    logits = (torch.randn(rows, vocab, device=device) * 3).to(dtype).requires_grad_(True)
    labels = torch.randint(0, vocab, (rows,), device=device)
    if ignore_some and rows > 2:
        labels[1] = -100
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("vocab", [7, 1003, 4096])
@pytest.mark.parametrize("smoothing,logit_scale,lse_square_scale", [(0.0, 1.0, 0.0), (0.1, 0.7, 1e-3)])
def test_losses_and_grad(device, dtype, vocab, smoothing, logit_scale, lse_square_scale):
    if device == "cuda" and dtype == torch.float32 and vocab == 7:
        pass  # fp32 runs on CUDA as well
    logits, labels = make(device, dtype, 33, vocab)
    loss, z_loss = cross_entropy_loss(logits, labels, label_smoothing=smoothing, logit_scale=logit_scale,
                                      lse_square_scale=lse_square_scale)
    ref_logits = logits.detach().double().requires_grad_(True)
    ref, ref_z = ref_losses(ref_logits, labels, smoothing, logit_scale, lse_square_scale, -100)
    assert loss.dtype == torch.float32 and loss.shape == (33,)
    tol = TOL[dtype]
    torch.testing.assert_close(loss.double(), ref, atol=tol * 10, rtol=tol)
    torch.testing.assert_close(z_loss.double(), ref_z, atol=tol, rtol=tol)
    assert loss[1].item() == 0.0 and z_loss[1].item() == 0.0
    g = torch.rand(33, device=device)
    (dl,) = torch.autograd.grad(loss, logits, g)
    (dref,) = torch.autograd.grad(ref, ref_logits, g.double())
    assert dl.dtype == dtype
    torch.testing.assert_close(dl.double(), dref, atol=tol, rtol=tol * 4)
    assert dl[1].abs().max().item() == 0.0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_reductions_and_z_loss(device, reduction):
    logits, labels = make(device, torch.float32, 17, 300)
    mod = CrossEntropyLoss(reduction=reduction, lse_square_scale=1e-2, return_z_loss=True)
    loss, z = mod(logits, labels)
    ref = torch.nn.CrossEntropyLoss(reduction=reduction)(logits.detach().double(), labels)
    lse = torch.logsumexp(logits.detach().double(), -1)
    zl = (1e-2 * lse.square()).masked_fill(labels == -100, 0.0)
    n = (labels != -100).sum()
    zref = {"mean": zl.sum() / n, "sum": zl.sum(), "none": zl}[reduction]
    torch.testing.assert_close(z.double(), zref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss.double(), ref + zref, atol=1e-4, rtol=1e-5)
    loss.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_inplace_backward_writes_into_logits(device):
    logits, labels = make(device, torch.float32, 9, 64)
    base = logits.detach().clone().requires_grad_(True)
    x = logits.detach().clone()
    leaf = x.clone().requires_grad_(True)
    inner = leaf * 1.0  # a non-leaf the backward may overwrite
    loss = CrossEntropyLoss(inplace_backward=True)(inner, labels)
    loss.backward()
    ref = CrossEntropyLoss()(base, labels)
    ref.backward()
    torch.testing.assert_close(leaf.grad, base.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(inner.detach(), base.grad, atol=1e-6, rtol=1e-5)  # the grad landed in place


def test_strided_logits_and_int32_labels(device):
    full = torch.randn(12, 260, device=device)
    logits = full[:, 3:259].requires_grad_(False).clone().requires_grad_(True)
    view = full[:, 3:259]  # row stride 260, unaligned start
    labels = torch.randint(0, 256, (12,), device=device, dtype=torch.int32)
    loss, _ = cross_entropy_loss(view, labels)
    ref = F.cross_entropy(logits.double(), labels.long(), reduction="none")
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)


def test_precomputed_lse(device):
    logits, labels = make(device, torch.float32, 8, 50)
    lse = torch.logsumexp(logits.detach(), -1)
    a, _ = cross_entropy_loss(logits, labels, precomputed_lse=lse)
    b, _ = cross_entropy_loss(logits, labels)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_errors(device):
    logits, labels = make(device, torch.float32, 4, 10)
    with pytest.raises(ValueError):
        cross_entropy_loss(logits, labels[:3])
    with pytest.raises(NotImplementedError):
        CrossEntropyLoss(reduction="max")


def test_empty_batch(device):
    logits = torch.randn(0, 10, device=device, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long, device=device)
    loss, z = cross_entropy_loss(logits, labels)
    assert loss.shape == (0,)
    loss.sum().backward()
    assert logits.grad.shape == (0, 10)


@pytest.mark.slow
def test_large_vocab_cuda():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    logits, labels = make("cuda", torch.bfloat16, 64, 256 * 1024)
    loss, _ = cross_entropy_loss(logits, labels, label_smoothing=0.1)
    ref = F.cross_entropy(logits.detach().float(), labels, reduction="none", label_smoothing=0.1)
    torch.testing.assert_close(loss, ref, atol=2e-2, rtol=1e-3)
    (dl,) = torch.autograd.grad(loss.sum(), logits)
    lf = logits.detach().float().requires_grad_(True)
    (dr,) = torch.autograd.grad(F.cross_entropy(lf, labels, reduction="sum", label_smoothing=0.1), lf)
    torch.testing.assert_close(dl.float(), dr, atol=1e-3, rtol=2e-2)
