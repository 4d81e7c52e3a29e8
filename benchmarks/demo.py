#!/usr/bin/env python
"""The five-minute demo: is flash_attn correct here, and how fast is it next to torch?

On the GPU when there is one (else the CPU) it runs flash_attn_func forward and forward+backward on
a few shapes, checks out/dq/dk/dv against a naive float64 reference (PASS/FAIL; exit status 1 on
any FAIL), times ours against torch's attention on the same device and inputs, writes
benchmarks/results/<device-slug>-demo.json (BENCH.md format) and prints the timing table last.

  python benchmarks/demo.py                 # auto device
  python benchmarks/demo.py --device cpu --budget-s 120
"""
import argparse
import collections
import math
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(BENCH_DIR))  # repo root, last: see bench_attention.py

import torch  # noqa: E402

from peers import Unavailable, available_impls, import_flash_attn, last_impl  # noqa: E402
from reference import forward_backward, naive_attention  # noqa: E402
from results_io import (DTYPE_NAMES, DTYPES_BY_NAME, ResultFile, default_out_path, log,  # noqa: E402
                        op_flops, round_sig)
from timing import num_input_sets, time_attention_op  # noqa: E402

Shape = collections.namedtuple("Shape", "dtype batch nheads nheads_kv seqlen hdim causal")

# Small enough for a busy 2-core CPU (torch's CPU bf16 attention is slow: bf16 shapes stay small).
# Ordered cheap first; a shape whose predicted cost would overrun the budget is skipped.
CPU_SHAPES = [
    Shape(torch.float32, 2, 8, 8, 512, 64, False),
    Shape(torch.bfloat16, 1, 8, 8, 512, 128, True),
    Shape(torch.float32, 1, 8, 2, 1024, 64, True),     # GQA 4:1
    Shape(torch.float32, 1, 8, 8, 1024, 128, True),
    Shape(torch.bfloat16, 1, 8, 8, 1024, 64, False),
    Shape(torch.float32, 1, 8, 8, 2048, 64, True),
]
GPU_SHAPES = [
    Shape(torch.bfloat16, 4, 16, 16, 2048, 128, False),
    Shape(torch.bfloat16, 4, 16, 16, 2048, 128, True),
    Shape(torch.float16, 1, 16, 16, 4096, 64, True),  # the fp64 reference must fit: b*h*s^2*8 B
    Shape(torch.bfloat16, 2, 32, 8, 2048, 128, True),  # GQA 4:1
    Shape(torch.bfloat16, 1, 8, 8, 4096, 256, False),
]
GPU_PEERS = ["torch_flash", "cudnn", "efficient", "flex"]
OURS_VARIANTS = ["ours", "ours_sm80", "ours_sm90"]
OPS = ["fwd", "fwd_bwd"]
# Error allowed: ours <= factor * (naive in-dtype error) + atol, the flash-attn test convention.
ERROR_FACTOR = {"out": 2.0, "dq": 3.0, "dk": 3.0, "dv": 3.0}
FP32_REL_FLOOR = 1e-5  # of max |reference|


def describe(s):
    heads = f"h={s.nheads}" if s.nheads == s.nheads_kv else f"h={s.nheads}/{s.nheads_kv}"
    return (f"{DTYPE_NAMES[s.dtype]} b={s.batch} {heads} s={s.seqlen} d={s.hdim} "
            f"causal={int(s.causal)}")


def make_inputs(s, device):
    q = torch.randn(s.batch, s.seqlen, s.nheads, s.hdim, device=device, dtype=s.dtype)
    k = torch.randn(s.batch, s.seqlen, s.nheads_kv, s.hdim, device=device, dtype=s.dtype)
    v = torch.randn_like(k)
    return q, k, v


