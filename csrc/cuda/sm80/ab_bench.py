"""Interleaved A/B timing of the sm80 path's experiment switches, in ONE process (GPU only).

The switches (FLASH_SM80_FWD_VARIANT, FLASH_SM80_FWD_LAZY, FLASH_SM80_BWD_DO2, FLASH_SM80_BWD_LEAN,
...) are read by the launchers on every call, so this script sets them between timed calls: for
each shape and repeat, every variant is timed once (round robin), and the report is the median
over the repeats per variant, with its ratio to the first (baseline) variant and to torch's FA2.

Usage (repo root, PYTHONPATH with flash_attn and benchmarks/):
  python3 csrc/cuda/sm80/ab_bench.py --op fwd --hdims 256 --variants "FLASH_SM80_FWD_VARIANT=1;FLASH_SM80_FWD_VARIANT=3" \
      --seqlens 2048,8192 --causal 0,1 --repeats 3 --out ab.json
A variant is a ','-separated list of NAME=VALUE; '' is the default build behaviour.
"""
import argparse
import json
import os
import statistics
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "benchmarks"))

from bench_training import make_inputs  # noqa: E402
from peers import make_impl  # noqa: E402
from timing import time_attention_op  # noqa: E402

from results_io import op_flops  # noqa: E402


def flops(op, b, s, h, d, causal):
    return op_flops(op, b, s, s, h, d, causal)


def parse_variant(text):
    env = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, value = item.partition("=")
        env[name] = value
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--op", default="fwd", choices=["fwd", "bwd", "fwd_bwd"])
    ap.add_argument("--hdims", default="256")
    ap.add_argument("--seqlens", default="2048,8192")
    ap.add_argument("--causal", default="0,1")
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--variants", required=True, help="';'-separated variants")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--model-dim", type=int, default=2048)
    ap.add_argument("--peer", default="torch_flash", help="'' to skip")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    dev = torch.device("cuda")
    variants = [v for v in args.variants.split(";")]
    names = sorted({n for v in variants for n in parse_variant(v)})
    ours = make_impl("ours_sm80")
    ours.check(dev)
    peer = None
    if args.peer:
        peer = make_impl(args.peer)
        peer.check(dev)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    rows = []
    for dt in args.dtypes.split(","):
        for d in map(int, args.hdims.split(",")):
            for causal in map(int, args.causal.split(",")):
                for s in map(int, args.seqlens.split(",")):
                    b, h = max(1, args.tokens // s), max(1, args.model_dim // d)
                    sets = [make_inputs(b, s, h, d, dtypes[dt], dev)]
                    f = flops(args.op, b, s, h, d, bool(causal))
                    times = {v: [] for v in variants}
                    peer_times = []
                    for _ in range(args.repeats):
                        for v in variants:
                            for n in names:
                                os.environ.pop(n, None)
                            os.environ.update(parse_variant(v))
                            t = time_attention_op(args.op, ours, sets, bool(causal), d ** -0.5, dev)
                            times[v].append(t.ms)
                        for n in names:
                            os.environ.pop(n, None)
                        if peer is not None:
                            peer_times.append(time_attention_op(args.op, peer, sets, bool(causal), d ** -0.5, dev).ms)
                    base = statistics.median(times[variants[0]])
                    pk = statistics.median(peer_times) if peer_times else None
                    for v in variants:
                        ms = statistics.median(times[v])
                        row = {"op": args.op, "dtype": dt, "hdim": d, "causal": causal, "seqlen": s, "variant": v,
                               "ms": ms, "all_ms": times[v], "tflops": f / ms / 1e9, "vs_base": base / ms,
                               "vs_peer": (pk / ms) if pk else None}
                        rows.append(row)
                        print(f"{args.op} {dt} d{d} c{causal} s{s} [{v or 'default'}] {row['tflops']:.1f} TFLOP/s "
                              f"x{row['vs_base']:.3f} vs base" + (f", x{row['vs_peer']:.3f} vs {args.peer} "
                                                                 f"({f / pk / 1e9:.1f})" if pk else "") +
                              f"  reps {['%.3f' % x for x in times[v]]}", flush=True)
                    del sets
                    torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
