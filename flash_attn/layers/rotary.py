"""Rotary position embeddings (RoPE), flash-attn 2.8 API.

The rotation runs in the C++ kernel flash_attn._C.apply_rotary (CPU backend or the CUDA kernel of
csrc/rotary/). The backward of a rotation by theta is the rotation by -theta (the matrix is
orthogonal), so every autograd Function below calls the same kernel with conjugate=True.
apply_rotary_emb_torch is the pure-PyTorch reference; it also stands in for the kernel when the
loaded extension was built without the rotary binding.
"""

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .. import _C
from .. import _backend as B

# ---- pure-PyTorch reference ---------------------------------------------------------------------


def rotate_half(x: Tensor, interleaved: bool = False) -> Tensor:
    """The partner of every dim, with the sign of its sin term: (x0, x1) -> (-x1, x0) per pair."""
    if not interleaved:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rotary_emb_torch(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False) -> Tensor:
    """Reference: x (batch, seqlen, nheads, headdim), cos/sin (seqlen, rotary_dim / 2)."""
    ro_dim = cos.shape[-1] * 2
    assert ro_dim <= x.shape[-1]
    if interleaved:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    else:
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    x_ro = x[..., :ro_dim]
    return torch.cat([x_ro * cos + rotate_half(x_ro, interleaved) * sin, x[..., ro_dim:]], dim=-1)


def _positions(seqlen_offsets, batch: int, seqlen: int, device) -> Tensor:
    """(batch, seqlen) int64 positions: seqlen_offsets[b] + s."""
    offs = seqlen_offsets if isinstance(seqlen_offsets, Tensor) else torch.tensor(seqlen_offsets)
    offs = offs.to(device=device, dtype=torch.long).reshape(-1, 1).expand(batch, 1)
    return offs + torch.arange(seqlen, device=device).unsqueeze(0)


def _apply_rotary_torch(x, cos, sin, seqlen_offsets, cu_seqlens, max_seqlen, interleaved, conjugate) -> Tensor:
    """Out-of-place reference with the kernel's full semantics (offsets, varlen, identity past
    the table, fp32 math rounded once to x's dtype)."""
    seqlen_ro = cos.shape[0]
    c_tab = torch.cat([cos.float(), cos.new_ones(1, cos.shape[1], dtype=torch.float32)])  # row seqlen_ro: identity
    s_tab = torch.cat([sin.float(), sin.new_zeros(1, sin.shape[1], dtype=torch.float32)])
    if conjugate:
        s_tab = -s_tab
    if cu_seqlens is None:
        batch, seqlen = x.shape[:2]
        pos = _positions(seqlen_offsets, batch, seqlen, x.device)
        pos = torch.where(pos < seqlen_ro, pos, seqlen_ro).clamp_min(0)
        out = apply_rotary_emb_torch(x.float(), c_tab[pos], s_tab[pos], interleaved)
        return out.to(x.dtype)
    batch = cu_seqlens.shape[0] - 1
    out = x.float().clone()
    for b in range(batch):
        start, end = int(cu_seqlens[b]), int(cu_seqlens[b + 1])
        pos = _positions(seqlen_offsets[b : b + 1] if isinstance(seqlen_offsets, Tensor) else seqlen_offsets,
                         1, end - start, x.device)[0]
        pos = torch.where(pos < seqlen_ro, pos, seqlen_ro).clamp_min(0)
        out[start:end] = apply_rotary_emb_torch(x[start:end].float().unsqueeze(0), c_tab[pos], s_tab[pos],
                                                interleaved)[0]
    return out.to(x.dtype)


# ---- kernel call --------------------------------------------------------------------------------


