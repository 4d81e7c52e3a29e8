"""Memory part of the suite: peak GPU memory of one forward + backward against sequence length.

Flash-style kernels need O(N) memory (inputs, outputs, a per-row log-sum-exp); the math backend
materialises the N x N scores and probabilities (and their gradients) and runs out of memory early.
For each implementation the seqlens are tried in increasing order on (1, N, nheads, hdim) inputs;
an out-of-memory error is recorded as a row with "oom": true, and larger seqlens of that
implementation are then not tried (recorded as skipped). The run never stops on a failure.

Rows (op "memory", pass "fwd_bwd"):
  peak_mib    peak allocated during the call, minus what was allocated before the inputs were made:
              inputs (q, k, v, dout) + outputs (out, dq, dk, dv) + everything the call allocates
  extra_mib   peak minus what was allocated with the inputs alive: what attention itself needs
  inputs_mib  q, k, v, dout
  single_call_ms  one call's time (CUDA events), informative only: not a benchmark median
"""
import gc
import math

import torch

from results_io import DTYPE_NAMES, log, round_sig

MIB = float(1 << 20)


def _free(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def _one_call(impl, q, k, v, dout, causal, scale):
    with impl.scope():
        out = impl.attention(q, k, v, causal, scale)
        return torch.autograd.grad(out, (q, k, v), dout)


def _measure(impl, seqlen, nheads, hdim, dtype, causal, device):
    """(peak_mib, extra_mib, inputs_mib, ms) of one fwd+bwd at this seqlen."""
    scale = 1.0 / math.sqrt(hdim)
    _free(device)
    resident = torch.cuda.memory_allocated(device)
    shape = (1, seqlen, nheads, hdim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    dout = torch.randn(shape, device=device, dtype=dtype)
    torch.cuda.synchronize(device)
    with_inputs = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    grads = _one_call(impl, q, k, v, dout, causal, scale)
    end.record()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    ms = start.elapsed_time(end)
    del grads, q, k, v, dout
    return ((peak - resident) / MIB, (peak - with_inputs) / MIB, (with_inputs - resident) / MIB, ms)


def run_memory(impls, device, results, notes, part=None, *, dtype, nheads, hdim, causal, seqlens):
    if device.type != "cuda":
        notes.append({"op": "memory", "reason": "peak memory is measured on CUDA devices only"})
        log("[memory] skipped: CUDA only (torch has no peak-memory counter for the CPU)")
        return
    seqlens = sorted(seqlens)
    base = {"op": "memory", "pass": "fwd_bwd", "dtype": DTYPE_NAMES[dtype], "hdim": hdim,
            "causal": causal, "batch": 1, "nheads": nheads, "nheads_kv": nheads}
    if part is not None:
        part.plan(len(impls) * sum((s / seqlens[-1]) ** 2 + 0.05 for s in seqlens))
    for impl in impls:
        # One untimed warm-up call: lazy initialisation, kernel loading and library workspaces
        # should not count as the first seqlen's memory.
        try:
            _measure(impl, seqlens[0], nheads, hdim, dtype, causal, device)
            failure = None
        except Exception as exc:
            failure = repr(exc)[:300]
        if failure is not None:
            log(f"[skip] memory {impl.name}: warm-up failed: {failure}")
            notes.append(dict(base, impl=impl.name, reason=f"warm-up failed: {failure}"))
            _free(device)
            if part is not None:
                part.advance(sum((s / seqlens[-1]) ** 2 + 0.05 for s in seqlens))
            continue
        last = None  # (seqlen, seconds) of the previous successful call, to predict the next
        stop_reason = None
        for seqlen in seqlens:
            weight = (seqlen / seqlens[-1]) ** 2 + 0.05
            row = dict(base, impl=impl.name, seqlen_q=seqlen, seqlen_k=seqlen)
            if stop_reason is None and last is not None and part is not None:
                # Causal or not, the work grows as seqlen^2; +1 s for allocation and slack.
                predicted = last[1] * (seqlen / last[0]) ** 2 + 1.0
                if not part.allows(predicted):
                    stop_reason = f"time budget (predicted {predicted:.1f} s)"
            if stop_reason is not None:
                notes.append(dict(row, reason=stop_reason))
                if part is not None:
                    part.advance(weight)
                continue
            oom, failure = False, None
            try:
                peak, extra, inputs, ms = _measure(impl, seqlen, nheads, hdim, dtype, causal, device)
            except torch.cuda.OutOfMemoryError as exc:
                oom, message = True, str(exc).split("\n")[0][:200]
            except Exception as exc:  # unsupported seqlen etc.: skip this one, try the next
                if "out of memory" in str(exc).lower():  # e.g. a library's own allocation failed
                    oom, message = True, str(exc).split("\n")[0][:200]
                else:
                    failure = repr(exc)[:300]
            # Out of the except blocks: the traceback (and the tensors its frames hold) is gone.
            if failure is not None:
                log(f"[skip] memory {impl.name} s={seqlen}: {failure}")
                notes.append(dict(row, reason=failure))
                _free(device)
                if part is not None:
                    part.advance(weight)
                continue
            if oom:
                _free(device)
                row.update(oom=True, peak_mib=None, note=f"out of memory: {message}")
                stop_reason = f"out of memory at seqlen {seqlen}"
                log(f"[memory] {impl.name} s={seqlen}: OOM")
            else:
                row.update(peak_mib=round_sig(peak), extra_mib=round_sig(extra),
                           inputs_mib=round_sig(inputs), single_call_ms=round_sig(ms))
                last = (seqlen, ms * 1e-3)
                log(f"[memory] {impl.name} s={seqlen}: peak {peak:.0f} MiB (attention {extra:.0f} MiB), "
                    f"{ms:.1f} ms")
            results.add(row)
            results.save()
            if part is not None:
                part.advance(weight, f"{impl.name} s={seqlen}")
        _free(device)
