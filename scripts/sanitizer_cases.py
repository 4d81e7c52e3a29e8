"""Small GPU calls for compute-sanitizer (memcheck / racecheck / synccheck), in named groups:

  standard                fwd+bwd: GQA, causal, dropout, local windows, softcap, ALiBi, deterministic,
                          varlen with an empty sequence, paged kvcache with append + rotary + split-KV
  wide_head_dims          d192 / d256 fwd+bwd: varlen + dropout + GQA (the sm90 wide-head-dim backward),
                          short causal d256 (the 128 x 48 forward tile), d64 causal 4K (192-row tile),
                          the d128 decode kernel's lean layout with a partial last tile
  adversarial_pages       block tables with page ids -1, num_pages and 2^30 (paged varlen forward and
                          paged kvcache with append): kernels must skip them, never dereference
  adversarial_kvcache     cache_seqlens beyond the cache / negative, cache_batch_idx out of range,
                          cache_leftpad beyond cache_seqlens (with append, rotary, split-KV)
  adversarial_cu_seqlens  varlen fwd+bwd with non-monotone cu_seqlens, offsets beyond the packed
                          tensors, seqused_k beyond the sequence (values the host never checks)

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 \\
        python3 scripts/sanitizer_cases.py --groups standard,adversarial_pages [sm80 auto]

Without PYTORCH_NO_CUDA_MEMORY_CACHING torch's caching allocator hands out slices of large blocks and
memcheck cannot see an access that leaves a tensor but stays inside its block. Sizes are odd on purpose
(tails in every tile dimension) and small (the tools slow kernels ~100x). Run each adversarial group in
its own process: a detected fault may leave the CUDA context unusable."""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flash_attn  # noqa: E402
from flash_attn import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache  # noqa: E402

DEV, DT = "cuda", torch.bfloat16


def _r(*shape, grad=False):
    return torch.randn(*shape, device=DEV, dtype=DT, requires_grad=grad)


def _i32(values):
    return torch.tensor(values, dtype=torch.int32, device=DEV)


