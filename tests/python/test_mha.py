"""flash_attn.modules.mha: the flash modules against the PyTorch reference modules, forward and
backward, and greedy decoding of a small GPT through the KV-cache path against full recomputation.

CPU runs in fp32; CUDA (when present) in fp16, since the CUDA attention backend takes 16-bit only.
"""

import copy

import pytest
import torch
import torch.nn as nn

from flash_attn.bert_padding import pad_input, unpad_input
from flash_attn.modules.mha import MHA, CrossAttention, FlashCrossAttention, FlashSelfAttention, SelfAttention

from flash_attn.utils.generation import InferenceParams


def dtype_for(device):
    return torch.float32 if device == "cpu" else torch.float16


def tol(dtype):
    return {"atol": 2e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 4e-3, "rtol": 4e-3}


def assert_matches(ours, ref32, ref_low=None, what="", factor=1.0):
    """fp32: tight tolerances. 16-bit: the error of ours against the fp32 reference must stay
    within twice that of the same reference run in the 16-bit dtype (ref_low), or within a few
    16-bit ulps of the tensor's scale (flash-attn's own acceptance rule, in spirit)."""
    ref32 = ref32.detach().float()
    if ours.dtype == torch.float32:
        torch.testing.assert_close(ours.detach(), ref32, atol=factor * 2e-5, rtol=factor * 1e-4,
                                   msg=lambda m: f"{what}: {m}")
        return
    err = (ours.detach().float() - ref32).abs().max().item()
    bound = factor * 4e-3 * (1.0 + ref32.abs().max().item())
    if ref_low is not None:
        bound = max(bound, 2.0 * (ref_low.detach().float() - ref32).abs().max().item())
    assert err <= bound, f"{what}: max error {err} > bound {bound}"


def assert_grads_close(mod_a, mod_b, mod_low=None):
    low = dict(mod_low.named_parameters()) if mod_low is not None else {}
    for (name, pa), (_, pb) in zip(mod_a.named_parameters(), mod_b.named_parameters()):
        assert_matches(pa.grad, pb.grad, low[name].grad if name in low else None, what=f"grad {name}", factor=3.0)


# ---- inner attention modules ----------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_flash_self_attention(device, causal):
    dtype = dtype_for(device)
    qkv = torch.randn(2, 33, 3, 4, 32, device=device, dtype=dtype, requires_grad=True)
    out = FlashSelfAttention(causal=causal)(qkv)
    ref = SelfAttention(causal=causal)(qkv.float())
    assert_matches(out, ref, what="out")
    dout = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, qkv, dout)
    (g_ref,) = torch.autograd.grad(ref, qkv, dout.float())
    assert_matches(g, g_ref, what="dqkv", factor=3.0)


def test_flash_self_attention_unpadded(device):
    dtype = dtype_for(device)
    batch, seqlen = 3, 20
    qkv = torch.randn(batch, seqlen, 3, 2, 32, device=device, dtype=dtype)
    mask = torch.ones(batch, seqlen, dtype=torch.bool, device=device)
    mask[0, 12:] = False
    mask[2, 5:] = False
    qkv_unpad, indices, cu_seqlens, max_s, _ = unpad_input(qkv, mask)
    attn = FlashSelfAttention(causal=True)
    out = pad_input(attn(qkv_unpad, cu_seqlens=cu_seqlens, max_seqlen=max_s), indices, batch, seqlen)
    # Key padding only masks keys: compare the valid query rows.
    ref = SelfAttention(causal=True)(qkv.float(), key_padding_mask=mask)
    assert_matches(out[mask], ref[mask], what="out")


