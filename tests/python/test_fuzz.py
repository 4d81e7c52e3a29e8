"""Seeded, time-bounded fuzzing of every public function against the fp64 reference.

Each case draws an API (fixed-length, packed, varlen, packed varlen, paged varlen, kvcache), a dtype,
shapes (GQA included), flags (causal, windows, softcap, ALiBi, dropout with the regenerated Philox
mask, deterministic) and a memory layout (padded rows, transposed heads, a non-contiguous last dim),
runs ours and checks out / lse (and gradients, and the caches of kvcache) with the rule of
helpers.compare_to_reference: our error <= 2x (grads 3x) the error of the same computation done by
plain torch in the input dtype, plus a small floor.

Counts and budgets (environment):
  FLASH_ATTN_FUZZ_SEED      base seed (default 0): case i uses seed (base, i), so failures replay
  FLASH_ATTN_FUZZ_CASES     cases per device (default 300 on the CPU, 400 on CUDA; reliability.py: 2000)
  FLASH_ATTN_FUZZ_SECONDS   wall-clock budget per device (default 200 CPU, 300 CUDA)
Replay one case: python3 tests/python/test_fuzz.py --device cpu --case 123
"""

import math
import os
import random
import sys
import time

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # helpers, reference, philox_ref (also when run as a script)
sys.path.insert(1, os.path.dirname(os.path.dirname(_HERE)))  # the repo root (flash_attn in place)

from flash_attn import (flash_attn_func, flash_attn_kvpacked_func, flash_attn_qkvpacked_func,  # noqa: E402
                        flash_attn_varlen_func, flash_attn_varlen_kvpacked_func,
                        flash_attn_varlen_qkvpacked_func, flash_attn_with_kvcache)
from philox_ref import keep_mask_batch, keep_mask_seq  # noqa: E402
from reference import ABS_FLOOR, assert_close_rule, attention_ref, attention_varlen_ref, kvcache_ref, max_err  # noqa: E402

N_CHUNKS = 40
# pytest defaults; scripts/reliability.py runs 2000 CUDA cases (the regular GPU tier stays quick).
DEFAULT_CASES = {"cpu": 300, "cuda": 400}
DEFAULT_SECONDS = {"cpu": 200.0, "cuda": 300.0}
APIS = [("func", 28), ("qkvpacked", 7), ("kvpacked", 7), ("varlen", 18), ("varlen_qkvpacked", 5),
        ("varlen_kvpacked", 5), ("paged", 8), ("kvcache", 22)]


def _env_int(name, default):
    return int(os.environ.get(name, "") or default)


def cases_for(device):
    return _env_int("FLASH_ATTN_FUZZ_CASES", DEFAULT_CASES[device])


def seconds_for(device):
    return float(os.environ.get("FLASH_ATTN_FUZZ_SECONDS", "") or DEFAULT_SECONDS[device])


# ---- configuration drawing ------------------------------------------------------------------------


