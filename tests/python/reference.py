"""Naive attention straight from the formula, for checking flash_attn.

Every function computes in the dtype of its inputs: call it on .double() tensors for the fp64
reference, and on the original low-precision tensors for the "plain PyTorch" baseline whose error
sets the tolerance. All features of the semantic contract are here: bottom-right causal, sliding
window, softcap, ALiBi, GQA, dropout from a given keep-mask, varlen, and the kvcache semantics
(append, rotary in both styles, leftpad, cache_batch_idx, paged caches).
"""

import math

import torch


def visible_mask(seqlen_q, seqlen_k, causal=False, window=(-1, -1), device="cpu"):
    """(seqlen_q, seqlen_k) bool: key j visible from row i (diagonal aligned bottom-right)."""
    left, right = window
    if causal:
        right = 0
    i = torch.arange(seqlen_q, device=device)[:, None]
    j = torch.arange(seqlen_k, device=device)[None, :]
    d = j - (i + seqlen_k - seqlen_q)
    vis = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if left >= 0:
        vis &= d >= -left
    if right >= 0:
        vis &= d <= right
    return vis


def attention_ref(q, k, v, softmax_scale=None, causal=False, window=(-1, -1), softcap=0.0,
                  alibi_slopes=None, keep_mask=None, dropout_p=0.0):
    """q (b, sq, h, d), k/v (b, sk, hk, d). Returns out (b, sq, h, d), lse (b, h, sq) fp32-like of
    the input dtype, and probs (b, h, sq, sk) before dropout. keep_mask (b, h, sq, sk) bool."""
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    k = k.repeat_interleave(h // hk, dim=2)
    v = v.repeat_interleave(h // hk, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * softmax_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(s.dtype)
        slopes = slopes.view(1, h, 1, 1) if slopes.dim() == 1 else slopes.view(b, h, 1, 1)
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        dist = (i + sk - sq - j).abs().to(s.dtype)
        s = s - slopes * dist
    vis = visible_mask(sq, sk, causal, window, q.device)
    s = s.masked_fill(~vis, float("-inf"))
    # A row that sees no key has out = 0 and lse = +inf. Its scores are zeroed for the logsumexp
    # so that no NaN appears (not even in the backward of logsumexp over all -inf).
    empty = ~vis.any(dim=-1)  # (sq,)
    lse = torch.logsumexp(s.masked_fill(empty[:, None], 0.0), dim=-1)
    probs = torch.exp(s - lse.unsqueeze(-1))
    lse = lse.masked_fill(empty, float("inf"))
    p = probs
    if keep_mask is not None and dropout_p > 0:
        p = probs * keep_mask.to(probs.dtype) / (1.0 - dropout_p)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v)
    return out, lse, probs


def attention_varlen_ref(q, k, v, cu_seqlens_q, cu_seqlens_k, keep_masks=None, **kw):
    """Varlen: q (total_q, h, d), k/v (total_k, hk, d). keep_masks: list of (h, sq_b, sk_b).
    Returns out (total_q, h, d) and lse (h, total_q)."""
    outs, lses = [], []
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        qb = q[cq[b]:cq[b + 1]].unsqueeze(0)
        kb, vb = k[ck[b]:ck[b + 1]].unsqueeze(0), v[ck[b]:ck[b + 1]].unsqueeze(0)
        km = None if keep_masks is None else keep_masks[b].unsqueeze(0)
        kwb = dict(kw)
        if kwb.get("alibi_slopes") is not None and kwb["alibi_slopes"].dim() == 2:
            kwb["alibi_slopes"] = kwb["alibi_slopes"][b]
        o, l, _ = attention_ref(qb, kb, vb, keep_mask=km, **kwb)
        outs.append(o[0])
        lses.append(l[0])
    return torch.cat(outs, 0), torch.cat(lses, 1)


def paged_to_contiguous(cache, block_table, b, nkeys):
    """The first nkeys logical keys of sequence b of a paged cache (num_blocks, page, hk, d)."""
    page = cache.shape[1]
    npages = (nkeys + page - 1) // page
    rows = cache[block_table[b, :npages].long()].reshape(-1, *cache.shape[2:])
    return rows[:nkeys]


def apply_rotary(x, cos, sin, positions, interleaved):
    """Rotate the first 2 * cos.shape[1] dims of x (s, h, d) with row positions[i] of cos/sin."""
    rd = cos.shape[1] * 2
    c = cos[positions].unsqueeze(1)  # (s, 1, rd / 2)
    s = sin[positions].unsqueeze(1)
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    if interleaved:
        x0, x1 = x_rot[..., 0::2], x_rot[..., 1::2]
        r0, r1 = x0 * c - x1 * s, x0 * s + x1 * c
        rotated = torch.stack((r0, r1), dim=-1).flatten(-2)
    else:
        x0, x1 = x_rot[..., : rd // 2], x_rot[..., rd // 2:]
        rotated = torch.cat((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return torch.cat((rotated, x_pass), dim=-1)


def kvcache_ref(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None, cache_seqlens=None,
                cache_batch_idx=None, cache_leftpad=None, block_table=None, softmax_scale=None, causal=False,
                window=(-1, -1), softcap=0.0, rotary_interleaved=True, alibi_slopes=None):
    """flash_attn_with_kvcache semantics in the input dtype. Returns out (b, sq, h, d), lse
    (b, h, sq), and the updated caches (copies). cache_seqlens: int32 tensor (batch,)."""
    batch, sq, h, d = q.shape
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    paged = block_table is not None
    sn = 0 if k is None else k.shape[1]
    outs, lses = [], []
    local = window[0] >= 0 or window[1] >= 0
    for b in range(batch):
        cs = int(cache_seqlens[b])
        lp = 0 if cache_leftpad is None else int(cache_leftpad[b])
        if paged:
            keys = paged_to_contiguous(k_cache, block_table, b, block_table.shape[1] * k_cache.shape[1]).clone()
            vals = paged_to_contiguous(v_cache, block_table, b, block_table.shape[1] * v_cache.shape[1]).clone()
        else:
            row = b if cache_batch_idx is None else int(cache_batch_idx[b])
            keys, vals = k_cache[row].clone(), v_cache[row].clone()
        qb = q[b]
        if sn:
            kb = k[b]
            if rotary_cos is not None:
                kb = apply_rotary(kb, rotary_cos, rotary_sin, torch.arange(cs, cs + sn), rotary_interleaved)
            keys[cs:cs + sn] = kb
            vals[cs:cs + sn] = v[b]
            _write_back(k_cache, v_cache, keys, vals, b, block_table, cache_batch_idx, cs, sn)
        if rotary_cos is not None:
            pos = torch.arange(cs, cs + sq) if (causal or local) else torch.full((sq,), cs, dtype=torch.long)
            qb = apply_rotary(qb, rotary_cos, rotary_sin, pos, rotary_interleaved)
        nk = cs + sn
        slopes = alibi_slopes
        if slopes is not None and slopes.dim() == 2:
            slopes = slopes[b]
        o, l, _ = attention_ref(qb.unsqueeze(0), keys[lp:nk].unsqueeze(0), vals[lp:nk].unsqueeze(0),
                                softmax_scale=softmax_scale, causal=causal, window=window, softcap=softcap,
                                alibi_slopes=slopes)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses), k_cache, v_cache


def _write_back(k_cache, v_cache, keys, vals, b, block_table, cache_batch_idx, cs, sn):
    if block_table is None:
        row = b if cache_batch_idx is None else int(cache_batch_idx[b])
        k_cache[row, cs:cs + sn] = keys[cs:cs + sn]
        v_cache[row, cs:cs + sn] = vals[cs:cs + sn]
        return
    page = k_cache.shape[1]
    for t in range(cs, cs + sn):
        blk = int(block_table[b, t // page])
        k_cache[blk, t % page] = keys[t]
        v_cache[blk, t % page] = vals[t]


# ---- tolerance rule ------------------------------------------------------------------------------

ABS_FLOOR = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-3}


def max_err(x, ref):
    """Max |x - ref| treating equal infinities (empty rows' lse) as exact."""
    x, ref = x.double(), ref.double()
    both_inf = torch.isinf(x) & torch.isinf(ref) & (torch.sign(x) == torch.sign(ref))
    diff = (x - ref).abs()
    diff = torch.where(both_inf, torch.zeros_like(diff), diff)
    if diff.numel() == 0:
        return 0.0
    return diff.max().item() if not torch.isnan(diff).any() else math.inf


def assert_close_rule(name, ours, baseline, ref, dtype, factor=2.0):
    """ours vs fp64 ref must be within factor x (baseline vs ref) plus a small absolute floor."""
    ours_err = max_err(ours, ref)
    base_err = max_err(baseline, ref)
    bound = factor * base_err + ABS_FLOOR[dtype]
    assert ours_err <= bound, (f"{name}: error {ours_err:.3e} exceeds {factor} x baseline "
                               f"{base_err:.3e} + {ABS_FLOOR[dtype]:.0e}")
