"""Host (CPU) overhead of one flash_attn_with_kvcache call, next to its GPU time.

For each case three numbers, per call:
  eager_us  1000 eager calls back to back, then one synchronize: wall time / 1000. What a decode
            loop without CUDA graphs pays: max(host time, GPU time) per call, roughly.
  graph_us  the same call captured 100 times in one CUDA graph, replayed: GPU time / call with no
            host work at all (kernel-only time, launch gaps inside the graph included).
  host_us   CPU time to issue one call while the GPU is held busy by a long sleep kernel, so the
            measurement is the Python + C++ + launch cost alone, never throttled by the GPU.
  overhead_us = eager_us - graph_us  (issue #6 acceptance: <= 10 us; also printed: host_us).

Cases: the decode grid's (1, 8192) row (GQA 32/8, d128, bf16; contiguous, paged 256) and a decode
step that appends k/v with rotary (what a generation loop calls). Rows go to
benchmarks/results/<slug>-host-overhead.json in BENCH.md style (op "decode_host").

    python3 benchmarks/host_overhead.py [--calls 1000] [--out PATH]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import ResultFile, default_out_path, log, round_sig  # noqa: E402

import flash_attn  # noqa: E402
from flash_attn import flash_attn_with_kvcache  # noqa: E402

HDIM, NHEADS, NHEADS_KV = 128, 32, 8


def make_case(name, batch, context, page_size=None, append=False, device="cuda", dtype=torch.bfloat16):
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(batch, 1, NHEADS, HDIM, device=device, dtype=dtype, generator=g)
    k = torch.randn(batch, context, NHEADS_KV, HDIM, device=device, dtype=dtype, generator=g)
    v = torch.randn(batch, context, NHEADS_KV, HDIM, device=device, dtype=dtype, generator=g)
    block_table = None
    if page_size is not None:
        pages = context // page_size
        block_table = torch.randperm(batch * pages, device=device).to(torch.int32).view(batch, pages)
        k = k.view(batch * pages, page_size, NHEADS_KV, HDIM)
        v = v.view(batch * pages, page_size, NHEADS_KV, HDIM)
    # Appending: the cache holds context - 1 keys, the call appends one.
    cache_seqlens = torch.full((batch,), context - 1 if append else context, dtype=torch.int32,
                               device=device)
    kwargs = dict(cache_seqlens=cache_seqlens, block_table=block_table, causal=True)
    if append:
        kwargs["k"] = torch.randn(batch, 1, NHEADS_KV, HDIM, device=device, dtype=dtype, generator=g)
        kwargs["v"] = torch.randn(batch, 1, NHEADS_KV, HDIM, device=device, dtype=dtype, generator=g)
        angle = torch.rand(context, HDIM // 2, device=device, generator=g) * 6.28
        kwargs["rotary_cos"] = angle.cos().to(dtype)
        kwargs["rotary_sin"] = angle.sin().to(dtype)
    row = {"case": name, "batch": batch, "seqlen_k": context}
    if page_size is not None:
        row["page_size"] = page_size
    return row, (lambda: flash_attn_with_kvcache(q, k, v, **kwargs))


def eager_us(call, calls):
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls * 1e6


def host_us(call, calls):
    """CPU time per call while the GPU sleeps: issue is never blocked by the GPU. Chunked so the
    launch queue (about a thousand entries) never fills."""
    chunk, total, done = 100, 0.0, 0
    torch.cuda.synchronize()
    while done < calls:
        torch.cuda._sleep(20_000_000)  # ~10 ms at ~2 GHz: longer than issuing the chunk
        t0 = time.perf_counter()
        for _ in range(chunk):
            call()
        total += time.perf_counter() - t0
        done += chunk
        torch.cuda.synchronize()
    return total / done * 1e6


def graph_us(call, per_graph=100, replays=10):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up on the side stream, as torch.cuda.graph wants
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * per_graph)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        log("host_overhead.py needs a CUDA device")
        return 1
    device = torch.device("cuda")
    results = ResultFile(args.out or default_out_path(device, "host-overhead"), device)
    cases = [("decode", 1, 8192, None, False), ("decode_paged256", 1, 8192, 256, False),
             ("decode_append_rotary", 1, 8192, None, True), ("decode_small", 1, 256, None, False),
             ("decode_b32", 32, 8192, None, False)]
    print(f"{'case':24s} {'eager_us':>9s} {'graph_us':>9s} {'overhead':>9s} {'host_us':>8s}")
    for name, batch, context, page_size, append in cases:
        row, call = make_case(name, batch, context, page_size, append)
        e = eager_us(call, args.calls)
        h = host_us(call, min(args.calls, 500))
        gr = graph_us(call)
        row.update({"op": "decode_host", "impl": "ours", "dtype": "bf16", "hdim": HDIM, "seqlen_q": 1,
                    "nheads": NHEADS, "nheads_kv": NHEADS_KV, "eager_us": round_sig(e),
                    "graph_us": round_sig(gr), "overhead_us": round_sig(e - gr),
                    "host_us": round_sig(h), "path": flash_attn.last_impl()})
        results.add(row)
        results.save()
        print(f"{name:24s} {e:9.2f} {gr:9.2f} {e - gr:9.2f} {h:8.2f}")
    log(f"wrote {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