def _has_kernel() -> bool:
    return hasattr(_C, "apply_rotary")


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, seqlen_offsets: Union[int, Tensor] = 0,
                 cu_seqlens: Optional[Tensor] = None, max_seqlen: Optional[int] = None,
                 interleaved: bool = False, inplace: bool = False, conjugate: bool = False) -> Tensor:
    """Rotates x (batch, seqlen, nheads, headdim), or (total, nheads, headdim) with cu_seqlens, by
    cos/sin (seqlen_ro, rotary_dim / 2). Returns x itself when inplace, else a new tensor."""
    is_varlen = cu_seqlens is not None
    if is_varlen:
        if max_seqlen is None:
            raise ValueError("max_seqlen must be given with cu_seqlens")
        if x.dim() != 3:
            raise ValueError(f"x: expected (total, nheads, headdim) with cu_seqlens, got shape {tuple(x.shape)}")
        batch, seqlen = cu_seqlens.shape[0] - 1, int(max_seqlen)
    else:
        if x.dim() != 4:
            raise ValueError(f"x: expected (batch, seqlen, nheads, headdim), got shape {tuple(x.shape)}")
        batch, seqlen = x.shape[0], x.shape[1]
    if cos.shape != sin.shape or cos.dim() != 2:
        raise ValueError(f"cos, sin: expected equal (seqlen_ro, rotary_dim / 2) shapes, got "
                         f"{tuple(cos.shape)} and {tuple(sin.shape)}")
    if cos.dtype != sin.dtype or cos.dtype not in B._DTYPES:
        raise TypeError(f"cos, sin: need one of float32, float16, bfloat16 for both, got {cos.dtype} and {sin.dtype}")
    if cos.device != x.device or sin.device != x.device:
        raise ValueError(f"cos, sin: must be on x's device ({x.device}), got {cos.device} and {sin.device}")
    seqlen_ro, rotary_dim = cos.shape[0], 2 * cos.shape[1]
    headdim = x.shape[-1]
    if rotary_dim > headdim:
        raise ValueError(f"rotary_dim ({rotary_dim}) must be <= headdim ({headdim})")
    if isinstance(seqlen_offsets, Tensor):
        if seqlen_offsets.shape != (batch,) or seqlen_offsets.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"seqlen_offsets: expected an int32/int64 tensor of shape ({batch},)")
    elif not is_varlen and seqlen_offsets + seqlen > seqlen_ro:
        raise ValueError(f"seqlen_offsets + seqlen ({seqlen_offsets + seqlen}) must be <= seqlen_ro ({seqlen_ro})")

    if x.numel() == 0:
        return x if inplace else x.clone()
    if not _has_kernel():
        out = _apply_rotary_torch(x, cos, sin, seqlen_offsets, cu_seqlens, max_seqlen, interleaved, conjugate)
        return x.copy_(out) if inplace else out

    # The kernel needs a unit-stride last dim everywhere; anything else goes through a copy.
    src = x if x.stride(-1) == 1 else x.contiguous()
    if inplace and src is x:
        out = x
    else:
        out = torch.empty_like(src)  # keeps src's strides when src is dense, else contiguous
        if out.stride(-1) != 1:
            out = torch.empty(src.shape, dtype=src.dtype, device=src.device)
    cos = cos if cos.stride(-1) == 1 else cos.contiguous()
    sin = sin if sin.stride(-1) == 1 else sin.contiguous()

    p = _C.RotaryParams()
    _set_placement(p, src)
    p.x = src.data_ptr()
    p.x_batch_stride, p.x_row_stride, p.x_head_stride = B.strides3(src)
    p.out = out.data_ptr()
    p.out_batch_stride, p.out_row_stride, p.out_head_stride = B.strides3(out)
    p.batch, p.seqlen, p.nheads, p.headdim = batch, seqlen, x.shape[-2], headdim
    keep_alive = []
    if is_varlen:
        cu = cu_seqlens.to(device=x.device, dtype=torch.int32).contiguous()
        keep_alive.append(cu)
        p.cu_seqlens = cu.data_ptr()
    p.cos, p.sin = cos.data_ptr(), sin.data_ptr()
    p.cos_dtype = B._DTYPES[cos.dtype]
    p.cos_row_stride, p.sin_row_stride = cos.stride(0), sin.stride(0)
    p.seqlen_ro, p.rotary_dim = seqlen_ro, rotary_dim
    p.interleaved, p.conjugate = bool(interleaved), bool(conjugate)
    if isinstance(seqlen_offsets, Tensor):
        offs = seqlen_offsets.to(device=x.device, dtype=torch.int32).contiguous()
        keep_alive.append(offs)
        p.seqlen_offsets = offs.data_ptr()
    else:
        p.seqlen_offset = int(seqlen_offsets)
    _C.apply_rotary(p, B.stream_of(src))
    if inplace and out is not x:
        x.copy_(out)
        return x
    return out


def _set_placement(p, x: Tensor) -> None:
    """device, device_index and dtype of the kernel call, from x."""
    if x.dtype not in B._DTYPES:
        raise TypeError(f"x: dtype {x.dtype} is not supported (float32, float16, bfloat16)")
    p.dtype = B._DTYPES[x.dtype]
    if x.device.type == "cuda":
        p.device = _C.Device.cuda
        p.device_index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    elif x.device.type == "cpu":
        p.device = _C.Device.cpu
    else:
        raise ValueError(f"x: device {x.device} is not supported (cpu or cuda)")


# ---- autograd Functions -------------------------------------------------------------------------


