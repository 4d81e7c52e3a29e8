#!/usr/bin/env python
"""Interleaved A/B timing of sm90 forward variants (tuning switches of fwd_tuning.h) in ONE process.

Between processes the H100 varies by 5-10 % at 1K tokens, more than the effects measured here, so
every variant (and cuDNN as the yardstick) is timed in the same process, in rotating order, for
--repeats rounds; the verdict is the median over rounds. Each variant's output is also compared to
the default kernel's on the benchmark shape (many tiles per CTA): a wrong variant shows up as a
large max |diff| (bf16 rounding alone gives <= ~1e-2 here).

  FLASH_SM90_FWD_AB=1 python csrc/cuda/sm90/experiments/ab_fwd.py \\
      --variant base: --variant ws:FLASH_SM90_FWD_WIDE_STORE=1 --hdims 128,256 --seqlens 1024,2048 \\
      --out /tmp/ab.json

Grid: batch * seqlen = --tokens, nheads * hdim = --model-dim (BENCH.md's standard grid).
"""
import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("FLASH_SM90_FWD_AB", "1")  # before the library's first sm90 call

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.append(REPO)

import torch  # noqa: E402

from peers import Ours, Sdpa  # noqa: E402
from results_io import op_flops  # noqa: E402
from timing import time_fn  # noqa: E402



def parse_variant(text):
    """'name:VAR=1,VAR2=0' -> (name, {VAR: '1', ...}); 'cudnn' is the cuDNN peer."""
    name, _, rest = text.partition(":")
    env = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, env


def set_switches(env):
    """Exactly `env` on top of the defaults: EVERY other FLASH_SM90_FWD_* switch is cleared (an
    earlier version cleared a fixed list, so switches missing from it leaked from one variant into
    the next -- pass 4 round 2's d64 and ILP numbers are confounded by that)."""
    for k in [k for k in os.environ if k.startswith("FLASH_SM90_FWD_") and k != "FLASH_SM90_FWD_AB"]:
        del os.environ[k]
    os.environ.update(env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", required=True, type=parse_variant)
    ap.add_argument("--cudnn", type=int, default=1, help="time cuDNN in the same rotation")
    ap.add_argument("--hdims", default="64,128,256")
    ap.add_argument("--seqlens", default="1024,2048,16384")
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--model-dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-ms", type=float, default=60.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    dev = torch.device("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    ours = Ours("ours", "sm90")
    ours.check(dev)
    fa = ours.fa
    cudnn = Sdpa("cudnn")
    cudnn.check(dev)
    variants = list(args.variant) + ([("cudnn", None)] if args.cudnn else [])
    rows = []
    for hdim in map(int, args.hdims.split(",")):
        for seqlen in map(int, args.seqlens.split(",")):
            for causal in [c == "1" for c in args.causal.split(",")]:
                batch, nheads = max(1, args.tokens // seqlen), max(1, args.model_dim // hdim)
                shape = (batch, seqlen, nheads, hdim)
                sets = [{n: torch.randn(shape, device=dev, dtype=dtype) for n in "qkv"}
                        for _ in range(2)]
                scale = hdim ** -0.5
                flops = op_flops("fwd", batch, seqlen, seqlen, nheads, hdim, causal)

                def run(name, env, s):
                    if env is None:
                        with cudnn.scope():
                            return cudnn.attention(s["q"], s["k"], s["v"], causal, scale)
                    set_switches(env)
                    with ours.scope():
                        return fa.flash_attn_func(s["q"], s["k"], s["v"], softmax_scale=scale,
                                                  causal=causal)

                # Correctness on this shape: every variant against the first one.
                ref = run(*variants[0], sets[0]).float()
                diffs = {}
                for name, env in variants:
                    o = run(name, env, sets[0]).float()
                    diffs[name] = float((o - ref).abs().max())
                    assert torch.isfinite(o).all(), name
                times = {name: [] for name, _ in variants}
                for r in range(args.repeats):
                    order = variants[r % len(variants):] + variants[:r % len(variants)]
                    for name, env in order:
                        t = time_fn(lambda s: run(name, env, s), sets, dev, target_ms=args.target_ms)
                        times[name].append(t.ms)
                med = {n: statistics.median(v) for n, v in times.items()}
                row = {"hdim": hdim, "seqlen": seqlen, "causal": causal, "batch": batch,
                       "nheads": nheads, "dtype": args.dtype,
                       "ms": times, "median_ms": med,
                       "tflops": {n: round(flops / (m * 1e-3) / 1e12, 1) for n, m in med.items()},
                       "max_abs_diff_vs_first": diffs}
                rows.append(row)
                base = variants[0][0]
                line = " ".join(f"{n}={row['tflops'][n]}({med[base] / med[n]:.3f}x)" for n in med)
                print(f"d{hdim} s{seqlen} c{int(causal)}: {line}  diff={diffs}", flush=True)
                with open(args.out, "w") as f:
                    json.dump({"variants": [[n, e] for n, e in variants], "rows": rows}, f, indent=1)
    set_switches({})


if __name__ == "__main__":
    main()
