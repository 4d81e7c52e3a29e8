"""One forward (or forward + backward) call of ours (sm80 path forced) or torch's FA2 (SDPA flash backend) at
one training shape, for Nsight Compute comparisons of the two kernels on the same inputs (GPU only):

    ncu --kernel-name regex:fwd_kernel --launch-count 1 --section MemoryWorkloadAnalysis_Tables \
        python3 csrc/cuda/sm80/profile_one.py --impl ours --op fwd --hdim 256 --seqlen 8192
    ncu --kernel-name regex:flash_fwd_kernel ... --impl torch ...

Shape: batch = tokens / seqlen, nheads = model_dim / hdim (the benchmark's grid). Kernel names: ours
`fwd_kernel` / `bwd_main_kernel`, torch `flash_fwd_kernel` / `flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel`.
Environment switches (FLASH_SM80_*) apply as usual."""
import argparse

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", choices=["ours", "torch"], default="ours")
    ap.add_argument("--op", choices=["fwd", "bwd"], default="fwd")
    ap.add_argument("--hdim", default="256", help="head dim(s), ','-separated: one shape after the other")
    ap.add_argument("--seqlen", type=int, default=8192)
    ap.add_argument("--causal", type=int, default=0)
    ap.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--model-dim", type=int, default=2048)
    ap.add_argument("--calls", type=int, default=1)
    ap.add_argument("--kprof", type=int, default=0,
                    help="> 0: time this many calls under torch.profiler and print the GPU time per kernel")
    args = ap.parse_args()
    for hdim in map(int, args.hdim.split(",")):
        run_shape(args, hdim)


def run_shape(args, hdim):
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    b, s, h, d = max(1, args.tokens // args.seqlen), args.seqlen, max(1, args.model_dim // hdim), hdim
    grad = args.op == "bwd"
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, requires_grad=grad) for _ in range(3))
    dout = torch.randn(b, s, h, d, device="cuda", dtype=dtype)
    causal = bool(args.causal)

    if args.impl == "ours":
        import flash_attn
        from flash_attn import flash_attn_func
        flash_attn.set_cuda_path("sm80")

        def call():
            return flash_attn_func(q, k, v, causal=causal)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def call():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=causal)
            return o.transpose(1, 2)

    def step():
        if grad:
            call().backward(dout)
        else:
            with torch.no_grad():
                call()

    for _ in range(args.calls):
        step()
    torch.cuda.synchronize()
    if args.kprof > 0:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.kprof):
                step()
            torch.cuda.synchronize()
        rows = []
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None)
            if t is None:
                t = getattr(e, "cuda_time_total", 0)
            if t > 0:
                rows.append((t / args.kprof, e.count // args.kprof, e.key))
        for t, n, key in sorted(rows, reverse=True)[:12]:
            print(f"  {t:9.1f} us/call  x{n}  {key[:110]}")
        print(f"  total {sum(r[0] for r in rows):.1f} us/call")
    extra = ""
    if args.impl == "ours":
        import flash_attn
        extra = f" path {flash_attn.last_impl()}"
    print(f"profiled {args.impl} {args.op} b{b} s{s} h{h} d{d} causal={causal} {args.dtype}{extra}")


if __name__ == "__main__":
    main()
