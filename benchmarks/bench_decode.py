"""Decode grid (BENCH.md): one query token per sequence against a full KV cache.

Ours runs flash_attn_with_kvcache on a contiguous cache and on paged caches (page 16 and 256, the
block table a random permutation so pages are scattered as in a real allocator). Peers read the
same cache contents as dense tensors (SDPA has no paged cache). Rows report us per call and tbps =
(bytes of K and V read + q read + out written) / time. GQA peers get `enable_gqa`; a backend that
rejects it is retried with K/V expanded to the q heads (row "note" says so; it reads 4x the
K/V bytes while tbps still counts the GQA bytes, so compare such rows by time).
"""
import math

import torch

from peers import last_impl
from results_io import DTYPE_NAMES, decode_bytes, log, round_sig
from timing import num_input_sets, time_fn

DECODE_HDIM = 128
DECODE_NHEADS, DECODE_NHEADS_KV = 32, 8
DECODE_SHAPES = [(1, 8192), (32, 8192), (128, 2048), (8, 65536)]  # (batch, context)
DECODE_QUICK_SHAPES = [(1, 8192), (32, 8192)]
CPU_DECODE_SHAPES = [(1, 2048), (4, 1024)]
PAGE_SIZES = [16, 256]


def _cache_set(batch, context, dtype, device):
    q = torch.randn(batch, 1, DECODE_NHEADS, DECODE_HDIM, device=device, dtype=dtype)
    k = torch.randn(batch, context, DECODE_NHEADS_KV, DECODE_HDIM, device=device, dtype=dtype)
    v = torch.randn_like(k)
    return {"q": q, "k": k, "v": v, "block_table": None}


def _paged(dense, page_size):
    """Same contents as `dense`, stored in pages at random physical positions."""
    k, v = dense["k"], dense["v"]
    batch, context = k.shape[:2]
    pages_per_seq = context // page_size
    num_pages = batch * pages_per_seq
    block_table = torch.randperm(num_pages, device=k.device).to(torch.int32).view(batch, pages_per_seq)
    shape = (num_pages, page_size) + tuple(k.shape[2:])
    k_pages = torch.empty(shape, dtype=k.dtype, device=k.device)
    v_pages = torch.empty_like(k_pages)
    order = block_table.flatten().long()  # logical page (b, p) lives at physical page order[b*P+p]
    k_pages[order] = k.reshape(shape)
    v_pages[order] = v.reshape(shape)
    return {"q": dense["q"], "k": k_pages, "v": v_pages, "block_table": block_table}


def _decode_call(impl, cache_seqlens, scale):
    def call(s):
        with impl.scope():
            return impl.decode(s["q"], s["k"], s["v"], cache_seqlens, s["block_table"], scale)
    return call


def run_decode_grid(args, device, impls, results, notes, deadline_passed):
    shapes = CPU_DECODE_SHAPES if device.type != "cuda" else (
        DECODE_QUICK_SHAPES if args.quick else DECODE_SHAPES)
    page_sizes = PAGE_SIZES
    scale = 1.0 / math.sqrt(DECODE_HDIM)
    for dtype in args.dtypes:
        for batch, context in shapes:
            if deadline_passed():
                log("[decode] time budget reached; stopping")
                return
            try:
                _run_decode_config(args, device, impls, results, notes, dtype, batch, context,
                                   page_sizes, scale)
            except torch.cuda.OutOfMemoryError as exc:
                notes.append({"op": "decode", "batch": batch, "seqlen_k": context,
                              "reason": f"out of memory building inputs: {exc}"[:300]})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            results.save()


def _run_decode_config(args, device, impls, results, notes, dtype, batch, context, page_sizes,
                       scale):
    elem = torch.tensor([], dtype=dtype).element_size()
    nbytes = decode_bytes(batch, 1, context, DECODE_NHEADS, DECODE_NHEADS_KV, DECODE_HDIM, elem)
    sets = [_cache_set(batch, context, dtype, device) for _ in range(num_input_sets(nbytes, device))]
    cache_seqlens = torch.full((batch,), context, dtype=torch.int32, device=device)
    base = {"op": "decode", "dtype": DTYPE_NAMES[dtype], "hdim": DECODE_HDIM, "causal": True,
            "batch": batch, "seqlen_q": 1, "seqlen_k": context, "nheads": DECODE_NHEADS,
            "nheads_kv": DECODE_NHEADS_KV}
    reference = [None]  # first dense output, to flag an implementation that is fast but wrong

    def measure(impl, page_size, layout_sets, note=None):
        row = dict(base, impl=impl.name)
        if page_size is not None:
            row["page_size"] = page_size
        if note:
            row["note"] = note
        label = f"decode {row['dtype']} b={batch} ctx={context} page={page_size} {impl.name}"
        try:
            call = _decode_call(impl, cache_seqlens, scale)
            out = call(layout_sets[0])
            if reference[0] is None:
                reference[0] = out.float()
            else:
                row["max_diff"] = round_sig((out.float() - reference[0]).abs().max().item(), 3)
            timing = time_fn(call, layout_sets, device)
        except Exception as exc:
            log(f"[skip] {label}{' (' + note + ')' if note else ''}: {exc!r}"[:400])
            notes.append(dict(row, reason=repr(exc)[:300]))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return False
        row["ms"] = round_sig(timing.ms)
        row["us"] = round_sig(timing.ms * 1e3)
        row["tbps"] = round_sig(nbytes / (timing.ms * 1e-3) / 1e12)
        if impl.name.startswith("ours"):
            row["path"] = last_impl()
        log(f"{label}: {row['us']} us, {row['tbps']} TB/s")
        results.add(row)
        return True

    for impl in impls:
        ok = measure(impl, None, sets)
        if impl.name.startswith("ours"):
            for page_size in page_sizes:
                if context % page_size == 0:
                    measure(impl, page_size, [_paged(s, page_size) for s in sets])
        elif not ok:
            # A peer without GQA support: what a user would do is expand K/V to the q heads. It
            # then reads 4x the K/V bytes; tbps still counts the GQA bytes, so it compares time.
            group = DECODE_NHEADS // DECODE_NHEADS_KV
            expanded = [dict(s, k=s["k"].repeat_interleave(group, dim=2),
                             v=s["v"].repeat_interleave(group, dim=2)) for s in sets]
            measure(impl, None, expanded, note=f"kv heads expanded x{group} (no GQA support)")
            del expanded
