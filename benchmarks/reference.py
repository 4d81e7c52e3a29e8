"""Naive attention, written as the math reads: the correctness yardstick for the demo.

Run in float64 it is the "true" answer; run in the input dtype (no upcast) it shows how much error
plain PyTorch makes in that precision, which sets the tolerance (flash-attn's test convention:
ours may be at most a small multiple of the naive low-precision error away from float64).
"""
import torch


def naive_attention(q, k, v, causal, scale, compute_dtype):
    """q (b, sq, hq, d), k/v (b, sk, hkv, d); causal aligned bottom-right as in flash-attn 2.8."""
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qc, kc, vc = (t.to(compute_dtype) for t in (q, k, v))
    if hq != hkv:  # GQA: q head h reads kv head h // (hq / hkv)
        kc = kc.repeat_interleave(hq // hkv, dim=2)
        vc = vc.repeat_interleave(hq // hkv, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", qc, kc) * scale
    if causal:
        visible = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if causal and sq > sk:  # rows that see no key: flash-attn outputs 0 there, softmax gives NaN
        probs = torch.nan_to_num(probs, nan=0.0)
    return torch.einsum("bhqk,bkhd->bqhd", probs, vc)


def forward_backward(fn, q, k, v, dout):
    """Run fn on fresh leaf copies of q, k, v; return (out, dq, dk, dv) detached."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, leaves, dout.to(out.dtype))
    return (out.detach(),) + tuple(g.detach() for g in grads)
