"""Rotary embedding kernel bandwidth against a plain device copy of the same bytes (BENCH.md JSON).

    python benchmarks/bench_rotary.py [--out benchmarks/results/<slug>-rotary.json]

Rows: op "rotary" (out-of-place and in-place, both styles) and op "copy" (x -> out), with
tbps = (bytes read + bytes written) / time, and the ratio to the copy in "note"."""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import ResultFile, default_out_path, log, round_sig  # noqa: E402
from timing import time_fn  # noqa: E402


def run_rotary(dev, res):
    """Rows into ResultFile `res` (suite.py calls this too); CUDA only."""
    from flash_attn.layers.rotary import apply_rotary_emb
    b, s, h, d, dtype = 8, 4096, 32, 128, torch.bfloat16
    x = torch.randn(b, s, h, d, device=dev, dtype=dtype)
    out = torch.empty_like(x)
    cos = torch.randn(s, d // 2, device=dev, dtype=dtype)
    sin = torch.randn(s, d // 2, device=dev, dtype=dtype)
    moved = 2 * x.numel() * x.element_size()  # read x + write out (cos/sin stay in L2)
    copy = time_fn(lambda _: out.copy_(x), [None], dev)
    base = {"dtype": "bf16", "batch": b, "seqlen_q": s, "nheads": h, "hdim": d}
    res.add({"op": "copy", "impl": "torch", **base, "ms": round_sig(copy.ms),
             "tbps": round_sig(moved / copy.ms / 1e9)})
    for interleaved in (False, True):
        for inplace in (False, True):
            t = time_fn(lambda _: apply_rotary_emb(x, cos, sin, interleaved=interleaved, inplace=inplace),
                        [None], dev)
            tbps = moved / t.ms / 1e9
            res.add({"op": "rotary", "impl": "ours", **base, "interleaved": interleaved, "inplace": inplace,
                     "ms": round_sig(t.ms), "tbps": round_sig(tbps),
                     "note": f"{tbps / (moved / copy.ms / 1e9):.2f} of copy"})
            log(f"rotary interleaved={interleaved} inplace={inplace}: {t.ms:.3f} ms {tbps:.2f} TB/s "
                f"(copy {copy.ms:.3f} ms)")
    res.save()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    dev = torch.device("cuda")
    res = ResultFile(args.out or default_out_path(dev, "rotary"), dev)
    run_rotary(dev, res)
    print("wrote", res.path)


if __name__ == "__main__":
    main()