@pytest.mark.parametrize("causal", [False, True])
def test_flash_cross_attention(device, causal):
    dtype = dtype_for(device)
    q = torch.randn(2, 9, 4, 32, device=device, dtype=dtype, requires_grad=True)
    kv = torch.randn(2, 21, 2, 2, 32, device=device, dtype=dtype, requires_grad=True)  # GQA: 2 kv heads
    out = FlashCrossAttention(causal=causal)(q, kv)
    ref = CrossAttention(causal=causal)(q.float(), kv.float())
    assert_matches(out, ref, what="out")
    dout = torch.randn_like(out)
    g = torch.autograd.grad(out, (q, kv), dout)
    g_ref = torch.autograd.grad(ref, (q, kv), dout.float())
    for a, b, name in zip(g, g_ref, ("dq", "dkv")):
        assert_matches(a, b, what=name, factor=3.0)

    # Unpadded path on the same data (every sequence full length).
    cu_q = torch.tensor([0, 9, 18], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 21, 42], dtype=torch.int32, device=device)
    out_unpad = FlashCrossAttention(causal=causal)(q.detach().flatten(0, 1), kv.detach().flatten(0, 1),
                                                   cu_seqlens=cu_q, max_seqlen=9, cu_seqlens_k=cu_k, max_seqlen_k=21)
    assert_matches(out_unpad, ref.flatten(0, 1), what="out (unpadded)")


# ---- MHA ------------------------------------------------------------------------------------------

MHA_CONFIGS = [
    ("plain", {}),
    ("gqa", {"num_heads_kv": 2}),
    ("mqa_rotary", {"num_heads_kv": 1, "rotary_emb_dim": 16}),
    ("rotary", {"rotary_emb_dim": 32}),
    ("rotary_interleaved_partial", {"rotary_emb_dim": 16, "rotary_emb_interleaved": True}),
    ("xpos", {"rotary_emb_dim": 32, "rotary_emb_scale_base": 512.0}),
    ("cross_attn", {"cross_attn": True, "causal": False}),
    ("return_residual", {"return_residual": True}),
    ("checkpointing", {"checkpointing": True, "qkv_proj_bias": False, "out_proj_bias": False}),
]


@pytest.mark.parametrize("name,kw", MHA_CONFIGS, ids=[c[0] for c in MHA_CONFIGS])
def test_mha_matches_reference(device, name, kw):
    dtype = dtype_for(device)
    kw = {"causal": True, **kw}
    embed_dim, num_heads = 128, 4
    flash = MHA(embed_dim, num_heads, use_flash_attn=True, device=device, dtype=dtype, **kw)
    ref = MHA(embed_dim, num_heads, use_flash_attn=False, device=device, dtype=torch.float32, **kw)
    ref.load_state_dict({k: v.float() for k, v in flash.state_dict().items()})
    # The reference in the 16-bit dtype measures how much rounding alone moves the result.
    ref_low = copy.deepcopy(flash) if dtype != torch.float32 else None
    if ref_low is not None:
        ref_low.use_flash_attn = False
        ref_low.inner_attn = SelfAttention(causal=kw["causal"])
        ref_low.inner_cross_attn = CrossAttention(causal=kw["causal"])
    x = torch.randn(2, 27, embed_dim, device=device, dtype=dtype)
    x_kv = torch.randn(2, 15, embed_dim, device=device, dtype=dtype) if kw.get("cross_attn") else None
    x_a = x.clone().requires_grad_()
    x_b = x.float().clone().requires_grad_()
    x_c = x.clone().requires_grad_()
    out_a = flash(x_a, x_kv=x_kv)
    out_b = ref(x_b, x_kv=None if x_kv is None else x_kv.float())
    out_c = ref_low(x_c, x_kv=x_kv) if ref_low is not None else None
    if kw.get("return_residual"):
        assert out_a[1] is x_a
        out_a, out_b = out_a[0], out_b[0]
        out_c = out_c[0] if out_c is not None else None
    assert out_a.shape == x.shape
    assert_matches(out_a, out_b, out_c, what="out")
    dout = torch.randn_like(out_b)
    out_a.backward(dout.to(dtype))
    out_b.backward(dout)
    if out_c is not None:
        out_c.backward(dout.to(dtype))
    assert_matches(x_a.grad, x_b.grad, x_c.grad if out_c is not None else None, what="dx", factor=3.0)
    assert_grads_close(flash, ref, ref_low)


def test_mha_varlen(device):
    dtype = dtype_for(device)
    mha = MHA(64, 2, causal=True, use_flash_attn=True, device=device, dtype=dtype)
    lengths = [7, 12, 3]
    xs = [torch.randn(n, 64, device=device, dtype=dtype) for n in lengths]
    cu = torch.tensor([0, 7, 19, 22], dtype=torch.int32, device=device)
    out = mha(torch.cat(xs), cu_seqlens=cu, max_seqlen=12)
    for x, start in zip(xs, [0, 7, 19]):
        torch.testing.assert_close(out[start : start + x.shape[0]], mha(x[None])[0], **tol(dtype))


