"""The flash-attn 2.8 public API (signatures, defaults and return conventions) over our ops.

Return convention (2.8): `out`, or `(out, softmax_lse, S_dmask)` with return_attn_probs=True, where
S_dmask is None unless dropout_p > 0. On CUDA, head dims that are not a multiple of 8 are zero-padded
before the kernel and the outputs sliced back; softmax_scale defaults to the ORIGINAL head_dim^-0.5.
"""

import torch
import torch.nn.functional as F

from . import _backend as B
from . import _ops  # noqa: F401  (registers torch.ops.flash_attn.*)
from . import _validate as V
from ._kvcache import flash_attn_with_kvcache  # noqa: F401  (re-exported as in flash-attn)

_fwd_op = torch.ops.flash_attn._flash_attn_forward
_varlen_fwd_op = torch.ops.flash_attn._flash_attn_varlen_forward
_bwd_op = torch.ops.flash_attn._flash_attn_backward
_varlen_bwd_op = torch.ops.flash_attn._flash_attn_varlen_backward


def _padded_hdim(x: torch.Tensor) -> int:
    """Head dim the backend receives: the next multiple of 8 on CUDA, unchanged on CPU."""
    d = x.shape[-1]
    return d if (x.device.type != "cuda" or d % 8 == 0) else (d + 7) // 8 * 8


def _pad(x: torch.Tensor, d: int) -> torch.Tensor:
    return x if x.shape[-1] == d else F.pad(x, [0, d - x.shape[-1]])


def _prepare(q, k, v, varlen: bool, dropout_p, softmax_scale, window_size, alibi_slopes):
    """Shared argument handling of every entry point: checks, contiguity, defaults, padding."""
    ndim = 3 if varlen else 4
    V.check_attention_inputs(("q", "k", "v"), (q, k, v), ndim)
    dropout_p = V.check_dropout(dropout_p)
    window = V.check_window(window_size)
    alibi_slopes = V.check_alibi(alibi_slopes, q.device)
    if not varlen:
        V.check_fixed_shapes(q, k, v)
        V.check_alibi_shape(alibi_slopes, q.shape[0], q.shape[2])
    head_size_og = q.shape[-1]
    if softmax_scale is None:
        softmax_scale = head_size_og ** (-0.5)
    d = _padded_hdim(q)
    q, k, v = (_pad(V.maybe_contiguous(x), d) for x in (q, k, v))
    return q, k, v, dropout_p, float(softmax_scale), window, alibi_slopes, head_size_og


def _function_outputs(ctx, out, lse, probs, return_softmax):
    """What every autograd Function's forward returns: out, or (out, lse, S_dmask) with lse and
    S_dmask marked non-differentiable."""
    if not return_softmax:
        return out
    _mark_outputs(ctx, lse, probs)
    return out, lse, probs


def _mark_outputs(ctx, lse, probs):
    # Only called when lse/S_dmask are returned (dynamo rejects marking a single-tensor output's
    # unreturned intermediates).
    ctx.mark_non_differentiable(lse, probs)


def _finish(result, return_attn_probs, dropout_p):
    """The Functions always return S_dmask as a tensor (empty without dropout) because dynamo cannot
    trace a Function with a None output; 2.8's convention (None unless dropout_p > 0) is applied here."""
    if not return_attn_probs:
        return result
    out, lse, probs = result
    return out, lse, (probs if dropout_p > 0 else None)


# ---- fixed-length core -------------------------------------------------------------------------


class _AttnCore:
    """forward/backward of (b, s, h, d) q, k, v shared by the three fixed-length Functions."""

    @staticmethod
    def forward(ctx, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                deterministic, return_softmax, is_grad_enabled):
        is_grad = is_grad_enabled and ctx is not None
        q, k, v, dropout_p, softmax_scale, window, alibi_slopes, head_size_og = _prepare(
            q, k, v, False, dropout_p, softmax_scale, window_size, alibi_slopes)
        out_padded, lse, probs, rng_state = _fwd_op(
            q, k, v, dropout_p, softmax_scale, causal, window[0], window[1], softcap, alibi_slopes,
            return_softmax and dropout_p > 0, B.get_cuda_path())
        if is_grad:
            ctx.save_for_backward(q, k, v, out_padded, lse, rng_state, alibi_slopes)
            ctx.args = (dropout_p, softmax_scale, causal, window, softcap, deterministic, head_size_og)
        return out_padded[..., :head_size_og], lse, probs

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, rng_state, alibi_slopes = ctx.saved_tensors
        dropout_p, softmax_scale, causal, window, softcap, deterministic, head_size_og = ctx.args
        dout = _pad(V.maybe_contiguous(dout), q.shape[-1])
        dq, dk, dv = _bwd_op(dout, q, k, v, out, lse, dropout_p, softmax_scale, causal, window[0],
                             window[1], softcap, alibi_slopes, deterministic, rng_state, B.get_cuda_path())
        return dq[..., :head_size_og], dk[..., :head_size_og], dv[..., :head_size_og]


class FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                deterministic, return_softmax, is_grad_enabled):
        is_grad = is_grad_enabled and any(getattr(x, "requires_grad", False) for x in (q, k, v))
        out, lse, probs = _AttnCore.forward(ctx if is_grad else None, q, k, v, dropout_p, softmax_scale,
                                            causal, window_size, softcap, alibi_slopes, deterministic,
                                            return_softmax, is_grad_enabled)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _AttnCore.backward(ctx, dout)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None


class FlashAttnQKVPackedFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                deterministic, return_softmax, is_grad_enabled):
        V.check_tensor("qkv", qkv, 5)
        is_grad = is_grad_enabled and qkv.requires_grad
        q, k, v = qkv[:, :, 0].detach(), qkv[:, :, 1].detach(), qkv[:, :, 2].detach()
        out, lse, probs = _AttnCore.forward(ctx if is_grad else None, q, k, v, dropout_p, softmax_scale,
                                            causal, window_size, softcap, alibi_slopes, deterministic,
                                            return_softmax, is_grad_enabled)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _AttnCore.backward(ctx, dout)
        return torch.stack((dq, dk, dv), dim=2), None, None, None, None, None, None, None, None, None


class FlashAttnKVPackedFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, kv, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                deterministic, return_softmax, is_grad_enabled):
        V.check_tensor("kv", kv, 5)
        is_grad = is_grad_enabled and any(getattr(x, "requires_grad", False) for x in (q, kv))
        k, v = kv[:, :, 0].detach(), kv[:, :, 1].detach()
        out, lse, probs = _AttnCore.forward(ctx if is_grad else None, q, k, v, dropout_p, softmax_scale,
                                            causal, window_size, softcap, alibi_slopes, deterministic,
                                            return_softmax, is_grad_enabled)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _AttnCore.backward(ctx, dout)
        return dq, torch.stack((dk, dv), dim=2), None, None, None, None, None, None, None, None, None


# ---- variable-length core ----------------------------------------------------------------------


class _VarlenCore:
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                return_softmax, block_table, seqused_k=None):
        if block_table is None:
            prepared = _prepare(q, k, v, True, dropout_p, softmax_scale, window_size, alibi_slopes)
        else:
            prepared = _prepare_paged(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
        q, k, v, dropout_p, softmax_scale, window, alibi_slopes, head_size_og = prepared
        cu_seqlens_q = V.check_index_tensor("cu_seqlens_q", cu_seqlens_q, q.device)
        cu_seqlens_k = V.check_index_tensor("cu_seqlens_k", cu_seqlens_k, q.device)
        block_table = V.check_index_tensor("block_table", block_table, q.device, 2)
        seqused_k = V.check_index_tensor("seqused_k", seqused_k, q.device)
        V.check_varlen_shapes(q, k, v, cu_seqlens_q, cu_seqlens_k, block_table)
        V.check_alibi_shape(alibi_slopes, cu_seqlens_q.shape[0] - 1, q.shape[1])
        out_padded, lse, probs, rng_state = _varlen_fwd_op(
            q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), int(max_seqlen_k), dropout_p,
            softmax_scale, causal, window[0], window[1], softcap, alibi_slopes,
            return_softmax and dropout_p > 0, block_table, seqused_k, B.get_cuda_path())
        if ctx is not None:
            ctx.save_for_backward(q, k, v, out_padded, lse, cu_seqlens_q, cu_seqlens_k, rng_state, alibi_slopes)
            ctx.args = (int(max_seqlen_q), int(max_seqlen_k), dropout_p, softmax_scale, causal, window,
                        softcap, deterministic, head_size_og)
        return out_padded[..., :head_size_og], lse, probs

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, rng_state, alibi_slopes = ctx.saved_tensors
        (max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal, window, softcap, deterministic,
         head_size_og) = ctx.args
        dout = _pad(V.maybe_contiguous(dout), q.shape[-1])
        dq, dk, dv = _varlen_bwd_op(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                    max_seqlen_k, dropout_p, softmax_scale, causal, window[0], window[1],
                                    softcap, alibi_slopes, deterministic, rng_state, B.get_cuda_path())
        return dq[..., :head_size_og], dk[..., :head_size_og], dv[..., :head_size_og]


def _prepare_paged(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes):
    """Varlen with block_table: q is (total_q, h, d) while k/v are (num_pages, page_size, h_k, d)."""
    V.check_attention_inputs(("q",), (q,), 3)
    V.check_attention_inputs(("k", "v"), (k, v), 4)
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise TypeError(f"{name} must have the same dtype as q ({q.dtype}), got {x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} must be on the same device as q ({q.device}), got {x.device}")
    head_size_og = q.shape[-1]
    if softmax_scale is None:
        softmax_scale = head_size_og ** (-0.5)
    d = _padded_hdim(q)
    q, k, v = (_pad(V.maybe_contiguous(x), d) for x in (q, k, v))
    return (q, k, v, V.check_dropout(dropout_p), float(softmax_scale), V.check_window(window_size),
            V.check_alibi(alibi_slopes, q.device), head_size_og)


class FlashAttnVarlenFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                return_softmax, block_table, is_grad_enabled):
        is_grad = is_grad_enabled and any(getattr(x, "requires_grad", False) for x in (q, k, v))
        if cu_seqlens_k is None:
            cu_seqlens_k = cu_seqlens_q
        out, lse, probs = _VarlenCore.forward(ctx if is_grad else None, q, k, v, cu_seqlens_q, cu_seqlens_k,
                                              max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                                              window_size, softcap, alibi_slopes, deterministic,
                                              return_softmax, block_table)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _VarlenCore.backward(ctx, dout)
        return (dq, dk, dv) + (None,) * 14


class FlashAttnVarlenQKVPackedFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal, window_size,
                softcap, alibi_slopes, deterministic, return_softmax, is_grad_enabled):
        V.check_tensor("qkv", qkv, 4)
        is_grad = is_grad_enabled and qkv.requires_grad
        q, k, v = qkv[:, 0].detach(), qkv[:, 1].detach(), qkv[:, 2].detach()
        out, lse, probs = _VarlenCore.forward(ctx if is_grad else None, q, k, v, cu_seqlens, cu_seqlens,
                                              max_seqlen, max_seqlen, dropout_p, softmax_scale, causal,
                                              window_size, softcap, alibi_slopes, deterministic,
                                              return_softmax, None)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _VarlenCore.backward(ctx, dout)
        return (torch.stack((dq, dk, dv), dim=1),) + (None,) * 11


class FlashAttnVarlenKVPackedFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
                return_softmax, is_grad_enabled):
        V.check_tensor("kv", kv, 4)
        is_grad = is_grad_enabled and any(getattr(x, "requires_grad", False) for x in (q, kv))
        k, v = kv[:, 0].detach(), kv[:, 1].detach()
        out, lse, probs = _VarlenCore.forward(ctx if is_grad else None, q, k, v, cu_seqlens_q, cu_seqlens_k,
                                              max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal,
                                              window_size, softcap, alibi_slopes, deterministic,
                                              return_softmax, None)
        return _function_outputs(ctx, out, lse, probs, return_softmax)

    @staticmethod
    def backward(ctx, dout, *args):
        dq, dk, dv = _VarlenCore.backward(ctx, dout)
        return (dq, torch.stack((dk, dv), dim=1)) + (None,) * 13


# ---- public functions (flash-attn 2.8 signatures) ------------------------------------------------


def flash_attn_qkvpacked_func(qkv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """qkv: (batch, seqlen, 3, nheads, headdim). Returns out (batch, seqlen, nheads, headdim), or
    (out, softmax_lse, S_dmask) with return_attn_probs."""
    result = FlashAttnQKVPackedFunc.apply(qkv, dropout_p, softmax_scale, causal, window_size, softcap,
                                          alibi_slopes, deterministic, return_attn_probs, torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)


def flash_attn_kvpacked_func(q, kv, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, d); kv: (batch, seqlen_k, 2, nheads_k, d)."""
    result = FlashAttnKVPackedFunc.apply(q, kv, dropout_p, softmax_scale, causal, window_size, softcap,
                                         alibi_slopes, deterministic, return_attn_probs, torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """q: (batch, seqlen_q, nheads, d); k, v: (batch, seqlen_k, nheads_k, d), nheads % nheads_k == 0.
    causal aligns the mask to the bottom-right corner; window_size (left, right), -1 = unbounded;
    alibi_slopes (nheads,) or (batch, nheads) fp32. Returns out, or (out, softmax_lse, S_dmask)."""
    result = FlashAttnFunc.apply(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap,
                                 alibi_slopes, deterministic, return_attn_probs, torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)


def flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen, dropout_p=0.0, softmax_scale=None,
                                     causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                     deterministic=False, return_attn_probs=False):
    """qkv: (total, 3, nheads, d); cu_seqlens: (batch + 1,) int32."""
    result = FlashAttnVarlenQKVPackedFunc.apply(qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale, causal,
                                                window_size, softcap, alibi_slopes, deterministic,
                                                return_attn_probs, torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)


def flash_attn_varlen_kvpacked_func(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                    dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                    softcap=0.0, alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False):
    """q: (total_q, nheads, d); kv: (total_k, 2, nheads_k, d)."""
    result = FlashAttnVarlenKVPackedFunc.apply(q, kv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                               dropout_p, softmax_scale, causal, window_size, softcap,
                                               alibi_slopes, deterministic, return_attn_probs,
                                               torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                           alibi_slopes=None, deterministic=False, return_attn_probs=False,
                           block_table=None):
    """q: (total_q, nheads, d); k, v: (total_k, nheads_k, d), or paged (num_blocks, page_size,
    nheads_k, d) with block_table (batch, max_blocks_per_seq) int32."""
    if cu_seqlens_k is cu_seqlens_q:
        cu_seqlens_k = None  # dynamo cannot trace one tensor passed twice to a Function; resolved inside
    result = FlashAttnVarlenFunc.apply(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                       dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                                       deterministic, return_attn_probs, block_table, torch.is_grad_enabled())
    return _finish(result, return_attn_probs, dropout_p)
