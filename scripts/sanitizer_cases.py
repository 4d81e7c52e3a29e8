"""Small fwd+bwd calls covering varlen, GQA, dropout, windows, paged kvcache and split-KV, for running
under compute-sanitizer (memcheck / racecheck / synccheck) on a GPU:

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 scripts/sanitizer_cases.py

Sizes are odd on purpose (tails in every tile dimension) and small (the tools slow kernels ~100x)."""

import sys

import torch

import flash_attn
from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache


def run(path: str) -> None:
    flash_attn.set_cuda_path(path)
    dev, dt = "cuda", torch.bfloat16
    torch.manual_seed(0)
    # Dense: GQA + causal + dropout, then a local window with softcap and ALiBi.
    q = torch.randn(2, 77, 6, 64, device=dev, dtype=dt, requires_grad=True)
    k = torch.randn(2, 131, 2, 64, device=dev, dtype=dt, requires_grad=True)
    v = torch.randn(2, 131, 2, 64, device=dev, dtype=dt, requires_grad=True)
    flash_attn_func(q, k, v, causal=True, dropout_p=0.2).sum().backward()
    slopes = torch.rand(6, device=dev)
    out = flash_attn_func(q, k, v, window_size=(19, 7), softcap=4.0, alibi_slopes=slopes,
                          deterministic=True)
    out.sum().backward()
    # Varlen with an empty sequence, GQA, dropout, head dim 96.
    lens_q, lens_k = [37, 0, 91], [45, 13, 128]
    cu_q = torch.tensor([0, 37, 37, 128], dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0, 45, 58, 186], dtype=torch.int32, device=dev)
    qv = torch.randn(128, 4, 96, device=dev, dtype=dt, requires_grad=True)
    kv = torch.randn(186, 2, 96, device=dev, dtype=dt, requires_grad=True)
    vv = torch.randn(186, 2, 96, device=dev, dtype=dt, requires_grad=True)
    flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max(lens_q), max(lens_k), dropout_p=0.1,
                           causal=True).sum().backward()
    # Paged kvcache (page 7, shuffled table), append + rotary + split-KV.
    b, hk, d, page, pages_per_seq = 3, 2, 128, 7, 10
    kc = torch.randn(b * pages_per_seq, page, hk, d, device=dev, dtype=dt)
    vc = torch.randn_like(kc)
    table = torch.randperm(b * pages_per_seq, device=dev, dtype=torch.int32).view(b, pages_per_seq)
    seqlens = torch.tensor([5, 40, 63], dtype=torch.int32, device=dev)
    qd = torch.randn(b, 2, 8, d, device=dev, dtype=dt)
    kn = torch.randn(b, 2, hk, d, device=dev, dtype=dt)
    cos = torch.randn(80, d // 2, device=dev, dtype=dt)
    sin = torch.randn(80, d // 2, device=dev, dtype=dt)
    flash_attn_with_kvcache(qd, kc, vc, k=kn, v=kn.clone(), rotary_cos=cos, rotary_sin=sin,
                            cache_seqlens=seqlens, block_table=table, causal=True, num_splits=3)
    torch.cuda.synchronize()


if __name__ == "__main__":
    paths = sys.argv[1:] or ["sm80", "auto"]
    for p in paths:
        run(p)
    print("sanitizer cases done:", ", ".join(paths))
