#!/usr/bin/env python
"""One forward call of ours (sm90) or cuDNN inside an NVTX range, for ncu:

  ncu --nvtx --nvtx-include "fwd/" --launch-count 1 --section SpeedOfLight \\
      python csrc/cuda/sm90/experiments/ncu_one.py --impl cudnn --hdim 128 --seqlen 1024 --causal 0

The range contains only the timed call (after a warm-up outside it), so --launch-count 1 profiles
the attention kernel whatever its name. Grid: batch * seqlen = 16K, nheads * hdim = 2048.
"""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
sys.path.append(REPO)

import torch  # noqa: E402

from peers import Ours, Sdpa  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["ours", "cudnn"], required=True)
    ap.add_argument("--hdim", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=1024)
    ap.add_argument("--causal", type=int, default=0)
    ap.add_argument("--dtype", default="bf16")
    args = ap.parse_args()
    dev = torch.device("cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    batch, nheads = max(1, 16384 // args.seqlen), max(1, 2048 // args.hdim)
    q, k, v = (torch.randn(batch, args.seqlen, nheads, args.hdim, device=dev, dtype=dtype)
               for _ in range(3))
    impl = Ours("ours", "sm90") if args.impl == "ours" else Sdpa("cudnn")
    impl.check(dev)
    scale = args.hdim ** -0.5
    for _ in range(3):  # warm-up: plan caches, cuDNN graph build
        with impl.scope():
            impl.attention(q, k, v, bool(args.causal), scale)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("fwd")
    with impl.scope():
        impl.attention(q, k, v, bool(args.causal), scale)
    torch.cuda.nvtx.range_pop()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