def _rotated_in_place(ctx, t: Tensor) -> None:
    """Records that forward rotated input t in place. mark_dirty lets autograd rebase views
    correctly (q and kv are views of one qkv projection in MHA); a leaf that requires grad
    cannot be marked dirty, and flash-attn accepts it, so it is left unmarked as flash-attn does
    (the returned alias still carries this Function's backward)."""
    if not (t.is_leaf and t.requires_grad):
        ctx.mark_dirty(t)


class ApplyRotaryEmb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
                max_seqlen=None):
        out = apply_rotary(x, cos, sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens,
                           max_seqlen=max_seqlen, interleaved=interleaved, inplace=inplace)
        if isinstance(seqlen_offsets, int):
            ctx.save_for_backward(cos, sin, cu_seqlens)
            ctx.seqlen_offsets = seqlen_offsets
        else:
            ctx.save_for_backward(cos, sin, cu_seqlens, seqlen_offsets)
            ctx.seqlen_offsets = None
        ctx.interleaved, ctx.inplace, ctx.max_seqlen = interleaved, inplace, max_seqlen
        if inplace:
            _rotated_in_place(ctx, x)
            return x
        return out

    @staticmethod
    def backward(ctx, do):
        if ctx.seqlen_offsets is None:
            cos, sin, cu_seqlens, seqlen_offsets = ctx.saved_tensors
        else:
            cos, sin, cu_seqlens = ctx.saved_tensors
            seqlen_offsets = ctx.seqlen_offsets
        dx = apply_rotary(do, cos, sin, seqlen_offsets=seqlen_offsets, cu_seqlens=cu_seqlens,
                          max_seqlen=ctx.max_seqlen, interleaved=ctx.interleaved, inplace=False, conjugate=True)
        return dx, None, None, None, None, None, None, None


def apply_rotary_emb(x, cos, sin, interleaved=False, inplace=False, seqlen_offsets: Union[int, Tensor] = 0,
                     cu_seqlens: Optional[Tensor] = None, max_seqlen: Optional[int] = None):
    """
    x: (batch, seqlen, nheads, headdim), or (total_seqlen, nheads, headdim) with cu_seqlens.
    cos, sin: (seqlen_rotary, rotary_dim / 2); rotary_dim <= headdim.
    interleaved: rotate pairs (2i, 2i + 1) (GPT-J) instead of (i, i + rotary_dim / 2) (GPT-NeoX).
    inplace: rotate x itself.
    seqlen_offsets: (batch,) tensor or int; token s of sequence b uses row seqlen_offsets[b] + s
        of cos/sin (inference with a KV cache).
    cu_seqlens: (batch + 1,) int32 with max_seqlen, for varlen x.
    Returns (batch, seqlen, nheads, headdim) or (total_seqlen, nheads, headdim); dims past
    rotary_dim are copied unchanged.
    """
    return ApplyRotaryEmb.apply(x, cos, sin, interleaved, inplace, seqlen_offsets, cu_seqlens, max_seqlen)


# flash-attn's older name.
apply_rotary_emb_func = apply_rotary_emb


def _split_qk(qkv: Tensor, num_heads_q: Optional[int]) -> Tuple[Tensor, Tensor]:
    """q and k views of a packed qkv: (b, s, 3, h, d) or (b, s, h_q + 2 h_k, d)."""
    if qkv.dim() == 5:
        return qkv[:, :, 0], qkv[:, :, 1]
    if num_heads_q is None:
        raise ValueError("num_heads_q must be given for a (batch, seqlen, nheads_q + 2 * nheads_k, d) qkv")
    num_heads_k = (qkv.shape[2] - num_heads_q) // 2
    if num_heads_q + 2 * num_heads_k != qkv.shape[2]:
        raise ValueError(f"qkv: {qkv.shape[2]} heads is not num_heads_q ({num_heads_q}) + 2 * nheads_k")
    return qkv[:, :, :num_heads_q], qkv[:, :, num_heads_q : num_heads_q + num_heads_k]


def _rotate_qk_(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q, conjugate):
    """Rotates the q and k parts of qkv in place (one kernel call when they share cos/sin and
    form one strided block)."""
    if cos_k is None and sin_k is None and qkv.is_contiguous():
        if qkv.dim() == 5:
            batch, seqlen, _, nheads, headdim = qkv.shape
            qk = qkv[:, :, :2].reshape(batch, seqlen, 2 * nheads, headdim)  # a view: qkv is contiguous
        else:
            q, k = _split_qk(qkv, num_heads_q)
            qk = qkv[:, :, : q.shape[2] + k.shape[2]]
        apply_rotary(qk, cos, sin, seqlen_offsets=seqlen_offsets, interleaved=interleaved, inplace=True,
                     conjugate=conjugate)
        return
    cos_k = cos if cos_k is None else cos_k
    sin_k = sin if sin_k is None else sin_k
    q, k = _split_qk(qkv, num_heads_q)
    apply_rotary(q, cos, sin, seqlen_offsets, interleaved=interleaved, inplace=True, conjugate=conjugate)
    apply_rotary(k, cos_k, sin_k, seqlen_offsets, interleaved=interleaved, inplace=True, conjugate=conjugate)


