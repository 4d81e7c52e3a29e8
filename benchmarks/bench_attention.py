#!/usr/bin/env python
"""Attention benchmark suite: ours against torch's attention backends, written as BENCH.md JSON.

  python benchmarks/bench_attention.py --grid training            # BENCH.md training grid
  python benchmarks/bench_attention.py --grid decode              # BENCH.md decode grid
  python benchmarks/bench_attention.py --grid training --quick --impls ours,torch_flash

Progress and skipped implementations go to stderr; the file is rewritten after every config, so a
run stopped by a time limit keeps what it measured. See benchmarks/README.md for the fields.
"""
import argparse
import os
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# The repo root, last: an installed flash_attn (or PYTHONPATH) wins, else the in-place build is used.
sys.path.append(os.path.dirname(BENCH_DIR))

import torch  # noqa: E402

from bench_decode import run_decode_grid  # noqa: E402
from ceilings import measure_ceilings  # noqa: E402
from peers import ALL_IMPLS, available_impls  # noqa: E402
from bench_training import run_training, training_configs  # noqa: E402
from results_io import DTYPES_BY_NAME, ResultFile, default_out_path, log  # noqa: E402

GPU_IMPLS = "ours,ours_sm80,ours_sm90,torch_flash,cudnn,efficient,flex"
CPU_IMPLS = "ours,torch_cpu"
OPS = ["fwd", "bwd", "fwd_bwd"]


# ---------------------------------------------------------------------------------------------
# Training grid (bench_training.py), without a time budget beyond --max-minutes
# ---------------------------------------------------------------------------------------------
def run_training_grid(args, device, impls, results, notes, deadline_passed):
    configs = training_configs(args.dtypes, args.hdims, args.causal, args.seqlens, args.tokens,
                               args.model_dim)
    for i, config in enumerate(configs):
        if deadline_passed():
            log(f"[training] time budget reached; stopping ({len(configs) - i} configs not run)")
            notes.append({"reason": f"--max-minutes reached: {len(configs) - i} configs not run"})
            return
        run_training([config], impls, args.ops, device, results, notes)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _csv(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def _bool(text):
    return {"0": False, "1": True, "false": False, "true": True, "f": False, "t": True}[text.lower()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", choices=["training", "decode"], default="training")
    p.add_argument("--impls", type=_csv(str), default=None,
                   help=f"comma list from {','.join(ALL_IMPLS)} (default GPU: {GPU_IMPLS}; "
                        f"CPU: {CPU_IMPLS})")
    p.add_argument("--dtypes", type=_csv(str), default=None,
                   help="bf16,fp16,fp32 (default training: bf16,fp16; decode: bf16; CPU: fp32)")
    p.add_argument("--hdims", type=_csv(int), default=None, help="training grid head dims")
    p.add_argument("--seqlens", type=_csv(int), default=None, help="training grid sequence lengths")
    p.add_argument("--causal", type=_csv(_bool), default=[False, True], help="e.g. 0,1")
    p.add_argument("--ops", type=_csv(str), default=OPS, help="fwd,bwd,fwd_bwd")
    p.add_argument("--tokens", type=int, default=None,
                   help="batch * seqlen per training config (default 16384 GPU, 1024 CPU)")
    p.add_argument("--model-dim", type=int, default=None,
                   help="nheads * hdim per training config (default 2048 GPU, 512 CPU)")
    p.add_argument("--quick", action="store_true", help="a small subset of the grid")
    p.add_argument("--no-ceilings", action="store_true", help="skip the matmul/copy ceilings")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no new config after this long (the file keeps what was measured)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<slug>-<grid>.json)")
    return p.parse_args(argv)


def _apply_defaults(args, device):
    on_gpu = device.type == "cuda"
    if args.impls is None:
        args.impls = (GPU_IMPLS if on_gpu else CPU_IMPLS).split(",")
    if args.dtypes is None:
        if not on_gpu:
            args.dtypes = ["fp32"]  # torch's CPU bf16 attention is very slow without bf16 units
        else:
            args.dtypes = ["bf16"] if (args.grid == "decode" or args.quick) else ["bf16", "fp16"]
    unknown = [d for d in args.dtypes if d not in DTYPES_BY_NAME]
    if unknown:
        raise SystemExit(f"unknown dtype(s) {unknown}; known: {list(DTYPES_BY_NAME)}")
    args.dtypes = [DTYPES_BY_NAME[d] for d in args.dtypes]
    for op in args.ops:
        if op not in OPS:
            raise SystemExit(f"unknown op {op!r}; known: {OPS}")
    if args.hdims is None:
        args.hdims = ([64, 128] if args.quick else [64, 128, 256]) if on_gpu else \
            ([64] if args.quick else [64, 128])
    if args.seqlens is None:
        if on_gpu:
            args.seqlens = [1024, 4096] if args.quick else [512, 1024, 2048, 4096, 8192, 16384]
        else:
            args.seqlens = [512] if args.quick else [256, 512, 1024]
    if args.tokens is None:
        args.tokens = 16384 if on_gpu else 1024
    if args.model_dim is None:
        args.model_dim = 2048 if on_gpu else 512


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _apply_defaults(args, device)
    torch.manual_seed(0)
    out_path = args.out or default_out_path(device, "attention" if args.grid == "training" else "decode")
    results = ResultFile(out_path, device)
    notes = []
    results.data["skipped"] = notes  # same list object: saved with every results.save()
    log(f"[bench] device={results.data['device']} grid={args.grid} out={out_path}")

    impls = available_impls(args.impls, device, notes)
    for note in notes:
        log(f"[unavailable] {note['impl']}: {note['reason']}")
    log(f"[bench] impls: {[i.name for i in impls]}")
    if not args.no_ceilings:
        results.set_ceilings(measure_ceilings(device))
    results.save()

    start = time.monotonic()
    budget_s = None if args.max_minutes is None else args.max_minutes * 60

    def deadline_passed():
        return budget_s is not None and time.monotonic() - start > budget_s

    if args.grid == "training":
        run_training_grid(args, device, impls, results, notes, deadline_passed)
    else:
        run_decode_grid(args, device, impls, results, notes, deadline_passed)
    results.save()
    log(f"[bench] {len(results.rows)} rows, {len(notes)} skipped -> {out_path} "
        f"({time.monotonic() - start:.0f} s)")
    print_summary(results.rows)
    return 0


def print_summary(rows):
    """One line per row, grouped as measured, on stdout."""
    for r in rows:
        value = f"{r['tflops']:>8} TFLOP/s" if "tflops" in r else f"{r.get('tbps')} TB/s {r.get('us')} us"
        page = f" page={r['page_size']}" if "page_size" in r else ""
        print(f"{r['op']:>7} {r['impl']:>11} {r['dtype']} d={r['hdim']} causal={int(r['causal'])} "
              f"b={r['batch']} sq={r['seqlen_q']} sk={r['seqlen_k']}{page}: {r['ms']} ms {value}"
              + (f" path={r['path']}" if r.get("path") else ""))


if __name__ == "__main__":
    sys.exit(main())
