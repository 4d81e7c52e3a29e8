"""flash_attn.layers.rotary against an independent fp64 PyTorch reference, forward and backward.

Runs on CPU always and on CUDA when present (the `device` fixture of conftest.py). When the
loaded extension has the rotary binding (flash_attn._C.apply_rotary) every call below goes through
the C++ kernel; otherwise through the pure-PyTorch fallback (test_kernel_binding_is_used says which).
"""

import math

import pytest
import torch

from flash_attn import _C
from flash_attn.layers import rotary as R
from flash_attn.layers.rotary import (
    RotaryEmbedding,
    apply_rotary_emb,
    apply_rotary_emb_func,
    apply_rotary_emb_kv_,
    apply_rotary_emb_qkv_,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = {torch.float32: 1e-6, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}


# ---- reference --------------------------------------------------------------------------------


def ref_rotary(x, cos, sin, positions, interleaved, conjugate=False):
    """x (..., s, h, d) fp64; positions (..., s) long; rows past the table rotate by 0."""
    half = cos.shape[1]
    rd = 2 * half
    cos = torch.cat([cos.double(), torch.ones(1, half, dtype=torch.float64, device=cos.device)])
    sin = torch.cat([sin.double(), torch.zeros(1, half, dtype=torch.float64, device=sin.device)])
    positions = positions.clamp(max=cos.shape[0] - 1)
    c, s = cos[positions].unsqueeze(-2), sin[positions].unsqueeze(-2)
    if conjugate:
        s = -s
    xr = x[..., :rd]
    x0, x1 = (xr[..., 0::2], xr[..., 1::2]) if interleaved else (xr[..., :half], xr[..., half:])
    o0, o1 = x0 * c - x1 * s, x0 * s + x1 * c
    out = torch.stack((o0, o1), dim=-1).flatten(-2) if interleaved else torch.cat((o0, o1), dim=-1)
    return torch.cat((out, x[..., rd:]), dim=-1)


def positions_for(offsets, batch, seqlen, device):
    offs = offsets if isinstance(offsets, torch.Tensor) else torch.full((batch,), offsets)
    return offs.to(device=device, dtype=torch.long)[:, None] + torch.arange(seqlen, device=device)[None, :]


def make_cos_sin(seqlen_ro, rotary_dim, dtype, device):
    angle = torch.rand(seqlen_ro, rotary_dim // 2, device=device) * 2 * math.pi
    return torch.cos(angle).to(dtype), torch.sin(angle).to(dtype)


def assert_close(ours, ref64, dtype, factor=2.0):
    """ours may differ from the exact value by the rounding of one output (plus the rounding of
    inputs for gradients, hence factor)."""
    scale = ref64.abs().max().item() + 1.0
    err = (ours.double() - ref64).abs().max().item()
    assert err <= factor * EPS[dtype] * scale, f"max error {err} > {factor} * {EPS[dtype]} * {scale}"


# ---- apply_rotary_emb -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("rotary_fraction", [1.0, 0.5])
@pytest.mark.parametrize("offsets_kind", ["zero", "int", "tensor"])
def test_apply_rotary_emb(device, dtype, interleaved, inplace, rotary_fraction, offsets_kind):
    batch, seqlen, nheads, headdim = 2, 37, 3, 64
    rotary_dim = int(rotary_fraction * headdim)
    seqlen_ro = 64
    x = torch.randn(batch, seqlen, nheads, headdim, dtype=dtype, device=device)
    cos, sin = make_cos_sin(seqlen_ro, rotary_dim, dtype, device)
    offsets = {"zero": 0, "int": 11,
               "tensor": torch.tensor([5, 27], dtype=torch.int32, device=device)}[offsets_kind]
    pos = positions_for(offsets, batch, seqlen, device)

    x_ref = x.detach().double().requires_grad_()
    out_ref = ref_rotary(x_ref, cos, sin, pos, interleaved)

    leaf = x.detach().clone().requires_grad_()
    # In place on a non-leaf and (as flash-attn allows) on a leaf that requires grad.
    x_in = leaf.clone() if inplace and offsets_kind != "int" else leaf
    out = apply_rotary_emb(x_in, cos, sin, interleaved=interleaved, inplace=inplace, seqlen_offsets=offsets)
    if inplace:
        assert out.data_ptr() == x_in.data_ptr()
    assert out.shape == x.shape and out.dtype == dtype
    assert_close(out, out_ref.detach(), dtype)
    # Dims past rotary_dim are copied exactly.
    assert torch.equal(out[..., rotary_dim:], x[..., rotary_dim:])

    dout = torch.randn_like(x)
    (g,) = torch.autograd.grad(out, leaf, dout)
    (g_ref,) = torch.autograd.grad(out_ref, x_ref, dout.double())
    assert_close(g, g_ref, dtype, factor=3.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("offsets_kind", ["int", "tensor"])
def test_apply_rotary_emb_varlen(device, dtype, interleaved, offsets_kind):
    seqlens = [5, 0, 17, 9]
    nheads, headdim, rotary_dim = 2, 32, 16
    cu = torch.tensor([0] + torch.tensor(seqlens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    total, max_seqlen = sum(seqlens), max(seqlens)
    x = torch.randn(total, nheads, headdim, dtype=dtype, device=device, requires_grad=True)
    cos, sin = make_cos_sin(24, rotary_dim, dtype, device)
    offsets = 3 if offsets_kind == "int" else torch.tensor([0, 4, 2, 20], dtype=torch.int32, device=device)
    out = apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=offsets, cu_seqlens=cu,
                           max_seqlen=max_seqlen)
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, dout)

    x64 = x.detach().double().requires_grad_()
    pieces = []
    for b, n in enumerate(seqlens):
        start = int(cu[b])
        off = offsets if isinstance(offsets, int) else offsets[b : b + 1]
        pos = positions_for(off, 1, n, device)[0]
        pieces.append(ref_rotary(x64[start : start + n], cos, sin, pos, interleaved))
    out_ref = torch.cat(pieces)
    (g_ref,) = torch.autograd.grad(out_ref, x64, dout.double())
    assert_close(out, out_ref.detach(), dtype)
    assert_close(g, g_ref, dtype, factor=3.0)


@pytest.mark.parametrize("layout", ["qkv_slice", "odd_headdim", "head_major", "cos_fp32", "cos_view"])
def test_apply_rotary_emb_layouts(device, layout):
    """Strided views, head dims that defeat 16-byte vectors, and fp32 tables with fp16 x."""
    dtype = torch.float16
    batch, seqlen, nheads = 2, 9, 4
    headdim, rotary_dim = (22, 10) if layout == "odd_headdim" else (64, 32)
    cos_dtype = torch.float32 if layout == "cos_fp32" else dtype
    cos, sin = make_cos_sin(seqlen, rotary_dim, cos_dtype, device)
    if layout == "cos_view":  # misaligned tables with a padded row stride
        cos = torch.cat([cos[:, :1], cos], dim=1)[:, 1:]
        sin = torch.cat([sin[:, :1], sin], dim=1)[:, 1:]
        assert cos.stride(0) == rotary_dim // 2 + 1
    if layout == "qkv_slice":
        base = torch.randn(batch, seqlen, 3, nheads, headdim, dtype=dtype, device=device)
        x = base[:, :, 1]
    elif layout == "head_major":
        x = torch.randn(batch, nheads, seqlen, headdim, dtype=dtype, device=device).transpose(1, 2)
    else:
        x = torch.randn(batch, seqlen, nheads, headdim, dtype=dtype, device=device)
    for interleaved in (False, True):
        out = apply_rotary_emb(x, cos, sin, interleaved=interleaved)
        ref = ref_rotary(x.double(), cos, sin, positions_for(0, batch, seqlen, device), interleaved)
        assert_close(out, ref, dtype)
        y = x.clone()
        apply_rotary_emb(y, cos, sin, interleaved=interleaved, inplace=True)
        assert_close(y, ref, dtype)


def test_positions_past_table_are_identity(device):
    x = torch.randn(2, 6, 2, 16, device=device)
    cos, sin = make_cos_sin(8, 16, torch.float32, device)
    offsets = torch.tensor([0, 5], dtype=torch.int32, device=device)  # second batch reaches row 10
    out = apply_rotary_emb(x, cos, sin, seqlen_offsets=offsets)
    assert torch.equal(out[1, 3:], x[1, 3:])
    ref = ref_rotary(x.double(), cos, sin, positions_for(offsets, 2, 6, device), False)
    assert_close(out, ref, torch.float32)


def test_empty_input(device):
    cos, sin = make_cos_sin(4, 8, torch.float32, device)
    x = torch.randn(0, 4, 2, 8, device=device, requires_grad=True)
    out = apply_rotary_emb(x, cos, sin)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_conjugate_inverts(device):
    x = torch.randn(3, 10, 2, 32, device=device)
    cos, sin = make_cos_sin(10, 32, torch.float32, device)
    for interleaved in (False, True):
        y = R.apply_rotary(x, cos, sin, interleaved=interleaved)
        back = R.apply_rotary(y, cos, sin, interleaved=interleaved, conjugate=True)
        torch.testing.assert_close(back, x, atol=1e-5, rtol=1e-5)


def test_apply_rotary_emb_errors(device):
    x = torch.randn(1, 4, 1, 16, device=device)
    cos, sin = make_cos_sin(4, 16, torch.float32, device)
    with pytest.raises(ValueError):
        apply_rotary_emb(x[..., :8], cos, sin)  # rotary_dim 16 > headdim 8
    with pytest.raises(ValueError):
        apply_rotary_emb(x, cos, sin, seqlen_offsets=1)  # needs 5 table rows
    with pytest.raises(ValueError):
        apply_rotary_emb(x, cos, sin[:, :4])
    assert apply_rotary_emb_func is apply_rotary_emb


def test_kernel_binding_is_used():
    """The public functions must use the C++ kernel whenever the extension provides it."""
    assert R._has_kernel() == hasattr(_C, "apply_rotary")
    if not R._has_kernel():
        pytest.skip("flash_attn._C was built without the rotary binding (pure-PyTorch fallback in use)")
    p = _C.RotaryParams()
    x = torch.randn(1, 2, 1, 8)
    cos, sin = make_cos_sin(2, 8, torch.float32, "cpu")
    p.x = p.out = x.data_ptr()
    p.batch, p.seqlen, p.nheads, p.headdim = 1, 2, 1, 8
    p.x_batch_stride = p.out_batch_stride = 16
    p.x_row_stride = p.out_row_stride = 8
    p.x_head_stride = p.out_head_stride = 8
    p.cos, p.sin, p.seqlen_ro = cos.data_ptr(), sin.data_ptr(), 2
    p.rotary_dim = 10  # > headdim
    with pytest.raises(ValueError, match="rotary_dim"):
        _C.apply_rotary(p)
    p.rotary_dim = 8
    ref = ref_rotary(x.double(), cos, sin, positions_for(0, 1, 2, "cpu"), False)
    _C.apply_rotary(p)
    assert_close(x, ref, torch.float32)


# ---- packed qkv / kv ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packing", ["qkv5", "gqa4", "xpos"])
@pytest.mark.parametrize("offsets_kind", ["int", "tensor"])
def test_apply_rotary_emb_qkv_(device, dtype, packing, offsets_kind):
    batch, seqlen, nheads, headdim, rotary_dim = 2, 13, 4, 32, 16
    nheads_k = 2
    cos, sin = make_cos_sin(20, rotary_dim, dtype, device)
    cos_k = sin_k = None
    if packing == "xpos":
        cos_k, sin_k = make_cos_sin(20, rotary_dim, dtype, device)
    if packing == "gqa4":
        shape, num_heads_q = (batch, seqlen, nheads + 2 * nheads_k, headdim), nheads
    else:
        shape, num_heads_q = (batch, seqlen, 3, nheads, headdim), None
    offsets = 4 if offsets_kind == "int" else torch.tensor([1, 7], dtype=torch.int32, device=device)
    pos = positions_for(offsets, batch, seqlen, device)

    leaf = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    qkv = leaf.clone()
    out = apply_rotary_emb_qkv_(qkv, cos, sin, cos_k, sin_k, seqlen_offsets=offsets, num_heads_q=num_heads_q)
    assert out.data_ptr() == qkv.data_ptr()

    x64 = leaf.detach().double().requires_grad_()
    ck, sk = (cos, sin) if cos_k is None else (cos_k, sin_k)
    if packing == "gqa4":
        q, k, v = x64[:, :, :nheads], x64[:, :, nheads : nheads + nheads_k], x64[:, :, nheads + nheads_k :]
        ref = torch.cat([ref_rotary(q, cos, sin, pos, False), ref_rotary(k, ck, sk, pos, False), v], dim=2)
    else:
        q, k, v = x64.unbind(2)
        ref = torch.stack([ref_rotary(q, cos, sin, pos, False), ref_rotary(k, ck, sk, pos, False), v], dim=2)
    assert_close(out, ref.detach(), dtype)
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, leaf, dout)
    (g_ref,) = torch.autograd.grad(ref, x64, dout.double())
    assert_close(g, g_ref, dtype, factor=3.0)


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rotary_emb_kv_(device, interleaved):
    batch, seqlen, nheads, headdim = 2, 11, 2, 16
    cos, sin = make_cos_sin(16, headdim, torch.float32, device)
    leaf = torch.randn(batch, seqlen, 2, nheads, headdim, device=device, requires_grad=True)
    kv = leaf.clone()
    out = apply_rotary_emb_kv_(kv, cos, sin, interleaved=interleaved, seqlen_offsets=5)
    x64 = leaf.detach().double().requires_grad_()
    pos = positions_for(5, batch, seqlen, device)
    ref = torch.stack([ref_rotary(x64[:, :, 0], cos, sin, pos, interleaved), x64[:, :, 1]], dim=2)
    assert_close(out, ref.detach(), torch.float32)
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, leaf, dout)
    (g_ref,) = torch.autograd.grad(ref, x64, dout.double())
    assert_close(g, g_ref, torch.float32)


# ---- RotaryEmbedding ------------------------------------------------------------------------------


def ref_tables(dim, seqlen, base=10000.0, scale_base=None):
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    freqs = torch.outer(torch.arange(seqlen, dtype=torch.float64), inv_freq)
    cos, sin = torch.cos(freqs), torch.sin(freqs)
    if scale_base is None:
        return cos, sin, cos, sin
    scale = (torch.arange(0, dim, 2, dtype=torch.float64) + 0.4 * dim) / (1.4 * dim)
    scale = scale ** ((torch.arange(seqlen, dtype=torch.float64) - seqlen // 2) / scale_base).unsqueeze(-1)
    return cos * scale, sin * scale, cos / scale, sin / scale


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("scale_base", [None, 512.0])
def test_rotary_embedding_module(device, interleaved, scale_base):
    batch, seqlen, nheads, headdim, dim = 2, 12, 2, 32, 16
    rot = RotaryEmbedding(dim, interleaved=interleaved, scale_base=scale_base, device=device)
    qkv = torch.randn(batch, seqlen, 3, nheads, headdim, device=device)
    out = rot(qkv.clone(), seqlen_offset=3)
    assert rot._seq_len_cached == seqlen + 3
    cq, sq, ck, sk = ref_tables(dim, seqlen + 3, scale_base=scale_base)
    pos = positions_for(3, batch, seqlen, device)
    q, k, v = qkv.double().unbind(2)
    ref = torch.stack([ref_rotary(q, cq.to(device), sq.to(device), pos, interleaved),
                       ref_rotary(k, ck.to(device), sk.to(device), pos, interleaved), v], dim=2)
    assert_close(out, ref, torch.float32, factor=20.0)

    # Separate q and kv, tensor offsets with max_seqlen: the cache grows to max_seqlen.
    offs = torch.tensor([0, 6], dtype=torch.int32, device=device)
    qq, kv = qkv[:, :, 0].clone(), qkv[:, :, 1:].clone()
    q_out, kv_out = rot(qq, kv, seqlen_offset=offs, max_seqlen=40)
    assert rot._seq_len_cached == 40
    cq, sq, ck, sk = ref_tables(dim, 40, scale_base=scale_base)
    pos = positions_for(offs, batch, seqlen, device)
    assert_close(q_out, ref_rotary(qkv[:, :, 0].double(), cq.to(device), sq.to(device), pos, interleaved),
                 torch.float32, factor=20.0)
    assert_close(kv_out[:, :, 0], ref_rotary(qkv[:, :, 1].double(), ck.to(device), sk.to(device), pos,
                                             interleaved), torch.float32, factor=20.0)
    assert torch.equal(kv_out[:, :, 1], qkv[:, :, 2])


def test_rotary_embedding_cache_dtype_and_growth(device):
    rot = RotaryEmbedding(8, device=device)
    x = torch.randn(1, 4, 3, 2, 8, device=device, dtype=torch.bfloat16)
    rot(x.clone())
    assert rot._cos_cached.dtype == torch.bfloat16 and rot._cos_cached.shape == (4, 4)
    rot(x.clone(), seqlen_offset=10)
    assert rot._cos_cached.shape == (14, 4)
    rot(x.clone(), seqlen_offset=2)  # shorter: cache kept
    assert rot._cos_cached.shape == (14, 4)
    # pos_idx_in_fp32: positions are exact even for a bf16 module.
    rot_bf16 = RotaryEmbedding(8, device=device).to(torch.bfloat16)
    rot_bf16._update_cos_sin_cache(600, device=torch.device(device), dtype=torch.float32)
    cos_ref, _, _, _ = ref_tables(8, 600)
    torch.testing.assert_close(rot_bf16._cos_cached.cpu().double(), cos_ref, atol=1e-4, rtol=0)
