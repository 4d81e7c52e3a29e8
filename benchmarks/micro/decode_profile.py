"""A few flash_attn_with_kvcache decode calls at one shape, for ncu (the bench's GQA 32/8 heads,
d128, bf16, full contiguous cache). Kernel variants through the FLASH_KVCACHE_* environment.

    ncu --kernel-name regex:kvcache_attn --launch-skip 2 --launch-count 1 --section SpeedOfLight \
        python3 benchmarks/micro/decode_profile.py 32 8192
"""
import sys

import torch

from flash_attn import flash_attn_with_kvcache


def main():
    batch, context = (int(x) for x in sys.argv[1:3])
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(batch, 1, 32, 128, device=dev, dtype=dt)
    k = torch.randn(batch, context, 8, 128, device=dev, dtype=dt)
    v = torch.randn_like(k)
    seqlens = torch.full((batch,), context, dtype=torch.int32, device=dev)
    for _ in range(calls):
        flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens, causal=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