# ---------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------
def check_shape(s, ours_impls, device):
    """Compare every ours variant against float64; tolerance from the naive in-dtype error."""
    scale = 1.0 / math.sqrt(s.hdim)
    q, k, v = make_inputs(s, device)
    dout = torch.randn(q.shape, device=device, dtype=s.dtype)
    exact = forward_backward(lambda a, b, c: naive_attention(a, b, c, s.causal, scale, torch.float64),
                             q, k, v, dout)
    naive = forward_backward(lambda a, b, c: naive_attention(a, b, c, s.causal, scale, s.dtype),
                             q, k, v, dout)
    names = ("out", "dq", "dk", "dv")
    tol = {}
    for name, ref, low in zip(names, exact, naive):
        rounding = (ref.to(s.dtype).double() - ref).abs().max().item()
        # fp32: naive and ours both sit a few ulps from float64, and a 3x-of-tiny bound would
        # reject a different (equally valid) summation order; a relative floor absorbs that.
        floor = FP32_REL_FLOOR * max(1.0, ref.abs().max().item()) if s.dtype == torch.float32 else 0.0
        atol = 2 * rounding + floor
        tol[name] = ERROR_FACTOR[name] * (low.double() - ref).abs().max().item() + atol
    del naive
    checks = []
    for impl in ours_impls:
        entry = {"impl": impl.name, "shape": describe(s), "dtype": DTYPE_NAMES[s.dtype],
                 "hdim": s.hdim, "causal": s.causal, "batch": s.batch, "seqlen_q": s.seqlen,
                 "seqlen_k": s.seqlen, "nheads": s.nheads, "nheads_kv": s.nheads_kv}
        try:
            with impl.scope():
                got = forward_backward(lambda a, b, c: impl.attention(a, b, c, s.causal, scale),
                                       q, k, v, dout)
            entry["path"] = last_impl()
        except Exception as exc:
            # The public entry point must work; a forced path may legitimately refuse a shape it
            # does not support (recorded as SKIP, not FAIL). Wrong numbers always FAIL.
            entry.update(passed=False if impl.name == "ours" else None, error=repr(exc)[:300])
            checks.append(entry)
            continue
        errors = {n: (g.double() - r).abs().max().item() for n, g, r in zip(names, got, exact)}
        finite = all(math.isfinite(e) for e in errors.values())
        entry["max_err"] = {n: round_sig(e, 3) for n, e in errors.items()}
        entry["tol"] = {n: round_sig(t, 3) for n, t in tol.items()}
        entry["passed"] = finite and all(errors[n] <= tol[n] for n in names)
        checks.append(entry)
    return checks


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def time_shape(s, impls, device, results):
    scale = 1.0 / math.sqrt(s.hdim)
    elem = torch.tensor([], dtype=s.dtype).element_size()
    set_bytes = elem * s.batch * s.seqlen * s.hdim * (3 * s.nheads + 2 * s.nheads_kv)
    sets = []
    for _ in range(num_input_sets(set_bytes, device)):
        q, k, v = make_inputs(s, device)
        sets.append({"q": q.requires_grad_(), "k": k.requires_grad_(), "v": v.requires_grad_()})
    base = {"dtype": DTYPE_NAMES[s.dtype], "hdim": s.hdim, "causal": s.causal, "batch": s.batch,
            "seqlen_q": s.seqlen, "seqlen_k": s.seqlen, "nheads": s.nheads,
            "nheads_kv": s.nheads_kv}
    on_cpu = device.type != "cuda"
    for op in OPS:
        for impl in impls:
            try:
                timing = time_attention_op(op, impl, sets, s.causal, scale, device,
                                           target_ms=500.0 if on_cpu else 100.0)
            except Exception as exc:
                log(f"[skip] {op} {describe(s)} {impl.name}: {exc!r}"[:300])
                results.data["skipped"].append(dict(base, op=op, impl=impl.name,
                                                    reason=repr(exc)[:300]))
                continue
            flops = op_flops(op, s.batch, s.seqlen, s.seqlen, s.nheads, s.hdim, s.causal)
            row = dict(base, op=op, impl=impl.name, ms=round_sig(timing.ms),
                       tflops=round_sig(flops / (timing.ms * 1e-3) / 1e12))
            if impl.name.startswith("ours"):
                row["path"] = last_impl()
            log(f"  {op:>7} {impl.name:>11}: {row['ms']} ms")
            results.add(row)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def verdict(check):
    return {True: "PASS", False: "FAIL", None: "SKIP"}[check["passed"]]


def print_checks(checks):
    print("\nCorrectness vs float64 reference (max abs error / tolerance):")
    print(f"{'shape':<40} {'impl':<10} {'path':<6} {'out':>19} {'dq':>19} {'dk':>19} {'dv':>19}  verdict")
    for c in checks:
        if "error" in c:
            print(f"{c['shape']:<40} {c['impl']:<10} {'-':<6} ERROR {c['error'][:90]}  {verdict(c)}")
            continue
        cells = " ".join(f"{c['max_err'][n]:>9.2e}/{c['tol'][n]:<9.2e}" for n in ("out", "dq", "dk", "dv"))
        print(f"{c['shape']:<40} {c['impl']:<10} {str(c.get('path')):<6} {cells}  {verdict(c)}")


