"""Training grid (BENCH.md): fwd, bwd and fwd+bwd of every implementation on (batch, seqlen, nheads,
hdim) shapes with batch·seqlen and nheads·hdim fixed, so every config does comparable work per token.

Used by bench_attention.py (--grid training) and by suite.py, which adds a time budget (budget.py)
and per-implementation limits (e.g. the math backend only at short sequences).
"""
import collections
import math
import time

import torch

from peers import last_impl
from results_io import DTYPE_NAMES, log, op_flops, round_sig
from timing import num_input_sets, time_attention_op

TrainConfig = collections.namedtuple("TrainConfig", "dtype hdim causal seqlen batch nheads")

# Rough throughputs (FLOP/s) used only to predict how long a config takes (ETA, budget checks);
# the prediction is then scaled by what was really measured so far (Estimator.calibration).
_GUESS_RATE = {"fwd": 300e12, "bwd": 150e12, "fwd_bwd": 170e12}
_GUESS_RATE_SLOW = {"math": 0.1, "efficient": 0.5}  # fraction of the guess above
_OVERHEAD_S = 0.08  # warm-up + >= 30 ms of timed calls + Python, per (impl, op)
_REPS = 13  # >= 10 timed calls + warm-up calls


def training_configs(dtypes, hdims, causals, seqlens, tokens, model_dim):
    """batch = tokens / seqlen, nheads = model_dim / hdim (BENCH.md's standard grid)."""
    return [TrainConfig(dtype, hdim, causal, seqlen, max(1, tokens // seqlen), max(1, model_dim // hdim))
            for dtype in dtypes for hdim in hdims for causal in causals for seqlen in seqlens]


def config_flops(op, c):
    return op_flops(op, c.batch, c.seqlen, c.seqlen, c.nheads, c.hdim, c.causal)


def make_inputs(batch, seqlen, nheads, hdim, dtype, device):
    """Random inputs (never zeros: a kernel can skip or saturate on them), leaves with grad."""
    shape = (batch, seqlen, nheads, hdim)
    return {name: torch.randn(shape, device=device, dtype=dtype).requires_grad_()
            for name in ("q", "k", "v")}


def math_fits(device, batch, nheads, seqlen, elem):
    """The math backend materialises scores, probs and their grads: skip it when that cannot fit."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    need = batch * nheads * seqlen * seqlen * (4 + elem) * 3
    return need < 0.6 * free


class Estimator:
    """Predicted seconds per (config, impl, op), corrected by the measured/predicted ratio so far."""

    def __init__(self, device, compile_guess_s=0.0):
        self.on_gpu = device.type == "cuda"
        self.predicted = 0.0
        self.actual = 0.0
        self.compile_guess_s = compile_guess_s  # per new shape (FlexAttention compiles per shape)

    def raw(self, c, impl_name, ops):
        if not self.on_gpu:  # CPU: no useful absolute guess; relative weights are enough for ETA
            return sum(1.0 + config_flops(op, c) / 5e10 for op in ops)
        slow = _GUESS_RATE_SLOW.get(impl_name, 1.0)
        total = self.compile_guess_s
        for op in ops:
            total += _OVERHEAD_S + _REPS * config_flops(op, c) / (_GUESS_RATE[op] * slow)
        return total

    def calibration(self):
        return self.actual / self.predicted if self.predicted > 0 else 1.0

    def predict(self, c, impl_names, ops):
        return self.calibration() * sum(self.raw(c, name, ops) for name in impl_names)

    def record(self, predicted_raw, actual_s):
        self.predicted += predicted_raw
        self.actual += actual_s


def run_training(configs, impls, ops, device, results, notes, *, allowed=None, part=None,
                 estimator=None, timing_options=None):
    """Time every (config, impl, op); rows go to `results` (saved after each config), failures and
    budget cut-offs to `notes`. allowed(impl_name, config) -> bool filters implementations per
    config (policy, e.g. math only at short sequences); `part` (budget.PartBudget) stops the grid
    when the next config is predicted not to fit."""
    estimator = estimator or Estimator(device)
    timing_options = timing_options or {}
    plan = [(c, [i for i in impls if allowed is None or allowed(i.name, c)]) for c in configs]
    plan = [(c, chosen) for c, chosen in plan if chosen]
    weights = [estimator.raw(c, "x", ops) * len(chosen) for c, chosen in plan]
    if part is not None:
        part.plan(sum(weights))
    not_started = []
    for (c, chosen), weight in zip(plan, weights):
        predicted = estimator.predict(c, [i.name for i in chosen], ops)
        if part is not None and not part.allows(predicted):
            not_started.append(c)
            continue
        t0 = time.monotonic()
        _run_config(c, chosen, ops, device, results, notes, timing_options)
        estimator.record(sum(estimator.raw(c, i.name, ops) for i in chosen), time.monotonic() - t0)
        results.save()
        if part is not None:
            part.advance(weight, f"{DTYPE_NAMES[c.dtype]} d={c.hdim} causal={int(c.causal)} "
                                 f"s={c.seqlen} ({len(chosen)} impls) in {time.monotonic() - t0:.1f} s")
    if not_started:
        names = sorted({i.name for _, chosen in plan for i in chosen})
        reason = (f"time budget: {len(not_started)} of {len(plan)} configs not started "
                  f"(seqlens {sorted({c.seqlen for c in not_started})}, "
                  f"hdims {sorted({c.hdim for c in not_started})}, "
                  f"dtypes {sorted({DTYPE_NAMES[c.dtype] for c in not_started})})")
        log(f"[budget] {names}: {reason}")
        notes.append({"impl": ",".join(names), "op": ",".join(ops),
                      "reason": reason})
        if part is not None:
            part.skipped_units += len(not_started)


def _run_config(c, impls, ops, device, results, notes, timing_options):
    elem = torch.tensor([], dtype=c.dtype).element_size()
    set_bytes = 5 * c.batch * c.seqlen * c.nheads * c.hdim * elem  # q, k, v, out, dout
    base = {"dtype": DTYPE_NAMES[c.dtype], "hdim": c.hdim, "causal": c.causal, "batch": c.batch,
            "seqlen_q": c.seqlen, "seqlen_k": c.seqlen, "nheads": c.nheads, "nheads_kv": c.nheads}
    try:
        sets = [make_inputs(c.batch, c.seqlen, c.nheads, c.hdim, c.dtype, device)
                for _ in range(num_input_sets(set_bytes, device))]
    except torch.cuda.OutOfMemoryError as exc:
        notes.append(dict(base, reason=f"OOM making inputs: {exc}"[:300]))
        return
    scale = 1.0 / math.sqrt(c.hdim)
    for impl in impls:
        if impl.name == "math" and not math_fits(device, c.batch, c.nheads, c.seqlen, elem):
            notes.append(dict(base, impl="math", reason="would not fit in free GPU memory"))
            continue
        for op in ops:
            label = (f"{op} {base['dtype']} d={c.hdim} causal={int(c.causal)} s={c.seqlen} "
                     f"b={c.batch} h={c.nheads} {impl.name}")
            try:
                timing = time_attention_op(op, impl, sets, c.causal, scale, device, **timing_options)
            except Exception as exc:  # unsupported shape, OOM, compile failure: skip, go on
                log(f"[skip] {label}: {exc!r}"[:400])
                notes.append(dict(base, op=op, impl=impl.name, reason=repr(exc)[:300]))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            flops = config_flops(op, c)
            row = dict(base, op=op, impl=impl.name, ms=round_sig(timing.ms),
                       tflops=round_sig(flops / (timing.ms * 1e-3) / 1e12))
            if impl.name.startswith("ours"):
                row["path"] = last_impl()
            log(f"{label}: {row['ms']} ms, {row['tflops']} TFLOP/s")
            results.add(row)
    del sets
    if device.type == "cuda":
        torch.cuda.empty_cache()