def test_mha_alibi_and_window(device):
    """ALiBi / sliding window reach the kernel: compare with flash_attn_func on the projections."""
    from flash_attn import flash_attn_func
    from flash_attn.modules.mha import get_alibi_slopes

    dtype = dtype_for(device)
    mha = MHA(64, 4, causal=True, use_alibi=True, window_size=(5, 0), use_flash_attn=True, device=device,
              dtype=dtype)
    x = torch.randn(2, 19, 64, device=device, dtype=dtype)
    q, k, v = mha.Wqkv(x).unflatten(-1, (3, 4, 16)).unbind(2)
    slopes = torch.tensor(get_alibi_slopes(4), device=device, dtype=torch.float32)
    ctx = flash_attn_func(q, k, v, causal=True, window_size=(5, 0), alibi_slopes=slopes)
    torch.testing.assert_close(mha(x), mha.out_proj(ctx.flatten(-2)), **tol(dtype))
    assert get_alibi_slopes(8)[0] == 0.5 and len(get_alibi_slopes(6)) == 6


def test_mha_unsupported_options():
    with pytest.raises(NotImplementedError):
        MHA(64, 2, dwconv=True)
    with pytest.raises(NotImplementedError):
        MHA(64, 2, fused_bias_fc=True)


# ---- greedy decoding through the KV cache --------------------------------------------------------


class Block(nn.Module):
    def __init__(self, dim, num_heads, layer_idx, device, dtype, **mha_kw):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.norm1 = nn.LayerNorm(dim, **fk)
        self.mixer = MHA(dim, num_heads, causal=True, layer_idx=layer_idx, **fk, **mha_kw)
        self.norm2 = nn.LayerNorm(dim, **fk)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim, **fk), nn.GELU(), nn.Linear(4 * dim, dim, **fk))

    def forward(self, x, inference_params=None):
        x = x + self.mixer(self.norm1(x), inference_params=inference_params)
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab, dim, num_heads, n_layers, device, dtype, **mha_kw):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(vocab, dim, **fk)
        self.layers = nn.ModuleList(Block(dim, num_heads, i, device, dtype, **mha_kw) for i in range(n_layers))
        self.norm_f = nn.LayerNorm(dim, **fk)
        self.lm_head = nn.Linear(dim, vocab, bias=False, **fk)
        with torch.no_grad():  # well separated logits: greedy choices are not near ties
            self.lm_head.weight.mul_(8.0)

    def forward(self, input_ids, inference_params=None):
        x = self.embedding(input_ids)
        for layer in self.layers:
            x = layer(x, inference_params=inference_params)
        return self.lm_head(self.norm_f(x))


def generate_with_cache(model, prompt, n_tokens, use_lengths):
    batch, prompt_len = prompt.shape
    params = InferenceParams(max_seqlen=prompt_len + n_tokens, max_batch_size=batch)
    if use_lengths:
        params.lengths_per_sample = torch.zeros(batch, dtype=torch.int32, device=prompt.device)
    logits = model(prompt, inference_params=params)[:, -1]
    tokens, step_logits = [], []
    for i in range(n_tokens):
        tok = logits.argmax(-1)
        tokens.append(tok)
        step_logits.append(logits)
        advance = prompt_len if i == 0 else 1
        params.seqlen_offset += advance
        if use_lengths:
            params.lengths_per_sample += advance
        if i + 1 < n_tokens:
            logits = model(tok[:, None], inference_params=params)[:, -1]
    return torch.stack(tokens, 1), torch.stack(step_logits, 1)


def generate_by_recompute(model, prompt, n_tokens):
    seq, step_logits = prompt, []
    for _ in range(n_tokens):
        logits = model(seq)[:, -1]
        step_logits.append(logits)
        seq = torch.cat([seq, logits.argmax(-1)[:, None]], dim=1)
    return seq[:, prompt.shape[1] :], torch.stack(step_logits, 1)


