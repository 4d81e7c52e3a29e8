"""One timing method for every implementation (ours and peers), on GPU and CPU.

GPU: each call is bracketed by its own pair of CUDA events; the reported time is the median over
>= 10 calls after a warm-up. Timed calls are queued in chunks, each chunk preceded (outside any
event pair) by a `torch.cuda._sleep` kernel so the CPU gets ahead of the GPU: the events then
measure GPU time only, not Python launch overhead (which would otherwise dominate
microsecond-scale decode kernels and hide kernel differences). All implementations are measured the same way.

When one input set fits in L2 (decode at small batch), several input sets are rotated so a call
does not find its operands already cached by the previous call.

CPU: time.perf_counter around each call, median, with the repetition count chosen from a time
budget because the CPU backend can take seconds per call.
"""
import math
import statistics
import time

import torch

DEFAULT_L2_BYTES = 50 * 1024 * 1024
# Queue lead per timed call: ~150 us at <= 2 GHz, more than the Python overhead of one call
# (a fwd+bwd through autograd included). Timed calls are queued in chunks, one sleep per chunk.
_LEAD_CYCLES_PER_CALL = 300_000
_CHUNK = 25


def l2_bytes(device):
    if device.type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0) or DEFAULT_L2_BYTES)


def num_input_sets(bytes_per_set, device, max_sets=8):
    """How many independent input sets to rotate: enough that the sets together exceed 3x L2."""
    l2 = l2_bytes(device)
    if l2 == 0 or bytes_per_set >= 2 * l2:
        return 1
    return max(2, min(max_sets, math.ceil(3 * l2 / max(bytes_per_set, 1))))


class Timing:
    """Median and spread of per-call times, in milliseconds."""

    def __init__(self, times_ms):
        self.times_ms = sorted(times_ms)
        self.ms = statistics.median(self.times_ms)
        self.min_ms = self.times_ms[0]
        self.reps = len(self.times_ms)

    def __repr__(self):
        return f"Timing(ms={self.ms:.4f}, min={self.min_ms:.4f}, reps={self.reps})"


def _cuda_time(fn, input_sets, device, min_reps, max_reps, target_ms, warmup_ms):
    # Warm-up: also triggers lazy init, autotuning and compilation. Then estimate one call's time.
    fn(input_sets[0])
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    calls = 0
    while True:
        fn(input_sets[calls % len(input_sets)])
        calls += 1
        end.record()
        end.synchronize()
        if start.elapsed_time(end) >= warmup_ms or calls >= 100:
            break
    estimate_ms = start.elapsed_time(end) / calls
    reps = int(min(max_reps, max(min_reps, math.ceil(target_ms / max(estimate_ms, 1e-4)))))

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if i % _CHUNK == 0 and hasattr(torch.cuda, "_sleep"):
            # Outside any event pair: lets the CPU queue the next chunk ahead of the GPU.
            torch.cuda._sleep(_CHUNK * _LEAD_CYCLES_PER_CALL)
        starts[i].record()
        fn(input_sets[i % len(input_sets)])
        ends[i].record()
    torch.cuda.synchronize(device)
    return Timing([s.elapsed_time(e) for s, e in zip(starts, ends)])


def _cpu_time(fn, input_sets, min_reps, max_reps, target_ms):
    t0 = time.perf_counter()
    fn(input_sets[0])  # warm-up (thread pools, allocations)
    first_ms = (time.perf_counter() - t0) * 1e3
    reps = int(min(max_reps, max(min_reps, math.ceil(target_ms / max(first_ms, 1e-3)))))
    times = []
    if first_ms > 500:  # warm-up effects are noise next to a call this long: keep it as a sample
        times.append(first_ms)
        reps -= 1
    for i in range(reps):
        t0 = time.perf_counter()
        fn(input_sets[i % len(input_sets)])
        times.append((time.perf_counter() - t0) * 1e3)
    return Timing(times)


def time_fn(fn, input_sets, device, min_reps=None, max_reps=500, target_ms=None, warmup_ms=None):
    """Median time of `fn(inputs)` over rotating `input_sets` (a list; each entry is passed as is).

    target_ms: wanted total measured time; the repetition count is max(min_reps, target/estimate).
    min_reps defaults to 10 on GPU (BENCH.md) and 3 on the CPU, where one call can take seconds.
    """
    if device.type == "cuda":
        return _cuda_time(fn, input_sets, device, min_reps or 10, max_reps,
                          target_ms if target_ms is not None else 100.0,
                          warmup_ms if warmup_ms is not None else 25.0)
    return _cpu_time(fn, input_sets, min_reps or 3, max_reps,
                     target_ms if target_ms is not None else 2000.0)


def time_attention_op(op, impl, sets, causal, scale, device, **timing_options):
    """Time op 'fwd' (grad enabled, as in training), 'bwd' (backward alone: the forward producing
    out runs untimed, the timed call is autograd.grad with retain_graph) or 'fwd_bwd' for one
    implementation (see peers.py) over input sets {"q", "k", "v"} of leaves requiring grad.
    timing_options go to time_fn (min_reps, target_ms, ...)."""
    def forward(s):
        return impl.attention(s["q"], s["k"], s["v"], causal, scale)

    if op == "fwd":
        def call(s):
            with impl.scope():
                return forward(s)
        return time_fn(call, sets, device, **timing_options)

    # Backward needs an output and its gradient; the forward producing them is not timed for bwd.
    for s in sets:
        with impl.scope():
            s["out"] = forward(s)
        s["dout"] = torch.randn_like(s["out"])  # same strides as the impl's output
    grads_of = lambda s: (s["q"], s["k"], s["v"])  # noqa: E731
    try:
        if op == "bwd":
            def call(s):
                with impl.scope():
                    return torch.autograd.grad(s["out"], grads_of(s), s["dout"], retain_graph=True)
        else:
            def call(s):
                with impl.scope():
                    out = forward(s)
                    return torch.autograd.grad(out, grads_of(s), s["dout"])
        return time_fn(call, sets, device, **timing_options)
    finally:
        for s in sets:  # free the retained graphs before the next implementation runs
            s.pop("out", None)
            s.pop("dout", None)