def standard() -> None:
    # Dense: GQA + causal + dropout, then a local window with softcap and ALiBi.
    q, k, v = _r(2, 77, 6, 64, grad=True), _r(2, 131, 2, 64, grad=True), _r(2, 131, 2, 64, grad=True)
    flash_attn_func(q, k, v, causal=True, dropout_p=0.2).sum().backward()
    slopes = torch.rand(6, device=DEV)
    flash_attn_func(q, k, v, window_size=(19, 7), softcap=4.0, alibi_slopes=slopes, deterministic=True).sum().backward()
    # Varlen with an empty sequence, GQA, dropout, head dim 96.
    lens_q, lens_k = [37, 0, 91], [45, 13, 128]
    cu_q, cu_k = _i32([0, 37, 37, 128]), _i32([0, 45, 58, 186])
    qv, kv, vv = _r(128, 4, 96, grad=True), _r(186, 2, 96, grad=True), _r(186, 2, 96, grad=True)
    flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max(lens_q), max(lens_k), dropout_p=0.1,
                           causal=True).sum().backward()
    # Paged varlen forward (page 16, shuffled table) with S_dmask.
    table = torch.randperm(12, device=DEV).to(torch.int32).view(3, 4)
    kp, vp = _r(12, 16, 2, 96), _r(12, 16, 2, 96)
    flash_attn_varlen_func(qv.detach(), kp, vp, cu_q, _i32([0, 45, 58, 107]), 91, 49, causal=True,
                           dropout_p=0.1, return_attn_probs=True, block_table=table)
    # Paged kvcache (page 7, shuffled table), append + rotary + split-KV.
    b, hk, d, page, pages_per_seq = 3, 2, 128, 7, 10
    kc, vc = _r(b * pages_per_seq, page, hk, d), _r(b * pages_per_seq, page, hk, d)
    table = torch.randperm(b * pages_per_seq, device=DEV, dtype=torch.int32).view(b, pages_per_seq)
    seqlens = _i32([5, 40, 63])
    qd, kn = _r(b, 2, 8, d), _r(b, 2, hk, d)
    cos, sin = _r(80, d // 2), _r(80, d // 2)
    flash_attn_with_kvcache(qd, kc, vc, k=kn, v=kn.clone(), rotary_cos=cos, rotary_sin=sin,
                            cache_seqlens=seqlens, block_table=table, causal=True, num_splits=3)
    # Contiguous kvcache: cache_batch_idx, leftpad, GQA decode with many splits.
    kc2, vc2 = _r(5, 300, 2, 64), _r(5, 300, 2, 64)
    flash_attn_with_kvcache(_r(3, 1, 8, 64), kc2, vc2, k=_r(3, 1, 2, 64), v=_r(3, 1, 2, 64),
                            cache_seqlens=_i32([299, 17, 150]), cache_batch_idx=_i32([4, 0, 2]),
                            cache_leftpad=_i32([3, 0, 149]), num_splits=8)


def wide_head_dims() -> None:
    # Varlen + dropout + GQA at d192 and d256, with a length-1 sequence and tails in every tile dimension.
    lens_q, lens_k = [1, 113, 203], [7, 203, 113]
    cu_q, cu_k = _i32([0, 1, 114, 317]), _i32([0, 7, 210, 323])
    for d in (192, 256):
        qv, kv, vv = _r(317, 4, d, grad=True), _r(323, 2, d, grad=True), _r(323, 2, d, grad=True)
        flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max(lens_q), max(lens_k), dropout_p=0.15,
                               causal=True).sum().backward()
        flash_attn_varlen_func(qv, kv, vv, cu_q, cu_k, max(lens_q), max(lens_k), window_size=(40, 3),
                               deterministic=True).sum().backward()
    # Short causal d256 (seqlens <= 1024 take the 128 x 48 tile), odd lengths.
    q, k, v = _r(2, 301, 4, 256, grad=True), _r(2, 517, 4, 256, grad=True), _r(2, 517, 4, 256, grad=True)
    flash_attn_func(q, k, v, causal=True).sum().backward()
    # d64 causal at seqlen 4K+ (192-row tile), a tail row block.
    q, k, v = _r(1, 4099, 2, 64), _r(1, 4099, 2, 64), _r(1, 4099, 2, 64)
    flash_attn_func(q, k, v, causal=True)
    # Decode d128, contiguous cache with a partial last key tile, GQA 4:1.
    kc, vc = _r(2, 1000, 2, 128), _r(2, 1000, 2, 128)
    flash_attn_with_kvcache(_r(2, 1, 8, 128), kc, vc, cache_seqlens=_i32([999, 517]))


def adversarial_pages() -> None:
    bad = [-1, 12, 2**30]  # num_pages is 12
    q = _r(128, 4, 64)
    kp, vp = _r(12, 16, 2, 64), _r(12, 16, 2, 64)
    cu_q, cu_k = _i32([0, 37, 37, 128]), _i32([0, 45, 58, 107])
    for value in bad:
        table = torch.arange(12, device=DEV, dtype=torch.int32).view(3, 4).clone()
        table[0, 1] = value
        table[2, 3] = value
        flash_attn_varlen_func(q, kp, vp, cu_q, cu_k, 91, 49, block_table=table, causal=True)
        flash_attn_varlen_func(q, kp, vp, cu_q, cu_k, 91, 49, block_table=table, dropout_p=0.2,
                               return_attn_probs=True)
    # Paged kvcache: appended keys land in bad pages (must be skipped), attention reads them.
    kc, vc = _r(12, 16, 2, 64), _r(12, 16, 2, 64)
    for value in bad:
        table = torch.arange(12, device=DEV, dtype=torch.int32).view(3, 4).clone()
        table[1, 2] = value
        table[2, 0] = value
        for splits in (1, 3):
            flash_attn_with_kvcache(_r(3, 2, 4, 64), kc, vc, k=_r(3, 2, 2, 64), v=_r(3, 2, 2, 64),
                                    cache_seqlens=_i32([10, 35, 60]), block_table=table, causal=True,
                                    num_splits=splits)


