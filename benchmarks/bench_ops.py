"""Fused ops (issue #8) against eager PyTorch and torch.compile, on one GPU (BENCH.md JSON).

    python benchmarks/bench_ops.py [--out benchmarks/results/<slug>-ops.json] [--quick]

Rows (impl: ours | torch_eager | torch_compile; op names documented here):
  cross_entropy_fwd / cross_entropy_fwd_bwd: 8192 tokens x 128K vocab bf16 (also 256K), mean loss;
      "peak_mib" = peak memory allocated during the call above what was allocated before it.
  add_layer_norm_fwd / add_rms_norm_fwd (and *_fwd_bwd): x0 + residual -> norm, prenorm (the sum is
      returned too), 16384 x 4096 bf16; "tbps" = (x0, residual read + out, residual_out written) / time,
      "note" = fraction of the measured copy bandwidth (row op "copy"). --norm-sweep adds rows
      "ours_general" (FLASH_ATTN_NORM_FWD_PLAIN=0, _BWD_PLAIN=0) "ours_c1/c2/c4" (chunks per thread).
  dense_gelu_fwd: gelu_tanh(x @ W^T + b), 8192 x 4096 -> 16384 bf16 ("ours": cuBLASLt GELU epilogue,
      "ours_aux" also stores the pre-activation for the backward); mlp_fwd_bwd: FusedMLP 4096 -> 16384
      -> 4096 fwd+bwd; wgrad / dgrad_dgelu: the MLP's backward GEMMs alone, fused epilogue or not.
      "tflops" = 2*M*N*K per GEMM / time.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from results_io import ResultFile, default_out_path, log, round_sig  # noqa: E402
from timing import time_fn  # noqa: E402

from flash_attn import _C  # noqa: E402
from flash_attn.ops._gemm import linear_dgrad, linear_fwd, linear_wgrad  # noqa: E402
from flash_attn.ops.fused_dense import FusedMLP  # noqa: E402
from flash_attn.ops.layer_norm import dropout_add_layer_norm  # noqa: E402
from flash_attn.ops.triton.cross_entropy import cross_entropy_loss  # noqa: E402
from flash_attn.ops.triton.layer_norm import rms_norm_fn  # noqa: E402


def compiled(fn):
    try:
        return torch.compile(fn)
    except Exception as e:  # noqa: BLE001
        log(f"torch.compile unavailable: {e!r}")
        return None


def peak_mib(fn, dev, reset=None):
    """Peak memory of one call above what was allocated before it (reset() first frees what the
    previous call left behind, e.g. a .grad, so it is not counted as already allocated)."""
    if reset is not None:
        reset()
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    fn(None)
    torch.cuda.synchronize(dev)
    return (torch.cuda.max_memory_allocated(dev) - before) / 2**20


def timed(res, dev, row, fn, extra=None):
    try:
        t = time_fn(fn, [None], dev)
    except Exception as e:  # noqa: BLE001  (a peer that fails to compile is reported, not fatal)
        log(f"{row['op']} {row['impl']}: failed: {e!r}")
        res.add({**row, "ms": None, "note": f"failed: {type(e).__name__}"})
        return None
    out = {**row, "ms": round_sig(t.ms)}
    if extra:
        out.update(extra(t.ms))
    res.add(out)
    res.save()
    log(f"{row['op']:24s} {row['impl']:14s} {t.ms:8.3f} ms {extra(t.ms) if extra else ''}")
    return t.ms


def bench_cross_entropy(res, dev, vocab, tokens=8192):
    logits = torch.randn(tokens, vocab, device=dev, dtype=torch.bfloat16)
    labels = torch.randint(0, vocab, (tokens,), device=dev)
    leaf = logits.clone().requires_grad_(True)

    def ours_fwd(_):
        return cross_entropy_loss(logits, labels)[0].mean()

    def ours_fwd_bwd(_):
        leaf.grad = None
        cross_entropy_loss(leaf, labels)[0].mean().backward()

    def ours_fwd_bwd_inplace(_):
        # The backward overwrites its input. autograd.grad hands the gradient back as is: .backward()
        # would copy it into .grad of a leaf (it aliases a saved tensor), which a real model, whose
        # logits are not a leaf, never pays.
        inner = leaf.detach().requires_grad_(True)
        torch.autograd.grad(cross_entropy_loss(inner, labels, inplace_backward=True)[0].mean(), inner)

    def eager(l, y):
        return F.cross_entropy(l, y)

    comp = compiled(eager)
    impls = {"ours": (ours_fwd, ours_fwd_bwd), "torch_eager": (None, None)}
    base = {"dtype": "bf16", "tokens": tokens, "vocab": vocab}

    def peer_fwd(fn):
        return lambda _: fn(logits, labels)

    def peer_fwd_bwd(fn):
        def run(_):
            leaf.grad = None
            fn(leaf, labels).backward()
        return run

    impls["torch_eager"] = (peer_fwd(eager), peer_fwd_bwd(eager))
    if comp is not None:
        impls["torch_compile"] = (peer_fwd(comp), peer_fwd_bwd(comp))
    times = {}

    def reset():
        leaf.grad = None

    for impl, (f, fb) in impls.items():
        for op, fn in (("cross_entropy_fwd", f), ("cross_entropy_fwd_bwd", fb)):
            try:
                mem = peak_mib(fn, dev, reset)
            except Exception as e:  # noqa: BLE001
                log(f"{op} {impl}: failed: {e!r}")
                continue
            times[(impl, op)] = timed(res, dev, {"op": op, "impl": impl, **base, "peak_mib": round_sig(mem)}, fn)
    mem = peak_mib(ours_fwd_bwd_inplace, dev, reset)
    timed(res, dev, {"op": "cross_entropy_fwd_bwd", "impl": "ours_inplace", **base, "peak_mib": round_sig(mem)},
          ours_fwd_bwd_inplace)
    for op in ("cross_entropy_fwd", "cross_entropy_fwd_bwd"):
        o = times.get(("ours", op))
        for peer in ("torch_eager", "torch_compile"):
            p = times.get((peer, op))
            if o and p:
                log(f"  {op} speedup vs {peer}: {p / o:.2f}x")


# Settings of the CUDA norm kernels compared by --norm-sweep (csrc/ops/cuda/norm_fwd.cu, norm_bwd.cu
# read them on every call): the general kernels, and the plain forward at 1, 2, 4 chunks per thread.
NORM_SWEEP = {"ours_general": {"FLASH_ATTN_NORM_FWD_PLAIN": "0", "FLASH_ATTN_NORM_BWD_PLAIN": "0"},
              "ours_c1": {"FLASH_ATTN_NORM_FWD_CHUNKS": "1"},
              "ours_c2": {"FLASH_ATTN_NORM_FWD_CHUNKS": "2"},
              "ours_c4": {"FLASH_ATTN_NORM_FWD_CHUNKS": "4"}}


def with_env(fn, env):
    def run(*args):
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return fn(*args)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return run


def bench_norms(res, dev, copy_tbps, rows=16384, hidden=4096, sweep=False):
    dt = torch.bfloat16
    x0 = torch.randn(rows, hidden, device=dev, dtype=dt)
    r = torch.randn(rows, hidden, device=dev, dtype=dt)
    w = torch.randn(hidden, device=dev, dtype=dt)
    b = torch.randn(hidden, device=dev, dtype=dt)
    moved = 4 * rows * hidden * 2  # read x0, residual; write out, residual_out
    base = {"dtype": "bf16", "rows": rows, "hidden": hidden}

    def eager_ln(x0, r, w, b):
        a = x0 + r
        return F.layer_norm(a, (hidden,), w, b, 1e-5), a

    def eager_rms(x0, r, w, b):
        a = x0 + r
        return F.rms_norm(a, (hidden,), w, 1e-5), a

    impls = {
        "add_layer_norm": {"ours": lambda x0, r, w, b: dropout_add_layer_norm(x0, r, w, b, 0.0, 1e-5, prenorm=True),
                           "torch_eager": eager_ln},
        "add_rms_norm": {"ours": lambda x0, r, w, b: rms_norm_fn(x0, w, None, residual=r, eps=1e-5, prenorm=True),
                         "torch_eager": eager_rms},
    }
    for name, fns in impls.items():
        c = compiled(fns["torch_eager"])
        if c is not None:
            fns["torch_compile"] = c
        if sweep:
            for impl, env in NORM_SWEEP.items():
                fns[impl] = with_env(fns["ours"], env)
        for impl, fn in fns.items():
            def fwd(_, fn=fn):
                with torch.no_grad():
                    return fn(x0, r, w, b)

            def tb(ms):
                tbps = moved / ms / 1e9
                return {"tbps": round_sig(tbps), "note": f"{tbps / copy_tbps:.2f} of copy"}

            timed(res, dev, {"op": f"{name}_fwd", "impl": impl, **base}, fwd, tb)
            xs = [t.clone().requires_grad_(True) for t in (x0, r, w, b)]
            gy, ga = torch.randn_like(x0), torch.randn_like(x0)

            def fwd_bwd(_, fn=fn, xs=xs):
                for t in xs:
                    t.grad = None
                y, a = fn(*xs)
                torch.autograd.backward((y, a), (gy, ga))

            timed(res, dev, {"op": f"{name}_fwd_bwd", "impl": impl, **base}, fwd_bwd)


def bench_backward_parts(res, dev, x, base, extra):
    """The backward GEMMs of the MLP one by one (fc1: x (m, k) -> pre (m, n)): the weight gradient
    with the bias gradient fused (BGRADB) or not, and the input gradient of fc2 with dGELU + bias
    gradient fused or as separate ops."""
    m, k = x.shape
    n, dt = base["n"], x.dtype
    dout = torch.randn(m, n, device=dev, dtype=dt)
    pre = torch.randn(m, n, device=dev, dtype=dt)
    w2 = torch.randn(k, n, device=dev, dtype=dt) * 0.02
    dout2 = torch.randn(m, k, device=dev, dtype=dt)

    def torch_dgelu(_):
        dact = dout2 @ w2
        with torch.enable_grad():
            p_ = pre.detach().requires_grad_(True)
            (dpre,) = torch.autograd.grad(F.gelu(p_, approximate="tanh"), p_, dact)
        return dpre, dpre.sum(0)

    parts = {
        ("wgrad", "ours_bgradb"): lambda _: linear_wgrad(x, dout, True),
        ("wgrad", "ours"): lambda _: linear_wgrad(x, dout, False),
        ("wgrad", "torch_eager"): lambda _: (dout.t() @ x, dout.sum(0)),
        ("dgrad_dgelu", "ours"): lambda _: linear_dgrad(dout2, w2, pre_act=pre, want_bias_grad=True),
        ("dgrad_dgelu", "ours_nofuse"): lambda _: linear_dgrad(dout2, w2),
        ("dgrad_dgelu", "torch_eager"): torch_dgelu,
    }
    for (op, impl), fn in parts.items():
        timed(res, dev, {"op": op, "impl": impl, **base}, fn, extra)


def bench_dense(res, dev, m=8192, k=4096, n=16384, parts_only=False):
    dt = torch.bfloat16
    x = torch.randn(m, k, device=dev, dtype=dt)
    if parts_only:
        return bench_backward_parts(res, dev, x, {"dtype": "bf16", "m": m, "k": k, "n": n},
                                    lambda ms: {"tflops": round_sig(2.0 * m * n * k / ms / 1e9)})
    w = torch.randn(n, k, device=dev, dtype=dt) * 0.02
    b = torch.randn(n, device=dev, dtype=dt)
    flops = 2.0 * m * n * k
    base = {"dtype": "bf16", "m": m, "k": k, "n": n}
    tf = lambda f: (lambda ms: {"tflops": round_sig(f / ms / 1e9)})  # noqa: E731

    def eager(x, w, b):
        return F.gelu(F.linear(x, w, b), approximate="tanh")

    fns = {"ours": lambda _: linear_fwd(x, w, b, "gelu_approx", False),
           "ours_aux": lambda _: linear_fwd(x, w, b, "gelu_approx", True),
           "torch_eager": lambda _: eager(x, w, b)}
    c = compiled(eager)
    if c is not None:
        fns["torch_compile"] = lambda _: c(x, w, b)
    for impl, fn in fns.items():
        timed(res, dev, {"op": "dense_gelu_fwd", "impl": impl, **base}, fn, tf(flops))

    bench_backward_parts(res, dev, x, base, tf(flops))

    mlp = FusedMLP(k, n, device=dev, dtype=dt)
    seq = torch.nn.Sequential(mlp.fc1, torch.nn.GELU(approximate="tanh"), mlp.fc2)
    xr = x.clone().requires_grad_(True)

    def run(module):
        def f(_):
            xr.grad = None
            for p in mlp.parameters():
                p.grad = None
            module(xr).sum().backward()
        return f

    fns = {"ours": run(mlp), "torch_eager": run(seq)}
    cs = compiled(seq)
    if cs is not None:
        fns["torch_compile"] = run(cs)
    for impl, fn in fns.items():
        timed(res, dev, {"op": "mlp_fwd_bwd", "impl": impl, **base}, fn, tf(6 * flops))  # 2 GEMMs forward, 4 backward


def copy_time(n, dev):
    """Device copy of n bytes: the bandwidth the memory-bound kernels are compared with."""
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    return time_fn(lambda _: dst.copy_(src), [None], dev)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="128K vocab only")
    ap.add_argument("--only", default="ce,norms,dense",
                    help="comma-separated parts: ce, norms, dense (the MLP GEMMs), parts (its backward GEMMs)")
    ap.add_argument("--norm-sweep", action="store_true",
                    help="norms: also time our kernel settings (NORM_SWEEP: general kernel, chunks per thread)")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    dev = torch.device("cuda")
    res = ResultFile(args.out or default_out_path(dev, "ops"), dev,
                     extra={"cublaslt": bool(_C.gemm_epilogue_available())})
    n = 256 * 1024 * 1024
    t = copy_time(n, dev)
    copy_tbps = 2 * n / t.ms / 1e9
    res.set_ceilings({"copy_tbps": round_sig(copy_tbps)})
    res.add({"op": "copy", "impl": "torch", "bytes": 2 * n, "ms": round_sig(t.ms), "tbps": round_sig(copy_tbps)})
    log(f"copy: {copy_tbps:.2f} TB/s")
    if "ce" in parts:
        for vocab in ([128 * 1024] if args.quick else [128 * 1024, 256 * 1024]):
            bench_cross_entropy(res, dev, vocab)
            torch.cuda.empty_cache()
    if "norms" in parts:
        bench_norms(res, dev, copy_tbps, sweep=args.norm_sweep)
        torch.cuda.empty_cache()
    if "dense" in parts or "parts" in parts:
        bench_dense(res, dev, parts_only="dense" not in parts)
    res.save()
    print("wrote", res.path)


if __name__ == "__main__":
    main()