def print_timings(rows, shapes):
    print("\nTiming (median; 'ours speedup' = impl ms / ours ms, > 1 means ours is faster):")
    print(f"{'shape':<40} {'op':<8} {'impl':<12} {'ms':>10} {'TFLOP/s':>9} {'ours speedup':>13}")
    for s in shapes:
        for op in OPS:
            block = [r for r in rows if r["op"] == op and describe_row(r) == describe(s)]
            ours = next((r["ms"] for r in block if r["impl"] == "ours"), None)
            for i, r in enumerate(block):
                ratio = f"{r['ms'] / ours:.2f}x" if ours else "-"
                label = describe(s) if i == 0 else ""
                oplabel = op if i == 0 else ""
                print(f"{label:<40} {oplabel:<8} {r['impl']:<12} {r['ms']:>10.4g} {r['tflops']:>9.4g} "
                      f"{ratio:>13}")


def describe_row(r):
    return describe(Shape(DTYPES_BY_NAME[r["dtype"]], r["batch"], r["nheads"], r["nheads_kv"],
                          r["seqlen_q"], r["hdim"], r["causal"]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="total seconds: a shape predicted to overrun is skipped (default 270 CPU, 240 GPU)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<slug>-demo.json)")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    budget = args.budget_s if args.budget_s is not None else (240.0 if on_gpu else 270.0)
    start = time.monotonic()
    torch.manual_seed(0)

    try:
        import_flash_attn()
    except Unavailable as exc:
        print(f"demo: FAIL: {exc}")
        return 2
    results = ResultFile(args.out or default_out_path(device, "demo"), device)
    notes = results.data["skipped"] = []
    ours_impls = available_impls(OURS_VARIANTS if on_gpu else ["ours"], device, notes)
    peers = available_impls(GPU_PEERS if on_gpu else ["torch_cpu"], device, notes)
    for note in notes:
        log(f"[unavailable] {note['impl']}: {note['reason']}")
    if not any(i.name == "ours" for i in ours_impls):
        print("demo: FAIL: flash_attn is not usable here")
        return 2
    log(f"[demo] device: {results.data['device']}; ours: {[i.name for i in ours_impls]}; "
        f"peers: {[i.name for i in peers]}")

    shapes_done, checks = [], []
    seconds_per_flop = 0.0  # the slowest rate seen so far, to predict what the next shape costs
    for s in (GPU_SHAPES if on_gpu else CPU_SHAPES):
        flops = op_flops("fwd", s.batch, s.seqlen, s.seqlen, s.nheads, s.hdim, s.causal)
        elapsed = time.monotonic() - start
        if shapes_done and elapsed + seconds_per_flop * flops > budget:
            log(f"[demo] skipping {describe(s)}: predicted {seconds_per_flop * flops:.0f} s, "
                f"{budget - elapsed:.0f} s of the {budget:.0f} s budget left")
            notes.append({"shape": describe(s), "reason": "would overrun the demo's time budget"})
            continue
        log(f"[demo] {describe(s)} ({elapsed:.0f} s)")
        shape_start = time.monotonic()
        try:
            shape_checks = check_shape(s, ours_impls, device)
        except torch.cuda.OutOfMemoryError as exc:
            notes.append({"shape": describe(s), "reason": f"reference out of memory: {exc}"[:300]})
            continue
        for c in shape_checks:
            log(f"  check {c['impl']}: {verdict(c)} {c.get('max_err', c.get('error'))}")
        checks += shape_checks
        time_shape(s, ours_impls + peers, device, results)
        shapes_done.append(s)
        seconds_per_flop = max(seconds_per_flop, (time.monotonic() - shape_start) / flops)
        results.data["checks"] = checks
        results.save()
        if on_gpu:
            torch.cuda.empty_cache()

    elapsed = time.monotonic() - start
    passed = any(c["passed"] for c in checks) and all(c["passed"] is not False for c in checks)
    results.data["checks"] = checks
    results.data["demo_seconds"] = round(elapsed, 1)
    results.save()
    print_checks(checks)
    counts = collections.Counter(verdict(c) for c in checks)
    print(f"\ndemo: {'PASS' if passed else 'FAIL'} ({dict(counts)}) on {results.data['device']} "
          f"in {elapsed:.0f} s; wrote {results.path}")
    print_timings(results.rows, shapes_done)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