def adversarial_kvcache() -> None:
    kc, vc = _r(3, 40, 2, 64), _r(3, 40, 2, 64)
    cos, sin = _r(48, 16), _r(48, 16)
    cases = [
        dict(cache_seqlens=_i32([39, 41, 2**30])),        # beyond the cache (with the append)
        dict(cache_seqlens=_i32([-5, 3, -(2**30)])),      # negative
        dict(cache_seqlens=_i32([5, 6, 7]), cache_batch_idx=_i32([3, -1, 2**30])),
        dict(cache_seqlens=_i32([5, 6, 7]), cache_leftpad=_i32([6, -3, 2**30])),
    ]
    for kw in cases:
        for splits in (1, 4):
            flash_attn_with_kvcache(_r(3, 2, 4, 64), kc, vc, k=_r(3, 2, 2, 64), v=_r(3, 2, 2, 64), rotary_cos=cos,
                                    rotary_sin=sin, causal=True, num_splits=splits, **kw)


def adversarial_cu_seqlens() -> None:
    q, k, v = _r(128, 4, 64, grad=True), _r(186, 2, 64, grad=True), _r(186, 2, 64, grad=True)
    cases = [
        (_i32([0, 90, 37, 128]), _i32([0, 45, 58, 186])),  # q offsets not monotone
        (_i32([0, 37, 100, 190]), _i32([0, 45, 58, 186])),  # q beyond total_q (rows 128..189)
        (_i32([0, 37, 37, 128]), _i32([0, 45, 58, 250])),  # k beyond total_k
        (_i32([0, 37, 37, 128]), _i32([0, 150, 20, 186])),  # k offsets not monotone
    ]
    for cu_q, cu_k in cases:
        out = flash_attn_varlen_func(q, k, v, cu_q, cu_k, 91, 128, causal=True)
        out.sum().backward()
    # seqused_k beyond the sequence (only reachable through the op: the 2.8 API does not expose it).
    op = torch.ops.flash_attn._flash_attn_varlen_forward
    op(q.detach(), k.detach(), v.detach(), _i32([0, 37, 37, 128]), _i32([0, 45, 58, 186]), 91, 128, 0.0, 0.125,
       True, -1, -1, 0.0, None, False, None, _i32([100, 50, 1000]), 0)


GROUPS = {"standard": standard, "wide_head_dims": wide_head_dims, "adversarial_pages": adversarial_pages, "adversarial_kvcache": adversarial_kvcache,
          "adversarial_cu_seqlens": adversarial_cu_seqlens}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", default=["sm80", "auto"], help="CUDA paths (flash_attn.set_cuda_path)")
    ap.add_argument("--groups", default="standard", help="comma-separated groups, or 'all'")
    ap.add_argument("--device", default="cuda", help="cpu: smoke-test the script itself (no sanitizer)")
    args = ap.parse_args()
    global DEV
    DEV = args.device
    groups = list(GROUPS) if args.groups == "all" else args.groups.split(",")
    for path in args.paths:
        flash_attn.set_cuda_path(path)
        for g in groups:
            torch.manual_seed(0)
            try:
                GROUPS[g]()
                if DEV == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:
                # One line scripts/reliability.py can find in the sanitizer's output.
                print(f"SANITIZER_CASES_EXCEPTION group={g} path={path}: {type(e).__name__}: {e}", flush=True)
                raise
    print("sanitizer cases done:", ", ".join(groups), "on", ", ".join(args.paths))


if __name__ == "__main__":
    main()