class ApplyRotaryEmbQKV_(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cos, sin, cos_k=None, sin_k=None, interleaved=False, seqlen_offsets=0, num_heads_q=None):
        _rotate_qk_(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q, conjugate=False)
        if isinstance(seqlen_offsets, int):
            ctx.save_for_backward(cos, sin, cos_k, sin_k)
            ctx.seqlen_offsets = seqlen_offsets
        else:
            ctx.save_for_backward(cos, sin, cos_k, sin_k, seqlen_offsets)
            ctx.seqlen_offsets = None
        ctx.interleaved, ctx.num_heads_q = interleaved, num_heads_q
        _rotated_in_place(ctx, qkv)
        return qkv

    @staticmethod
    def backward(ctx, dqkv):
        if ctx.seqlen_offsets is None:
            cos, sin, cos_k, sin_k, seqlen_offsets = ctx.saved_tensors
        else:
            cos, sin, cos_k, sin_k = ctx.saved_tensors
            seqlen_offsets = ctx.seqlen_offsets
        # The incoming gradient may be shared with other nodes: rotate a private copy.
        dqkv = dqkv.clone(memory_format=torch.contiguous_format)
        _rotate_qk_(dqkv, cos, sin, cos_k, sin_k, ctx.interleaved, seqlen_offsets, ctx.num_heads_q, conjugate=True)
        return dqkv, None, None, None, None, None, None, None


def apply_rotary_emb_qkv_(qkv, cos, sin, cos_k=None, sin_k=None, interleaved=False,
                          seqlen_offsets: Union[int, Tensor] = 0, num_heads_q: Optional[int] = None):
    """
    qkv: (batch, seqlen, 3, nheads, headdim), or (batch, seqlen, num_heads_q + 2 * num_heads_k,
        headdim) with num_heads_q (GQA/MQA).
    cos, sin: (seqlen, rotary_dim / 2) for q; cos_k, sin_k for k (default: the same; XPos differs).
    Rotates q and k in place and returns qkv.
    """
    return ApplyRotaryEmbQKV_.apply(qkv, cos, sin, cos_k, sin_k, interleaved, seqlen_offsets, num_heads_q)


class ApplyRotaryEmbKV_(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kv, cos, sin, interleaved=False, seqlen_offsets=0):
        apply_rotary(kv[:, :, 0], cos, sin, seqlen_offsets=seqlen_offsets, interleaved=interleaved, inplace=True)
        if isinstance(seqlen_offsets, int):
            ctx.save_for_backward(cos, sin)
            ctx.seqlen_offsets = seqlen_offsets
        else:
            ctx.save_for_backward(cos, sin, seqlen_offsets)
            ctx.seqlen_offsets = None
        ctx.interleaved = interleaved
        _rotated_in_place(ctx, kv)
        return kv

    @staticmethod
    def backward(ctx, dkv):
        if ctx.seqlen_offsets is None:
            cos, sin, seqlen_offsets = ctx.saved_tensors
        else:
            cos, sin = ctx.saved_tensors
            seqlen_offsets = ctx.seqlen_offsets
        dkv = dkv.clone(memory_format=torch.contiguous_format)
        apply_rotary(dkv[:, :, 0], cos, sin, seqlen_offsets=seqlen_offsets, interleaved=ctx.interleaved,
                     inplace=True, conjugate=True)
        return dkv, None, None, None, None


def apply_rotary_emb_kv_(kv, cos, sin, interleaved=False, seqlen_offsets: Union[int, Tensor] = 0):
    """
    kv: (batch, seqlen, 2, nheads, headdim). Rotates k (kv[:, :, 0]) in place and returns kv.
    """
    return ApplyRotaryEmbKV_.apply(kv, cos, sin, interleaved, seqlen_offsets)


# ---- module -------------------------------------------------------------------------------------