def recompute_in_one_pass(model, prompt, generated):
    """Full-recomputation logits for every generated position at once: with causal attention,
    the logits at position t of the whole sequence are those of the prefix [0, t]."""
    seq = torch.cat([prompt, generated], dim=1)
    return model(seq)[:, prompt.shape[1] - 1 : -1]


GEN_CONFIGS = [
    # fused path: flash_attn_with_kvcache rotates q/k in the kernel (rotary dim % 16 == 0)
    ("fused_rotary", {"rotary_emb_dim": 32, "use_flash_attn": True}),
    ("fused_rotary_gqa_interleaved", {"rotary_emb_dim": 16, "rotary_emb_interleaved": True,
                                      "num_heads_kv": 2, "use_flash_attn": True}),
    # rotary dim 8: rotated by RotaryEmbedding with offsets, then flash_attn_with_kvcache appends
    ("separate_rotary", {"rotary_emb_dim": 8, "use_flash_attn": True}),
    ("lengths_per_sample", {"rotary_emb_dim": 32, "use_flash_attn": True, "_lengths": True}),
    ("lengths_per_sample_separate", {"rotary_emb_dim": 8, "num_heads_kv": 1, "use_flash_attn": True,
                                     "_lengths": True}),
    # reference attention with the plain cache update
    ("torch_reference", {"rotary_emb_dim": 32, "use_flash_attn": False}),
]
# Configs checked with the literal token-by-token recomputation loop (64 full forwards); the others
# use the equivalent one-pass check, which keeps the CPU run short.
LITERAL_RECOMPUTE = {"fused_rotary"}


@pytest.mark.parametrize("name,kw", GEN_CONFIGS, ids=[c[0] for c in GEN_CONFIGS])
@torch.no_grad()
def test_greedy_decode_kvcache_matches_recompute(device, name, kw):
    kw = dict(kw)
    use_lengths = kw.pop("_lengths", False)
    dtype = dtype_for(device)
    if device == "cuda" and not kw["use_flash_attn"]:
        dtype = torch.float32  # the reference path has no dtype restriction
    torch.manual_seed(1)
    model = TinyGPT(vocab=96, dim=128, num_heads=4, n_layers=2, device=device, dtype=dtype, **kw).eval()
    prompt = torch.randint(0, 96, (2, 7), device=device)
    n_tokens = 64
    cached, cached_logits = generate_with_cache(model, prompt, n_tokens, use_lengths)
    assert cached.shape == (2, n_tokens)
    if name in LITERAL_RECOMPUTE:
        recomputed, full_logits = generate_by_recompute(model, prompt, n_tokens)
    else:
        full_logits = recompute_in_one_pass(model, prompt, cached)
        recomputed = full_logits.argmax(-1)
    first_diff = (cached != recomputed).any(0).nonzero()
    assert first_diff.numel() == 0, f"tokens diverge at step {first_diff[0].item()}"
    torch.testing.assert_close(cached_logits.float(), full_logits.float(),
                               **({"atol": 1e-3, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.15, "rtol": 0.02}))


@torch.no_grad()
def test_mha_cache_layout(device):
    """The layer's cache holds the rotated keys and the values at their positions."""
    dtype = dtype_for(device)
    mha = MHA(64, 4, num_heads_kv=2, causal=True, layer_idx=0, rotary_emb_dim=16, use_flash_attn=True,
              device=device, dtype=dtype)
    params = InferenceParams(max_seqlen=16, max_batch_size=3)
    x = torch.randn(3, 10, 64, device=device, dtype=dtype)
    mha(x[:, :6], inference_params=params)
    params.seqlen_offset = 6
    mha(x[:, 6:7], inference_params=params)
    cache = params.key_value_memory_dict[0]
    assert cache.shape == (3, 16, 2, 2, 16)
    kv = mha.Wqkv(x[:, :7])[..., 64:].unflatten(-1, (2, 2, 16)).clone()
    q = mha.Wqkv(x[:, :7])[..., :64].unflatten(-1, (4, 16)).clone()
    _, kv = mha.rotary_emb(q, kv, seqlen_offset=0)
    torch.testing.assert_close(cache[:, :7], kv, **tol(dtype))
