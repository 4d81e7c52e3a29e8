"""Multi-head attention modules, flash-attn 2.8 API.

FlashSelfAttention / FlashCrossAttention wrap the packed attention functions (padded or varlen);
SelfAttention / CrossAttention are the plain PyTorch references with the same call signatures;
MHA adds the projections, rotary embeddings, ALiBi, GQA and incremental decoding with a KV cache
held in an InferenceParams (flash_attn.utils.generation; only its attributes max_seqlen,
max_batch_size, seqlen_offset, batch_size_offset, key_value_memory_dict and lengths_per_sample are
used here).
"""

import math
from functools import partial

import torch
import torch.nn as nn
import torch.utils.checkpoint

from ..flash_attn_interface import (
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)
from ..layers.rotary import RotaryEmbedding


def get_alibi_slopes(nheads: int):
    """ALiBi head slopes (Press et al.): a geometric sequence 2^(-8/n * i), interleaved for
    head counts that are not powers of two."""

    def power_of_2_slopes(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(nheads).is_integer():
        return power_of_2_slopes(nheads)
    closest = 2 ** math.floor(math.log2(nheads))
    return power_of_2_slopes(closest) + get_alibi_slopes(2 * closest)[0::2][: nheads - closest]


class FlashSelfAttention(nn.Module):
    """Softmax attention over packed qkv with flash_attn.

    causal: autoregressive mask (default for forward). softmax_scale: default 1/sqrt(headdim).
    attention_dropout: dropout probability, applied in training mode only.
    """

    def __init__(self, causal=False, softmax_scale=None, attention_dropout=0.0, window_size=(-1, -1),
                 alibi_slopes=None, deterministic=False):
        super().__init__()
        self.causal = causal
        self.softmax_scale = softmax_scale
        self.drop = nn.Dropout(attention_dropout)
        self.register_buffer("alibi_slopes", alibi_slopes, persistent=False)
        self.window_size = window_size
        self.deterministic = deterministic

    def forward(self, qkv, causal=None, cu_seqlens=None, max_seqlen=None):
        """
        qkv: (batch, seqlen, 3, nheads, headdim), or (total, 3, nheads, headdim) with cu_seqlens
            ((batch + 1,) int32) and max_seqlen.
        Returns (batch, seqlen, nheads, headdim), or (total, nheads, headdim).
        """
        causal = self.causal if causal is None else causal
        if self.alibi_slopes is not None:
            self.alibi_slopes = self.alibi_slopes.to(torch.float32)
        dropout_p = self.drop.p if self.training else 0.0
        if cu_seqlens is not None:
            assert cu_seqlens.dtype == torch.int32 and max_seqlen is not None
            return flash_attn_varlen_qkvpacked_func(
                qkv, cu_seqlens, max_seqlen, dropout_p, softmax_scale=self.softmax_scale, causal=causal,
                alibi_slopes=self.alibi_slopes, window_size=self.window_size, deterministic=self.deterministic)
        return flash_attn_qkvpacked_func(
            qkv, dropout_p, softmax_scale=self.softmax_scale, causal=causal, alibi_slopes=self.alibi_slopes,
            window_size=self.window_size, deterministic=self.deterministic)


class FlashCrossAttention(nn.Module):
    """Softmax attention of q over packed kv with flash_attn (kv may have fewer heads: GQA/MQA)."""

    def __init__(self, causal=False, softmax_scale=None, attention_dropout=0.0, alibi_slopes=None,
                 window_size=(-1, -1), deterministic=False):
        super().__init__()
        self.causal = causal
        self.softmax_scale = softmax_scale
        self.drop = nn.Dropout(attention_dropout)
        self.register_buffer("alibi_slopes", alibi_slopes, persistent=False)
        self.window_size = window_size
        self.deterministic = deterministic

    def forward(self, q, kv, causal=None, cu_seqlens=None, max_seqlen=None, cu_seqlens_k=None, max_seqlen_k=None):
        """
        q: (batch, seqlen_q, nheads, headdim), or (total_q, nheads, headdim) with cu_seqlens/max_seqlen.
        kv: (batch, seqlen_k, 2, nheads_k, headdim), or (total_k, 2, nheads_k, headdim) with
            cu_seqlens_k/max_seqlen_k.
        """
        causal = self.causal if causal is None else causal
        if self.alibi_slopes is not None:
            self.alibi_slopes = self.alibi_slopes.to(torch.float32)
        dropout_p = self.drop.p if self.training else 0.0
        if cu_seqlens is not None:
            assert cu_seqlens.dtype == torch.int32 and max_seqlen is not None
            assert cu_seqlens_k is not None and cu_seqlens_k.dtype == torch.int32 and max_seqlen_k is not None
            return flash_attn_varlen_kvpacked_func(
                q, kv, cu_seqlens, cu_seqlens_k, max_seqlen, max_seqlen_k, dropout_p,
                softmax_scale=self.softmax_scale, causal=causal, alibi_slopes=self.alibi_slopes,
                window_size=self.window_size, deterministic=self.deterministic)
        assert kv.shape[0] == q.shape[0] and kv.shape[4] == q.shape[3]
        return flash_attn_kvpacked_func(
            q, kv, dropout_p, softmax_scale=self.softmax_scale, causal=causal, alibi_slopes=self.alibi_slopes,
            window_size=self.window_size, deterministic=self.deterministic)


class SelfAttention(nn.Module):
    """Reference softmax attention in plain PyTorch (materialises the score matrix)."""

    def __init__(self, causal=False, softmax_scale=None, attention_dropout=0.0):
        super().__init__()
        self.causal = causal
        self.softmax_scale = softmax_scale
        self.drop = nn.Dropout(attention_dropout)

    def forward(self, qkv, causal=None, key_padding_mask=None):
        """
        qkv: (batch, seqlen, 3, nheads, headdim).
        key_padding_mask: (batch, seqlen) bool, True = keep.
        """
        batch, seqlen = qkv.shape[0], qkv.shape[1]
        causal = self.causal if causal is None else causal
        q, k, v = qkv.unbind(dim=2)
        softmax_scale = self.softmax_scale or 1.0 / math.sqrt(q.shape[-1])
        scores = torch.einsum("bthd,bshd->bhts", q, k * softmax_scale)
        if key_padding_mask is not None:
            padding = torch.full((batch, seqlen), -10000.0, dtype=scores.dtype, device=scores.device)
            padding.masked_fill_(key_padding_mask, 0.0)
            scores = scores + padding[:, None, None, :]
        if causal:
            mask = torch.triu(torch.full((seqlen, seqlen), -10000.0, device=scores.device), 1)
            scores = scores + mask.to(dtype=scores.dtype)
        attention = torch.softmax(scores, dim=-1, dtype=v.dtype)
        return torch.einsum("bhts,bshd->bthd", self.drop(attention), v)


class CrossAttention(nn.Module):
    """Reference attention of q over packed kv in plain PyTorch; causal is bottom-right aligned."""

    def __init__(self, causal=False, softmax_scale=None, attention_dropout=0.0):
        super().__init__()
        self.causal = causal
        self.softmax_scale = softmax_scale
        self.drop = nn.Dropout(attention_dropout)

    def forward(self, q, kv, causal=None, key_padding_mask=None):
        """
        q: (batch, seqlen_q, nheads, headdim). kv: (batch, seqlen_k, 2, nheads_k, headdim).
        key_padding_mask: (batch, seqlen_k) bool, True = keep.
        """
        batch, seqlen_q = q.shape[0], q.shape[1]
        causal = self.causal if causal is None else causal
        seqlen_k = kv.shape[1]
        assert kv.shape[0] == batch and kv.shape[4] == q.shape[3]
        if kv.shape[3] != q.shape[2]:  # GQA/MQA: each kv head serves a group of q heads
            kv = kv.repeat_interleave(q.shape[2] // kv.shape[3], dim=3)
        k, v = kv.unbind(dim=2)
        softmax_scale = self.softmax_scale or 1.0 / math.sqrt(q.shape[-1])
        scores = torch.einsum("bthd,bshd->bhts", q, k * softmax_scale)
        if key_padding_mask is not None:
            padding = torch.full((batch, seqlen_k), -10000.0, dtype=scores.dtype, device=scores.device)
            padding.masked_fill_(key_padding_mask, 0.0)
            scores = scores + padding[:, None, None, :]
        if causal:
            row = torch.arange(seqlen_q, device=q.device, dtype=torch.long)[:, None]
            col = torch.arange(seqlen_k, device=kv.device, dtype=torch.long)
            sk = seqlen_k if key_padding_mask is None else key_padding_mask.sum(-1)[:, None, None, None]
            scores = scores.masked_fill(col > row + sk - seqlen_q, -10000.0)
        attention = torch.softmax(scores, dim=-1, dtype=v.dtype)
        return torch.einsum("bhts,bshd->bthd", self.drop(attention), v)


class LinearResidual(nn.Linear):
    """nn.Linear that also returns its input (for return_residual)."""

    def forward(self, input):
        return super().forward(input), input


def _update_kv_cache(kv, inference_params, layer_idx):
    """Writes kv (batch, seqlen, 2, nheads_kv, headdim) into the layer's preallocated cache at
    inference_params.seqlen_offset and returns the cache rows [0, seqlen_offset + seqlen)."""
    num_heads, head_dim = kv.shape[-2:]
    if layer_idx not in inference_params.key_value_memory_dict:
        inference_params.key_value_memory_dict[layer_idx] = torch.empty(
            inference_params.max_batch_size, inference_params.max_seqlen, 2, num_heads, head_dim,
            dtype=kv.dtype, device=kv.device)
    kv_cache = inference_params.key_value_memory_dict[layer_idx]
    batch_start = inference_params.batch_size_offset
    batch_end = batch_start + kv.shape[0]
    sequence_start = inference_params.seqlen_offset
    sequence_end = sequence_start + kv.shape[1]
    assert batch_end <= kv_cache.shape[0], "batch exceeds inference_params.max_batch_size"
    assert sequence_end <= kv_cache.shape[1], "sequence exceeds inference_params.max_seqlen"
    kv_cache[batch_start:batch_end, sequence_start:sequence_end, ...] = kv
    return kv_cache[batch_start:batch_end, :sequence_end, ...]


class MHA(nn.Module):
    """Multi-head self- or cross-attention with projections (flash-attn 2.8 MHA).

    num_heads_kv < num_heads gives GQA/MQA; rotary_emb_dim > 0 rotates the first rotary_emb_dim
    dims of q and k; use_alibi adds ALiBi slopes; window_size is sliding-window attention
    (the last two need use_flash_attn). Incremental decoding: pass an InferenceParams; its
    key_value_memory_dict[layer_idx] holds this layer's (max_batch, max_seqlen, 2, nheads_kv,
    headdim) cache. Not supported here: dwconv, fused_bias_fc (flash-attn's fused CUDA dense).
    """

    def __init__(self, embed_dim, num_heads, num_heads_kv=None, cross_attn=False, qkv_proj_bias=True,
                 out_proj_bias=True, dropout=0.0, softmax_scale=None, causal=False, layer_idx=None, dwconv=False,
                 rotary_emb_dim=0, rotary_emb_base=10000.0, rotary_emb_scale_base=None,
                 rotary_emb_interleaved=False, use_alibi=False, window_size=(-1, -1), fused_bias_fc=False,
                 use_flash_attn=False, return_residual=False, checkpointing=False, device=None, dtype=None):
        super().__init__()
        if dwconv:
            raise NotImplementedError("MHA: dwconv=True is not supported by this implementation")
        if fused_bias_fc:
            raise NotImplementedError("MHA: fused_bias_fc=True is not supported by this implementation")
        factory_kwargs = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.cross_attn = cross_attn
        self.causal = causal
        self.layer_idx = layer_idx
        self.dwconv = dwconv
        self.rotary_emb_dim = rotary_emb_dim
        self.use_flash_attn = use_flash_attn
        self.return_residual = return_residual
        self.checkpointing = checkpointing
        if use_alibi:
            assert use_flash_attn, "ALiBi code path requires flash_attn"
            alibi_slopes = torch.tensor(get_alibi_slopes(num_heads), device=device)
        else:
            alibi_slopes = None
        if tuple(window_size) != (-1, -1):
            assert use_flash_attn, "Local (sliding window) attention code path requires flash_attn"

        self.num_heads = num_heads
        self.num_heads_kv = num_heads_kv if num_heads_kv is not None else num_heads
        assert self.num_heads % self.num_heads_kv == 0, "num_heads must be divisible by num_heads_kv"
        assert self.embed_dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.head_dim = self.embed_dim // num_heads
        qkv_dim = self.head_dim * (self.num_heads + 2 * self.num_heads_kv)
        kv_dim = 2 * self.head_dim * self.num_heads_kv

        if self.rotary_emb_dim > 0:
            assert not cross_attn, "MHA with rotary embedding does not support cross-attention yet"
            self.rotary_emb = RotaryEmbedding(self.rotary_emb_dim, base=rotary_emb_base,
                                              scale_base=rotary_emb_scale_base, interleaved=rotary_emb_interleaved,
                                              device=device)

        wqkv_cls = LinearResidual if return_residual else nn.Linear
        inner_attn_cls = (partial(FlashSelfAttention, alibi_slopes=alibi_slopes, window_size=window_size)
                          if use_flash_attn else SelfAttention)
        inner_cross_attn_cls = (partial(FlashCrossAttention, alibi_slopes=alibi_slopes, window_size=window_size)
                                if use_flash_attn else CrossAttention)
        if not self.cross_attn:
            self.Wqkv = wqkv_cls(embed_dim, qkv_dim, bias=qkv_proj_bias, **factory_kwargs)
        else:
            self.Wq = nn.Linear(embed_dim, embed_dim, bias=qkv_proj_bias, **factory_kwargs)
            self.Wkv = wqkv_cls(embed_dim, kv_dim, bias=qkv_proj_bias, **factory_kwargs)
        self.inner_attn = inner_attn_cls(causal=causal, softmax_scale=softmax_scale, attention_dropout=dropout)
        self.inner_cross_attn = inner_cross_attn_cls(causal=causal, softmax_scale=softmax_scale,
                                                     attention_dropout=dropout)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=out_proj_bias, **factory_kwargs)

    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None):
        dtype = self.out_proj.weight.dtype if dtype is None else dtype
        device = self.out_proj.weight.device
        return torch.empty(batch_size, max_seqlen, 2, self.num_heads_kv, self.head_dim, dtype=dtype, device=device)

    def _update_kv_cache(self, kv, inference_params):
        assert self.layer_idx is not None, "Generation requires layer_idx in the constructor"
        return _update_kv_cache(kv, inference_params, self.layer_idx)

    def _cache_seqlens(self, inference_params, batch):
        if inference_params.lengths_per_sample is not None:
            return inference_params.lengths_per_sample[:batch]
        return inference_params.seqlen_offset

    def _apply_rotary_update_kvcache_attention(self, q, kv, inference_params):
        """Decoding fast path: one flash_attn_with_kvcache call rotates q and the new k, appends
        k/v to the cache and attends. q: (batch, seqlen_q, nheads, headdim);
        kv: (batch, seqlen_k, 2, nheads_kv, headdim)."""
        assert inference_params is not None and inference_params.seqlen_offset > 0
        assert self.use_flash_attn
        if self.rotary_emb_dim > 0:
            assert self.rotary_emb.scale is None, "This code path does not support xPos"
            self.rotary_emb._update_cos_sin_cache(inference_params.max_seqlen, device=q.device, dtype=q.dtype)
            rotary_cos, rotary_sin = self.rotary_emb._cos_cached, self.rotary_emb._sin_cached
        else:
            rotary_cos, rotary_sin = None, None
        batch = q.shape[0]
        kv_cache = self._kv_cache_rows(q, kv, inference_params)
        return flash_attn_with_kvcache(
            q, kv_cache[:, :, 0], kv_cache[:, :, 1], kv[:, :, 0], kv[:, :, 1], rotary_cos=rotary_cos,
            rotary_sin=rotary_sin, cache_seqlens=self._cache_seqlens(inference_params, batch),
            softmax_scale=self.inner_cross_attn.softmax_scale, causal=self.inner_cross_attn.causal,
            rotary_interleaved=self.rotary_emb.interleaved if self.rotary_emb_dim > 0 else False,
            alibi_slopes=getattr(self.inner_cross_attn, "alibi_slopes", None),
            window_size=getattr(self.inner_cross_attn, "window_size", (-1, -1)))

    def _kv_cache_rows(self, q, kv, inference_params):
        """This layer's cache rows for the current batch (allocated on first use)."""
        if self.layer_idx not in inference_params.key_value_memory_dict:
            inference_params.key_value_memory_dict[self.layer_idx] = self.allocate_inference_cache(
                inference_params.max_batch_size, inference_params.max_seqlen, dtype=kv.dtype)
        start = inference_params.batch_size_offset
        return inference_params.key_value_memory_dict[self.layer_idx][start : start + q.shape[0]]

    def _update_kvcache_attention(self, q, kv, inference_params):
        """Writes kv to the cache, then attends over everything cached so far."""
        if inference_params.seqlen_offset == 0 or not self.use_flash_attn:
            # Prompt (or the reference path): only seqlen_offset is used, not lengths_per_sample.
            kv = self._update_kv_cache(kv, inference_params)
            return self.inner_cross_attn(q, kv)
        batch = q.shape[0]
        kv_cache = self._kv_cache_rows(q, kv, inference_params)
        return flash_attn_with_kvcache(
            q, kv_cache[:, :, 0], kv_cache[:, :, 1], kv[:, :, 0], kv[:, :, 1],
            cache_seqlens=self._cache_seqlens(inference_params, batch),
            softmax_scale=self.inner_cross_attn.softmax_scale, causal=self.inner_cross_attn.causal,
            alibi_slopes=getattr(self.inner_cross_attn, "alibi_slopes", None),
            window_size=getattr(self.inner_cross_attn, "window_size", (-1, -1)))

    def _decode_fast_path(self, inference_params) -> bool:
        # The fused kernel path needs flash_attn and a cache that already holds the prompt; the
        # kernel's in-kernel rotary handles rotary_dim multiples of 16 (as flash-attn).
        return (inference_params is not None and inference_params.seqlen_offset > 0
                and self.rotary_emb_dim > 0 and self.rotary_emb_dim % 16 == 0 and self.use_flash_attn)

    def forward(self, x, x_kv=None, key_padding_mask=None, cu_seqlens=None, max_seqlen=None, mixer_subset=None,
                inference_params=None, **kwargs):
        """
        x: (batch, seqlen, embed_dim), or (total, embed_dim) with cu_seqlens/max_seqlen (varlen).
        x_kv: (batch, seqlen_k, embed_dim) keys/values source for cross-attention.
        key_padding_mask: (batch, seqlen) bool, True = keep; reference (use_flash_attn=False) only.
        mixer_subset: for cross-attention, the query positions to compute.
        inference_params: incremental decoding state (see the class doc).
        Returns out (same leading shape as x), or (out, x) with return_residual.
        """
        if cu_seqlens is not None:
            assert max_seqlen is not None
            assert key_padding_mask is None
            assert self.use_flash_attn
            assert self.rotary_emb_dim == 0
        if key_padding_mask is not None:
            assert cu_seqlens is None
            assert max_seqlen is None
            assert not self.use_flash_attn
        if inference_params is not None:
            assert key_padding_mask is None
            assert cu_seqlens is None and max_seqlen is None

        kwargs = ({"cu_seqlens": cu_seqlens, "max_seqlen": max_seqlen, **kwargs} if self.use_flash_attn
                  else {"key_padding_mask": key_padding_mask, **kwargs})
        seqlen_offset = (0 if inference_params is None else
                         (inference_params.lengths_per_sample if inference_params.lengths_per_sample is not None
                          else inference_params.seqlen_offset))
        rotary_max_seqlen = inference_params.max_seqlen if inference_params is not None else None
        if not self.cross_attn and self.num_heads_kv == self.num_heads:
            assert x_kv is None and mixer_subset is None
            if not self.return_residual:
                qkv = self.Wqkv(x)
            else:
                qkv, x = self.Wqkv(x)
            qkv = qkv.unflatten(-1, (3, self.num_heads, self.head_dim))
            if not self._decode_fast_path(inference_params):
                if self.rotary_emb_dim > 0:
                    qkv = self.rotary_emb(qkv, seqlen_offset=seqlen_offset, max_seqlen=rotary_max_seqlen)
                if inference_params is None:
                    if not self.checkpointing:
                        context = self.inner_attn(qkv, **kwargs)
                    else:
                        context = torch.utils.checkpoint.checkpoint(self.inner_attn, qkv, use_reentrant=False,
                                                                    **kwargs)
                else:
                    context = self._update_kvcache_attention(qkv[:, :, 0], qkv[:, :, 1:], inference_params)
            else:
                context = self._apply_rotary_update_kvcache_attention(qkv[:, :, 0], qkv[:, :, 1:], inference_params)
        else:
            if self.cross_attn:
                if not self.return_residual:
                    q = self.Wq(x if mixer_subset is None else x[:, mixer_subset])
                    kv = self.Wkv(x_kv if x_kv is not None else x)
                else:
                    if x_kv is not None:
                        kv, x_kv = self.Wkv(x_kv)
                    else:
                        kv, x = self.Wkv(x)
                    q = self.Wq(x if mixer_subset is None else x[:, mixer_subset])
            else:
                assert self.num_heads_kv != self.num_heads
                if not self.return_residual:
                    qkv = self.Wqkv(x)
                else:
                    qkv, x = self.Wqkv(x)
                q = qkv[..., : self.num_heads * self.head_dim]
                kv = qkv[..., self.num_heads * self.head_dim :]
            q = q.unflatten(-1, (self.num_heads, self.head_dim))
            kv = kv.unflatten(-1, (2, self.num_heads_kv, self.head_dim))
            if not self._decode_fast_path(inference_params):
                if self.rotary_emb_dim > 0:
                    q, kv = self.rotary_emb(q, kv, seqlen_offset=seqlen_offset, max_seqlen=rotary_max_seqlen)
                if inference_params is None:
                    if not self.checkpointing:
                        context = self.inner_cross_attn(q, kv, **kwargs)
                    else:
                        context = torch.utils.checkpoint.checkpoint(self.inner_cross_attn, q, kv,
                                                                    use_reentrant=False, **kwargs)
                else:
                    context = self._update_kvcache_attention(q, kv, inference_params)
            else:
                context = self._apply_rotary_update_kvcache_attention(q, kv, inference_params)
        out = self.out_proj(context.flatten(-2))
        return out if not self.return_residual else (out, x)