class RotaryEmbedding(torch.nn.Module):
    """RoPE (Su et al., RoFormer) with an optional XPos scale (Sun et al.), flash-attn 2.8 semantics.

    The cos/sin tables are cached in the input's dtype and device and regrown when a longer
    sequence arrives. pos_idx_in_fp32 computes positions and frequencies in fp32 even when the
    module was cast to a 16-bit dtype (a bf16 position index loses integers past 256).
    scale_base != None enables XPos: q is scaled by scale^(pos / scale_base), k by its inverse.
    """

    def __init__(self, dim: int, base: float = 10000.0, interleaved: bool = False,
                 scale_base: Optional[float] = None, pos_idx_in_fp32: bool = True, device=None):
        super().__init__()
        self.dim = dim
        self.base = float(base)
        self.pos_idx_in_fp32 = pos_idx_in_fp32
        self.register_buffer("inv_freq", self._compute_inv_freq(device), persistent=False)
        self.interleaved = interleaved
        self.scale_base = scale_base
        scale = ((torch.arange(0, dim, 2, device=device, dtype=torch.float32) + 0.4 * dim) / (1.4 * dim)
                 if scale_base is not None else None)
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached = None
        self._sin_cached = None
        self._cos_k_cached = None
        self._sin_k_cached = None

    def _compute_inv_freq(self, device=None) -> Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def _update_cos_sin_cache(self, seqlen: int, device=None, dtype=None) -> None:
        # Rebuilt when the sequence grows, on a new device or dtype, or when training starts after
        # an inference-mode pass (inference tensors cannot be saved for backward).
        if (seqlen > self._seq_len_cached or self._cos_cached is None or self._cos_cached.device != device
                or self._cos_cached.dtype != dtype or (self.training and self._cos_cached.is_inference())):
            self._seq_len_cached = seqlen
            if self.pos_idx_in_fp32:
                t = torch.arange(seqlen, device=device, dtype=torch.float32)
                inv_freq = (self.inv_freq if self.inv_freq.dtype == torch.float32
                            else self._compute_inv_freq(device=device))
            else:
                t = torch.arange(seqlen, device=device, dtype=self.inv_freq.dtype)
                inv_freq = self.inv_freq
            freqs = torch.outer(t, inv_freq.to(device=t.device))
            if self.scale is None:
                self._cos_cached = torch.cos(freqs).to(dtype)
                self._sin_cached = torch.sin(freqs).to(dtype)
            else:
                power = (torch.arange(seqlen, dtype=self.scale.dtype, device=self.scale.device)
                         - seqlen // 2) / self.scale_base
                scale = self.scale.to(device=power.device) ** power.unsqueeze(-1)
                scale = scale.to(device=freqs.device)
                self._cos_cached = (torch.cos(freqs) * scale).to(dtype)
                self._sin_cached = (torch.sin(freqs) * scale).to(dtype)
                self._cos_k_cached = (torch.cos(freqs) / scale).to(dtype)
                self._sin_k_cached = (torch.sin(freqs) / scale).to(dtype)

    def forward(self, qkv: Tensor, kv: Optional[Tensor] = None, seqlen_offset: Union[int, Tensor] = 0,
                max_seqlen: Optional[int] = None, num_heads_q: Optional[int] = None):
        """
        qkv: (batch, seqlen, 3, nheads, headdim), or (batch, seqlen, num_heads_q + 2 * num_heads_k,
            headdim) with num_heads_q, when kv is None; else q (batch, seqlen, nheads, headdim).
            Extension: a 4-D tensor with neither kv nor num_heads_q is rotated as q alone.
        kv: (batch, seqlen, 2, nheads, headdim).
        seqlen_offset: int, or (batch,) tensor (then pass max_seqlen so the cache covers every
            position). Used in inference with a KV cache.
        Rotates in place; returns qkv, or (q, kv) when kv is given.
        """
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        if kv is None and qkv.dim() == 4 and num_heads_q is None:
            return apply_rotary_emb_func(qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved,
                                         inplace=True, seqlen_offsets=seqlen_offset)
        if kv is None:
            return apply_rotary_emb_qkv_(qkv, self._cos_cached, self._sin_cached, self._cos_k_cached,
                                         self._sin_k_cached, interleaved=self.interleaved,
                                         seqlen_offsets=seqlen_offset, num_heads_q=num_heads_q)
        q = apply_rotary_emb_func(qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved,
                                  inplace=True, seqlen_offsets=seqlen_offset)
        cos_k = self._cos_cached if self.scale is None else self._cos_k_cached
        sin_k = self._sin_cached if self.scale is None else self._sin_k_cached
        kv = apply_rotary_emb_kv_(kv, cos_k, sin_k, interleaved=self.interleaved, seqlen_offsets=seqlen_offset)
        return q, kv