def draw_config(index, device, base_seed=None):
    """A random but reproducible configuration for case `index`."""
    base_seed = _env_int("FLASH_ATTN_FUZZ_SEED", 0) if base_seed is None else base_seed
    r = random.Random(base_seed * 1_000_003 + index)
    gpu = device == "cuda"
    c = {"index": index, "seed": base_seed * 1_000_003 + index}
    c["api"] = r.choices([a for a, _ in APIS], weights=[w for _, w in APIS])[0]
    c["dtype"] = r.choice(["float16", "bfloat16"] if gpu else ["float32", "float32", "float16", "bfloat16"])
    if gpu:
        c["d"] = r.choice([32, 64, 64, 96, 128, 128, 160, 192, 256, 40, 72, 20, 59])
    else:
        c["d"] = r.choice([8, 16, 16, 32, 32, 40, 64, 5, 12, 24])
    max_s = 300 if gpu else 40
    c["batch"] = r.randint(1, 4 if gpu else 3)
    c["sq"] = r.choice([1, r.randint(1, max_s), r.randint(1, max_s // 4 + 1)])
    c["sk"] = r.choice([1, c["sq"], r.randint(1, max_s), r.randint(1, max_s // 4 + 1)])
    c["hk"] = r.choice([1, 2, 3]) if gpu else r.choice([1, 2])
    c["h"] = c["hk"] * r.choice([1, 1, 2, 3])
    if c["api"] in ("qkvpacked", "varlen_qkvpacked"):
        c["h"] = c["hk"]
        c["sk"] = c["sq"]
    c["causal"] = r.random() < 0.35
    c["window"] = (-1, -1)
    if r.random() < 0.25:
        c["window"] = (r.choice([-1, r.randint(0, c["sk"])]), r.choice([-1, r.randint(0, c["sk"])]))
    c["softcap"] = r.choice([0.0] * 4 + [round(r.uniform(0.5, 10.0), 3)])
    c["alibi"] = r.choice([None] * 4 + ["heads", "batch_heads"])
    c["scale"] = r.choice([None, None, None, round(r.uniform(0.05, 0.5), 4)])
    c["dropout_p"] = r.choice([0.0] * 4 + [0.1, 0.27]) if c["api"] not in ("paged", "kvcache") else 0.0
    c["deterministic"] = r.random() < 0.3
    c["grads"] = c["api"] not in ("paged", "kvcache") and r.random() < 0.7
    c["layout"] = r.choice(["contiguous", "contiguous", "padded", "transposed", "strided_last"])
    if c["api"].startswith("varlen") or c["api"] == "paged":
        c["lens_q"] = [r.choice([0, r.randint(1, c["sq"])]) if r.random() < 0.15 else r.randint(1, c["sq"])
                       for _ in range(c["batch"])]
        c["lens_k"] = [r.randint(0 if r.random() < 0.1 else 1, c["sk"]) for _ in range(c["batch"])]
        if c["api"] == "varlen_qkvpacked":
            c["lens_k"] = list(c["lens_q"])
        c["page_size"] = r.choice([1, 3, 4, 16, 64]) if c["api"] == "paged" else None
    if c["api"] == "kvcache":
        c["sq"] = r.choice([1, 1, r.randint(1, 6)])
        c["seqlen_new"] = r.choice([0, c["sq"], r.randint(0, 6)])
        c["cache"] = r.randint(max(1, c["seqlen_new"]), 300 if gpu else 48)
        c["page_size"] = r.choice([None, None, 1, 3, 16, 64])
        c["rotary"] = r.choice([None, None, "interleaved", "neox"])
        c["rotary_dim"] = 2 * r.randint(1, c["d"] // 2) if c["d"] >= 2 else 0
        if c["rotary_dim"] == 0:
            c["rotary"] = None
        c["leftpad"] = r.random() < 0.2
        c["batch_idx"] = c["page_size"] is None and r.random() < 0.2
        c["seqlens"] = r.choice(["tensor", "tensor", "tensor", "int", "none" if c["seqlen_new"] == 0 else "tensor"])
        c["num_splits"] = r.choice([0, 0, 1, 2, 3, 7])
    return c


# ---- tensor construction ----------------------------------------------------------------------------


def _dtype(c):
    return getattr(torch, c["dtype"])


def make(shape, c, device, requires_grad=False):
    """A tensor of `shape` in the case's memory layout; always a leaf."""
    dtype = _dtype(c)
    layout = c["layout"]
    if layout == "padded":  # rows padded: every stride but the last is larger than needed
        base = torch.randn(*shape[:-1], shape[-1] + 8, dtype=dtype, device=device)
        x = base[..., : shape[-1]]
    elif layout == "transposed" and len(shape) >= 3:  # heads outermost: (.., h, s, d) viewed as (.., s, h, d)
        perm_shape = list(shape)
        perm_shape[-3], perm_shape[-2] = perm_shape[-2], perm_shape[-3]
        x = torch.randn(*perm_shape, dtype=dtype, device=device).transpose(-3, -2)
    elif layout == "strided_last":  # last dim not contiguous: the wrapper must copy
        x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype, device=device)[..., ::2]
    else:
        x = torch.randn(*shape, dtype=dtype, device=device)
    return x.requires_grad_(requires_grad)


def _alibi(c, device):
    if c["alibi"] is None:
        return None
    shape = (c["h"],) if c["alibi"] == "heads" else (c["batch"], c["h"])
    return torch.rand(*shape, device=device, dtype=torch.float32) * 0.5


def _cu(lengths, device):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def _ref_kw(c, alibi):
    return dict(softmax_scale=c["scale"], causal=c["causal"], window=c["window"], softcap=c["softcap"],
                alibi_slopes=alibi, dropout_p=c["dropout_p"])


def _rng_state_for(seed, device):
    """The rng_state the forward draws right after torch.manual_seed(seed) (flash_attn/_backend.py)."""
    torch.manual_seed(seed)
    return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=device)


def _common_kw(c, alibi):
    return dict(dropout_p=c["dropout_p"], softmax_scale=c["scale"], causal=c["causal"], window_size=c["window"],
                softcap=c["softcap"], alibi_slopes=alibi, deterministic=c["deterministic"], return_attn_probs=True)


# ---- the comparison ----------------------------------------------------------------------------------

# Cases whose gradients needed the D-rounding allowance below (reported by scripts/reliability.py).
STATS = {"grad_checks": 0, "d_allowance_used": 0}


def compare(out, lse, inputs, ref_fn, dtype, check_grads):
    """helpers.compare_to_reference's rule (out/lse within 2x, grads within 3x the same-dtype torch
    error plus a floor), with one documented addition for the gradients of q and k.

    FlashAttention's backward computes D_i = rowsum(dO_i * O_i) from the STORED output, rounded to the
    dtype, so dS = P * (dP - D) carries an extra -delta_i * P_ij with delta_i = rowsum(dO_i * (round(O_i)
    - O_i)). Plain torch never forms D, so when the exact gradient is ~0 (one visible key, a one-hot
    softmax: common in small fuzz shapes, especially with dropout) its error is ~0 and the 3x rule would
    demand more than the algorithm can give. The extra term equals the gradient of sum_i delta_i * lse_i;
    it is computed here in fp64 and twice its size is added to the bound (counted in STATS)."""
    ref64 = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    base = [x.detach().clone().requires_grad_(x.requires_grad) for x in inputs]
    out64, lse64 = ref_fn(*ref64)
    outb, lseb = ref_fn(*base)
    assert ours_shape_ok(out, out64) and ours_shape_ok(lse, lse64), (out.shape, out64.shape, lse.shape, lse64.shape)
    assert lse.dtype == torch.float32
    assert_close_rule("out", out, outb, out64, dtype)
    assert_close_rule("softmax_lse", lse, lseb, lse64, dtype)
    if not check_grads:
        return
    STATS["grad_checks"] += 1
    dout = torch.randn_like(out)
    leaves = [i for i, x in enumerate(inputs) if x.requires_grad]
    ours = torch.autograd.grad(out, [inputs[i] for i in leaves], dout)
    g64 = torch.autograd.grad(out64, [ref64[i] for i in leaves], dout.double(), retain_graph=True)
    gb = torch.autograd.grad(outb, [base[i] for i in leaves], dout)
    o64 = out64.detach()
    delta = (dout.double() * (o64.to(dtype).double() - o64)).sum(-1).transpose(-1, -2)  # lse's layout
    lse_finite = torch.where(torch.isfinite(lse64), lse64, torch.zeros_like(lse64))
    allow = torch.autograd.grad((delta * lse_finite).sum(), [ref64[i] for i in leaves], allow_unused=True)
    used = False
    for n, (a, b, c, extra) in enumerate(zip(ours, gb, g64, allow)):
        assert a.shape == c.shape, (n, a.shape, c.shape)
        strict = 3.0 * max_err(b, c) + ABS_FLOOR[dtype]
        slack = 0.0 if extra is None else 2.0 * extra.abs().max().item() if extra.numel() else 0.0
        err = max_err(a, c)
        assert err <= strict + slack, (f"grad[{leaves[n]}]: error {err:.3e} exceeds 3 x baseline "
                                       f"{max_err(b, c):.3e} + {ABS_FLOOR[dtype]:.0e} + D allowance {slack:.3e}")
        used = used or err > strict
    STATS["d_allowance_used"] += int(used)


def ours_shape_ok(x, ref):
    return x.shape == ref.shape


# ---- runners (one per API family) -------------------------------------------------------------------


def run_fixed(c, device):
    b, sq, sk, h, hk, d = c["batch"], c["sq"], c["sk"], c["h"], c["hk"], c["d"]
    g = c["grads"]
    alibi = _alibi(c, device)
    api = c["api"]
    if api == "qkvpacked":
        inputs = [make((b, sq, 3, h, d), c, device, g)]
        call = lambda: flash_attn_qkvpacked_func(inputs[0], **_common_kw(c, alibi))  # noqa: E731
        split = lambda qkv: qkv.unbind(2)  # noqa: E731
    elif api == "kvpacked":
        inputs = [make((b, sq, h, d), c, device, g), make((b, sk, 2, hk, d), c, device, g)]
        call = lambda: flash_attn_kvpacked_func(*inputs, **_common_kw(c, alibi))  # noqa: E731
        split = lambda q, kv: (q, *kv.unbind(2))  # noqa: E731
    else:
        inputs = [make((b, sq, h, d), c, device, g), make((b, sk, hk, d), c, device, g),
                  make((b, sk, hk, d), c, device, g)]
        call = lambda: flash_attn_func(*inputs, **_common_kw(c, alibi))  # noqa: E731
        split = lambda q, k, v: (q, k, v)  # noqa: E731
    keep = None
    if c["dropout_p"] > 0:
        keep = keep_mask_batch(_rng_state_for(c["seed"], device), b, h, sq, sk, c["dropout_p"]).to(device)
    torch.manual_seed(c["seed"])
    out, lse, _ = call()
    kw = _ref_kw(c, alibi)

    def ref(*xs):
        o, l, _ = attention_ref(*split(*xs), keep_mask=keep, **kw)
        return o, l

    compare(out, lse, inputs, ref, _dtype(c), check_grads=g)


def run_varlen(c, device):
    h, hk, d = c["h"], c["hk"], c["d"]
    lq, lk = c["lens_q"], c["lens_k"]
    tq, tk = sum(lq), sum(lk)
    g = c["grads"]
    alibi = _alibi(c, device)
    cu_q, cu_k = _cu(lq, device), _cu(lk, device)
    mq, mk = max(lq), max(lk)
    api = c["api"]
    kw_ours = _common_kw(c, alibi)
    if api == "varlen_qkvpacked":
        inputs = [make((tq, 3, h, d), c, device, g)]
        call = lambda: flash_attn_varlen_qkvpacked_func(inputs[0], cu_q, mq, **kw_ours)  # noqa: E731
        split = lambda qkv: qkv.unbind(1)  # noqa: E731
    elif api == "varlen_kvpacked":
        inputs = [make((tq, h, d), c, device, g), make((tk, 2, hk, d), c, device, g)]
        call = lambda: flash_attn_varlen_kvpacked_func(*inputs, cu_q, cu_k, mq, mk, **kw_ours)  # noqa: E731
        split = lambda q, kv: (q, *kv.unbind(1))  # noqa: E731
    else:
        inputs = [make((tq, h, d), c, device, g), make((tk, hk, d), c, device, g), make((tk, hk, d), c, device, g)]
        call = lambda: flash_attn_varlen_func(*inputs, cu_q, cu_k, mq, mk, **kw_ours)  # noqa: E731
        split = lambda q, k, v: (q, k, v)  # noqa: E731
    keeps = None
    if c["dropout_p"] > 0:
        rng_state = _rng_state_for(c["seed"], device)
        keeps = [keep_mask_seq(rng_state, b, h, lq[b], lk[b], c["dropout_p"]).to(device) for b in range(len(lq))]
    torch.manual_seed(c["seed"])
    out, lse, _ = call()
    kw = _ref_kw(c, alibi)
    cu_q_host, cu_k_host = cu_q.cpu(), cu_k.cpu()

    def ref(*xs):
        return attention_varlen_ref(*split(*xs), cu_q_host, cu_k_host, keep_masks=keeps, **kw)

    compare(out, lse, inputs, ref, _dtype(c), check_grads=g)


def run_paged(c, device):
    """Varlen forward over a paged K/V (shuffled block table with spare pages)."""
    h, hk, d, page = c["h"], c["hk"], c["d"], c["page_size"]
    lq, lk = c["lens_q"], c["lens_k"]
    batch = len(lq)
    per_seq = max(1, math.ceil(max(lk) / page))
    n_pages = batch * per_seq + 2
    table = torch.randperm(n_pages)[: batch * per_seq].view(batch, per_seq).to(torch.int32)
    q = make((sum(lq), h, d), c, device)
    kp, vp = make((n_pages, page, hk, d), c, device), make((n_pages, page, hk, d), c, device)
    alibi = _alibi(c, device)
    cu_q, cu_k = _cu(lq, device), _cu(lk, device)
    out, lse, _ = flash_attn_varlen_func(q, kp, vp, cu_q, cu_k, max(lq), max(lk), block_table=table.to(device),
                                         **_common_kw(c, alibi))
    # Gather each sequence's keys into a packed (total_k, hk, d) tensor for the reference: key t of
    # sequence b is row t % page of page table[b, t // page].
    sel = torch.cat([table[b, torch.arange(lk[b]) // page].long() * page + torch.arange(lk[b]) % page
                     for b in range(batch)]).to(device)
    k = kp.reshape(-1, hk, d)[sel]
    v = vp.reshape(-1, hk, d)[sel]
    kw = _ref_kw(c, alibi)
    cu_q_host, cu_k_host = cu_q.cpu(), cu_k.cpu()

    def ref(q_, k_, v_):
        return attention_varlen_ref(q_, k_, v_, cu_q_host, cu_k_host, **kw)

    compare(out, lse, [q, k, v], ref, _dtype(c), check_grads=False)


def _rotary_tables(seqlen, rotary_dim, dtype, device):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    angles = torch.arange(seqlen, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().to(dtype).to(device), angles.sin().to(dtype).to(device)


def run_kvcache(c, device):
    b, sq, h, hk, d, sn = c["batch"], c["sq"], c["h"], c["hk"], c["d"], c["seqlen_new"]
    dtype, page = _dtype(c), c["page_size"]
    q = make((b, sq, h, d), c, device)
    k_new = make((b, sn, hk, d), c, device) if sn else None
    v_new = make((b, sn, hk, d), c, device) if sn else None
    block_table = batch_idx = None
    if page is not None:
        per_seq = math.ceil(c["cache"] / page)
        n_pages = b * per_seq + 2
        block_table = torch.randperm(n_pages)[: b * per_seq].view(b, per_seq).to(torch.int32)
        cache_shape, capacity = (n_pages, page, hk, d), per_seq * page
    else:
        batch_cache = b + 2 if c["batch_idx"] else b
        cache_shape, capacity = (batch_cache, c["cache"], hk, d), c["cache"]
        if c["batch_idx"]:
            batch_idx = torch.randperm(batch_cache)[:b].to(torch.int32)
    k_cache = torch.randn(cache_shape, dtype=dtype, device=device)
    v_cache = torch.randn(cache_shape, dtype=dtype, device=device)
    if c["seqlens"] == "none":
        seqlens, seqlens_arg = torch.full((b,), capacity, dtype=torch.int32), None
    elif c["seqlens"] == "int":
        n = int(torch.randint(0, capacity - sn + 1, ()))
        seqlens, seqlens_arg = torch.full((b,), n, dtype=torch.int32), n
    else:
        seqlens = torch.randint(0, capacity - sn + 1, (b,), dtype=torch.int32)
        seqlens_arg = seqlens.to(device)
    leftpad = None
    if c["leftpad"]:
        leftpad = torch.stack([torch.randint(0, int(s) + 1, ()) for s in seqlens]).to(torch.int32)
    cos = sin = None
    if c["rotary"] is not None:
        # Rows for every position a query can take (cache_seqlens + i <= capacity + sq - 1): a full
        # cache queried without new keys rotates q at position `capacity`.
        cos, sin = _rotary_tables(capacity + sq, c["rotary_dim"], dtype, device)
    alibi = _alibi(c, device)
    interleaved = c["rotary"] == "interleaved"
    # A window side that cannot bind (>= the cache size) is dropped before the call is classified as
    # local, as in flash-attn's mha_fwd_kvcache (and csrc/validate.cpp): it decides whether query rows
    # are rotated at per-row positions. The masks are the same either way.
    left, right = c["window"]
    ref_window = (-1 if left >= capacity else left, -1 if right >= capacity and right >= sq else right)
    ref_args = dict(k_cache=k_cache.clone(), v_cache=v_cache.clone(), k=k_new, v=v_new, rotary_cos=cos,
                    rotary_sin=sin, cache_batch_idx=batch_idx, cache_leftpad=leftpad, block_table=block_table,
                    softmax_scale=c["scale"], causal=c["causal"], window=ref_window, softcap=c["softcap"],
                    rotary_interleaved=interleaved, alibi_slopes=alibi)
    to_dev = (lambda x: None if x is None else x.to(device))  # noqa: E731
    out, lse = flash_attn_with_kvcache(
        q, k_cache, v_cache, k=k_new, v=v_new, rotary_cos=cos, rotary_sin=sin, cache_seqlens=seqlens_arg,
        cache_batch_idx=to_dev(batch_idx), cache_leftpad=to_dev(leftpad), block_table=to_dev(block_table),
        softmax_scale=c["scale"], causal=c["causal"], window_size=c["window"], softcap=c["softcap"],
        rotary_interleaved=interleaved, alibi_slopes=alibi, num_splits=c["num_splits"], return_softmax_lse=True)
    args64 = {key: x.double() if isinstance(x, torch.Tensor) and torch.is_floating_point(x) and key != "alibi_slopes"
              else x for key, x in ref_args.items()}
    out64, lse64, kc64, vc64 = kvcache_ref(q.double(), cache_seqlens=seqlens, **args64)
    outb, lseb, kcb, vcb = kvcache_ref(q, cache_seqlens=seqlens, **ref_args)
    assert_close_rule("out", out, outb, out64, dtype)
    assert_close_rule("softmax_lse", lse, lseb, lse64, dtype)
    assert_close_rule("k_cache", k_cache, kcb, kc64, dtype)
    assert_close_rule("v_cache", v_cache, vcb, vc64, dtype)


RUNNERS = {"func": run_fixed, "qkvpacked": run_fixed, "kvpacked": run_fixed, "varlen": run_varlen,
           "varlen_qkvpacked": run_varlen, "varlen_kvpacked": run_varlen, "paged": run_paged,
           "kvcache": run_kvcache}


def run_case(index, device, base_seed=None):
    """Runs case `index`; returns (config, None) on success or (config, failure message)."""
    c = draw_config(index, device, base_seed)
    torch.manual_seed(c["seed"])
    try:
        RUNNERS[c["api"]](c, device)
    except Exception as e:  # noqa: BLE001  (every failure is recorded with its configuration)
        if "not built" in str(e):
            return c, None  # a filtered build (FLASH_ATTN_HDIMS/DTYPES) lacks that kernel
        return c, f"{type(e).__name__}: {e}"
    return c, None


def run_fuzz(device, first, count, deadline):
    """Cases [first, first + count) until `deadline` (time.monotonic()). Returns (ran, failures)."""
    ran, failures = 0, []
    for i in range(first, first + count):
        if time.monotonic() > deadline:
            break
        c, failure = run_case(i, device)
        ran += 1
        if failure is not None:
            failures.append({"case": i, "config": c, "failure": failure})
    return ran, failures


# ---- pytest: the cases are split into chunks (pytest-xdist spreads them on the GPU machine) ----------


_DEADLINE = {}  # device -> time.monotonic() deadline, set by the first chunk this process runs


@pytest.mark.parametrize("chunk", range(N_CHUNKS))
def test_fuzz(device, chunk):
    total = cases_for(device)
    per_chunk = math.ceil(total / N_CHUNKS)
    first = chunk * per_chunk
    count = max(0, min(per_chunk, total - first))
    if count == 0:
        pytest.skip("no cases left for this chunk")
    # One budget per process and device (xdist workers each get their own, running in parallel).
    deadline = _DEADLINE.setdefault(device, time.monotonic() + seconds_for(device))
    ran, failures = run_fuzz(device, first, count, deadline)
    assert not failures, "\n".join(f"case {f['case']} {f['config']}: {f['failure']}" for f in failures)
    if ran < count:
        pytest.skip(f"time budget: ran {ran} of {count} cases")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--case", type=int, help="replay one case")
    args = ap.parse_args()
    if args.case is not None:
        cfg, fail = run_case(args.case, args.device)
        print(cfg)
        print("OK" if fail is None else fail)
    else:
        n = cases_for(args.device)
        t0 = time.monotonic()
        ran, fails = run_fuzz(args.device, 0, n, t0 + seconds_for(args.device))
        print(f"{ran} cases, {len(fails)} failures, {time.monotonic() - t0:.1f} s, {STATS}")
        for f in fails:
            print(f)
