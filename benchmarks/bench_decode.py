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


# ---------------------------------------------------------------------------------------------
# Stand-alone A/B runs (the kvcache helper's H100 experiments), e.g.
#   python3 benchmarks/bench_decode.py --shapes 1x8192,32x8192 --impls ours,cudnn \
#       --variants "fused:;twokernel:FLASH_KVCACHE_NO_FUSED_COMBINE=1" --out /tmp/d.jsonl
# Each variant (environment settings the kvcache backend reads once per process) runs in its own
# subprocess; timing is the suite's (timing.time_fn: cold L2 through rotated input sets).
# --inproc: the variants instead run interleaved in ONE process (variant A, B, A, B, ... for
# --repeats rounds per configuration; only for switches the backend reads on every call, e.g.
# FLASH_KVCACHE_BULK), and a median-per-variant summary is printed at the end.
# --layout bhsd stores the cache head-major ((b, h, s, d) memory, passed as a (b, s, h, d) view):
# each (sequence, kv head) stream is then contiguous, a probe of DRAM locality, not a real layout.
# ---------------------------------------------------------------------------------------------
def _cli():
    import argparse
    import json
    import os
    import subprocess
    import sys

    p = argparse.ArgumentParser(description="decode A/B runs")
    p.add_argument("--shapes", default="1x8192,32x8192,128x2048,8x65536")
    p.add_argument("--impls", default="ours")
    p.add_argument("--pages", default="none", help="comma list of none / page sizes (ours only)")
    p.add_argument("--layout", default="bshd", choices=["bshd", "bhsd"])
    p.add_argument("--num-splits", default="0", help="comma list (ours only)")
    p.add_argument("--variants", default=None,
                   help="'name:K=V,K=V;name2:...' environment variants, one subprocess each")
    p.add_argument("--inproc", action="store_true",
                   help="interleave the --variants in this process (per-call switches only)")
    p.add_argument("--repeats", type=int, default=3, help="--inproc rounds per configuration")
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None, help="append one JSON line per measurement")
    p.add_argument("--target-ms", type=float, default=100.0)
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    args = p.parse_args()

    variants = [("", {})]
    if args.variants and args.inproc:
        variants = []
        for spec in args.variants.split(";"):
            name, _, assigns = spec.partition(":")
            env = dict(kv.partition("=")[::2] for kv in filter(None, assigns.split(",")))
            variants.append((name, env))
    elif args.variants:
        rc = 0
        for spec in args.variants.split(";"):
            name, _, assigns = spec.partition(":")
            env = dict(os.environ)
            for kv in filter(None, assigns.split(",")):
                k, _, v = kv.partition("=")
                env[k] = v
            cmd = [sys.executable, __file__] + [a for a in sys.argv[1:]]
            i = cmd.index("--variants")
            del cmd[i:i + 2]
            cmd += ["--label", (args.label + " " if args.label else "") + name]
            rc |= subprocess.run(cmd, env=env).returncode
        sys.exit(rc)

    from peers import make_impl
    import statistics
    summary = {}  # (shape, impl, page, splits, variant) -> [us, ...]
    all_keys = sorted({k for _, env in variants for k in env})

    def set_variant(env):
        for k in all_keys:
            if k in env:
                os.environ[k] = env[k]
            else:
                os.environ.pop(k, None)
    device = torch.device(args.device)
    dtype = torch.bfloat16
    scale = 1.0 / math.sqrt(DECODE_HDIM)
    impls = [make_impl(n) for n in args.impls.split(",")]
    for impl in impls:
        impl.check(device)
    for shape in args.shapes.split(","):
        batch, context = (int(x) for x in shape.split("x"))
        nbytes = decode_bytes(batch, 1, context, DECODE_NHEADS, DECODE_NHEADS_KV, DECODE_HDIM, 2)
        sets = []
        for _ in range(num_input_sets(nbytes, device)):
            s = _cache_set(batch, context, dtype, device)
            if args.layout == "bhsd":
                for name in ("k", "v"):
                    s[name] = s[name].transpose(1, 2).contiguous().transpose(1, 2)
            sets.append(s)
        cache_seqlens = torch.full((batch,), context, dtype=torch.int32, device=device)
        s0 = sets[0]
        ref = F_sdpa_reference(s0["q"], s0["k"], s0["v"], scale)
        for impl in impls:
            ours = impl.name.startswith("ours")
            for page in (args.pages.split(",") if ours else ["none"]):
                if page != "none" and context % int(page):
                    continue
                layout_sets = sets if page == "none" else [_paged(s, int(page)) for s in sets]
                for ns in (args.num_splits.split(",") if ours else ["0"]):
                    if ours:
                        fa = impl.fa

                        def call(s, ns=int(ns), fa=fa):
                            return fa.flash_attn_with_kvcache(
                                s["q"], s["k"], s["v"], cache_seqlens=cache_seqlens,
                                block_table=s["block_table"], softmax_scale=scale, causal=True,
                                num_splits=ns)
                    else:
                        call = _decode_call(impl, cache_seqlens, scale)
                    rounds = args.repeats if (args.inproc and ours) else 1
                    for rnd in range(rounds):
                        for vname, venv in (variants if ours else [("", {})]):
                            set_variant(venv)
                            label = (args.label + " " + vname).strip()
                            try:
                                out = call(layout_sets[0])
                                diff = (out.float() - ref).abs().max().item()
                                t = time_fn(call, layout_sets, device, target_ms=args.target_ms)
                            except Exception as exc:  # report and go on
                                print(f"[skip] {label} {impl.name} {shape} page={page}: {exc!r}"[:300])
                                continue
                            row = {"label": label, "impl": impl.name, "batch": batch,
                                   "context": context, "page": page, "layout": args.layout,
                                   "num_splits": int(ns), "round": rnd,
                                   "us": round(t.ms * 1e3, 2), "min_us": round(t.min_ms * 1e3, 2),
                                   "tbps": round(nbytes / (t.ms * 1e-3) / 1e12, 3), "max_diff": diff}
                            print(f"{label:>14} {impl.name:>12} {shape:>9} page={page:>4} "
                                  f"{args.layout} splits={ns:>3}: {row['us']:8.2f} us "
                                  f"(min {row['min_us']:8.2f}) {row['tbps']:.3f} TB/s diff {diff:.2e}",
                                  flush=True)
                            key = (shape, impl.name, page, ns, vname)
                            summary.setdefault(key, []).append(t.ms * 1e3)
                            if args.out:
                                with open(args.out, "a") as f:
                                    f.write(json.dumps(row) + "\n")
                    set_variant({})
                del layout_sets
        del sets
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.inproc:
        print("\nmedian over rounds (us) [all rounds]")
        for key, times in summary.items():
            shape, name, page, ns, vname = key
            b, c = (int(x) for x in shape.split("x"))
            nb = decode_bytes(b, 1, c, DECODE_NHEADS, DECODE_NHEADS_KV, DECODE_HDIM, 2)
            med = statistics.median(times)
            print(f"{vname:>10} {name:>12} {shape:>9} page={page:>4} splits={ns:>3}: {med:8.2f} us "
                  f"{nb / (med * 1e-6) / 1e12:.3f} TB/s  {[round(x, 1) for x in times]}", flush=True)


def F_sdpa_reference(q, k, v, scale):
    """fp32 decode reference for one input set (every key visible: one query row, full cache)."""
    group = q.shape[2] // k.shape[2]
    kf = k.float().repeat_interleave(group, dim=2).transpose(1, 2)
    vf = v.float().repeat_interleave(group, dim=2).transpose(1, 2)
    qf = q.float().transpose(1, 2)
    return torch.nn.functional.scaled_dot_product_attention(qf, kf, vf, scale=scale).transpose(1, 2)


if __name__ == "__main__":
    _cli()
