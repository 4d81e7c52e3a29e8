"""A/B of the wide-head-dim sm90 backward (bwd256_*) variants in ONE process: an env switch read
per call, variants interleaved (order reversed every other repeat), 5 repeats x 10 calls each,
median TFLOP/s. Backward only: torch.autograd.grad on a retained graph.

AB_MODE=fixed   (b, s, h, d) batches, 16K tokens, model dim 2048 (as bench_attention.py)
AB_MODE=varlen  packed sequences, 16K tokens, lengths as benchmarks/bench_varlen.py's two mixes
                (uniform 512..4096, log-uniform 32..4096); AB_SEQLENS is ignored
AB_MODE=dropout fixed batches with dropout_p = 0.1
A switch that changes the PATH (e.g. FLASH_SM90_BWD256_VARLEN=0 -> sm80) is fine: the path each
variant ran is printed. The variants' gradients are compared (max |diff| vs the first variant).
--cudnn: also time cuDNN (SDPA) on the fixed batches.

Example: AB_ENV=FLASH_SM90_BWD256_CLUSTER AB_VARIANTS=0,1 python3 bwd256_ab.py --cudnn
"""
import math
import os
import random
import statistics
import sys

import torch

import flash_attn
from flash_attn import flash_attn_func, flash_attn_varlen_func

VARIANTS = os.environ.get("AB_VARIANTS", "0,1").split(",")
ENV = os.environ.get("AB_ENV", "FLASH_SM90_BWD256_CLUSTER")
HDIM = int(os.environ.get("AB_HDIM", "256"))
SEQLENS = [int(s) for s in os.environ.get("AB_SEQLENS", "1024,4096,16384").split(",")]
CAUSALS = [bool(int(c)) for c in os.environ.get("AB_CAUSAL", "0,1").split(",")]
MODE = os.environ.get("AB_MODE", "fixed")
DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}[os.environ.get("AB_DTYPE", "bf16")]
DET = os.environ.get("AB_DET", "0") == "1"
REPEATS = int(os.environ.get("AB_REPEATS", "5"))
TOKENS, MODEL_DIM = 16384, 2048


def mix_lengths(distribution, low, high, total, seed):
    rng = random.Random(seed)
    lengths = []
    while sum(lengths) < total:
        if distribution == "uniform":
            n = rng.randint(low, high)
        else:
            n = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        lengths.append(max(1, min(n, total - sum(lengths))))
    return lengths


def time_grad(out, inputs, dout, n=10):
    torch.autograd.grad(out, inputs, dout, retain_graph=True)
    st, en = torch.cuda.Event(True), torch.cuda.Event(True)
    torch.cuda.synchronize()
    st.record()
    for _ in range(n):
        torch.autograd.grad(out, inputs, dout, retain_graph=True)
    en.record()
    torch.cuda.synchronize()
    return st.elapsed_time(en) / n * 1e-3


def cases():
    h = MODEL_DIM // HDIM
    if MODE == "varlen":
        for name, dist, lo, hi in (("uniform", "uniform", 512, 4096), ("loguniform", "log", 32, 4096)):
            yield name, mix_lengths(dist, lo, hi, TOKENS, 0), h
    else:
        for s in SEQLENS:
            yield f"s={s}", [s] * (TOKENS // s), h


def main():
    torch.manual_seed(0)
    for causal in CAUSALS:
        for name, lengths, h in cases():
            flop = sum(4.0 * n * n * h * HDIM * 2.5 for n in lengths) / (2 if causal else 1)
            kw = dict(causal=causal, deterministic=DET)
            if MODE == "dropout":
                kw["dropout_p"] = 0.1
            if MODE == "varlen":
                total = sum(lengths)
                cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
                cu[1:] = torch.tensor(lengths).cumsum(0)
                cu = cu.cuda()
                q, k, v = [torch.randn(total, h, HDIM, dtype=DTYPE, device="cuda", requires_grad=True)
                           for _ in range(3)]
                out = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), **kw)
            else:
                b, s = len(lengths), lengths[0]
                q, k, v = [torch.randn(b, s, h, HDIM, dtype=DTYPE, device="cuda", requires_grad=True)
                           for _ in range(3)]
                out = flash_attn_func(q, k, v, **kw)
            dout = torch.randn_like(out)
            res = {x: [] for x in VARIANTS}
            grads, paths = {}, {}
            for rep in range(REPEATS):
                for x in (VARIANTS if rep % 2 == 0 else VARIANTS[::-1]):
                    os.environ[ENV] = x
                    if rep == 0:
                        grads[x] = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
                        paths[x] = flash_attn.last_impl()
                    res[x].append(time_grad(out, (q, k, v), dout))
            os.environ.pop(ENV, None)
            for x in VARIANTS[1:]:
                diffs = []
                for a, c in zip(grads[VARIANTS[0]], grads[x]):
                    err = (a.float() - c.float()).abs().max().item()
                    diffs.append(f"{err:.3g}/{a.float().abs().max().item():.3g}")
                print(f"  {x} vs {VARIANTS[0]}: max|diff|/max dq dk dv {' '.join(diffs)}")
            line = (f"{MODE} d={HDIM} causal={int(causal)} {name} seqs={len(lengths)} h={h} "
                    f"det={int(DET)}:")
            for x in VARIANTS:
                t = statistics.median(res[x])
                line += (f"  {ENV.split('_')[-1]}={x}[{paths[x]}] {flop / t / 1e12:6.1f} TF/s "
                         f"(spread {flop / max(res[x]) / 1e12:.0f}-{flop / min(res[x]) / 1e12:.0f})")
            if "--cudnn" in sys.argv and MODE == "fixed":
                from torch.nn.attention import SDPBackend, sdpa_kernel
                qt, kt, vt = [x.detach().transpose(1, 2).contiguous().requires_grad_() for x in (q, k, v)]
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    o2 = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal)
                    d2 = dout.transpose(1, 2).contiguous()
                    t = statistics.median([time_grad(o2, (qt, kt, vt), d2) for _ in range(3)])
                line += f"  cudnn {flop / t / 1e12:6.1f} TF/s"
            print(line, flush=True)
            del q, k, v, out, dout, grads


if __name__ == "__main__":
    main()
