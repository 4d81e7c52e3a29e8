#!/usr/bin/env python
"""The whole benchmark suite in one process per device, inside a fixed time budget.

  python benchmarks/suite.py                          # GPU: everything, <= 8 minutes on one H100
  python benchmarks/suite.py --device cpu --tiny      # smoke test of every part on the CPU
  python benchmarks/suite.py --parts training,memory --max-minutes 3 --outdir /tmp/bench

Parts, in the order they run (each writes its JSON after every config, so a stopped run keeps
what it measured; see benchmarks/README.md):
  setup          the matmul / copy ceilings
  training       BENCH.md training grid in bf16 (fp32 on the CPU): fwd, bwd, fwd_bwd; ours,
                 ours_sm80, ours_sm90, torch_flash, cudnn, efficient, and math
                 up to seqlen 4096                                           -> <slug>-attention.json
  decode         BENCH.md decode grid, contiguous and paged caches           -> <slug>-decode.json
  rotary         apply_rotary_emb bandwidth against a device copy (GPU)      -> <slug>-rotary.json
  training_fp16  the training grid in fp16: ours*, torch_flash, cudnn        -> <slug>-attention.json
  varlen         mixed-length batches: ours varlen vs SDPA peers (padded, and as
                 nested tensors) and FlexAttention with a document mask      -> <slug>-varlen.json
  memory         peak memory of fwd+bwd vs seqlen up to 128K (OOM recorded)  -> <slug>-memory.json
  training_flex  FlexAttention on a prioritised subset of the bf16 grid (it compiles once per
                 shape, ~10-30 s each, so it gets what the budget allows)    -> <slug>-attention.json
Every part has a time budget (budget.py): work predicted not to fit is not started and is listed
under "skipped" with the reason. Then PNG plots (plot_results.py) beside the JSON when matplotlib
is installed, and the summary tables on stdout.
"""
import argparse
import os
import sys
import threading
import time

PROCESS_START = time.monotonic()  # the budget covers imports too: they take seconds

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.dirname(BENCH_DIR))  # repo root, last: see bench_attention.py

import torch  # noqa: E402

from bench_memory import run_memory  # noqa: E402
from bench_training import Estimator, run_training, training_configs  # noqa: E402
from bench_varlen import run_varlen  # noqa: E402
from budget import SuiteClock  # noqa: E402
from ceilings import measure_ceilings  # noqa: E402
from peers import available_impls  # noqa: E402
from results_io import DTYPES_BY_NAME, RESULTS_DIR, ResultFile, device_slug, log  # noqa: E402

OPS = ["fwd", "bwd", "fwd_bwd"]
# Nominal seconds per part on one H100 (scaled to --max-minutes). The training grid comes first
# because it is the core of the comparison; FlexAttention last, as the part a tight budget trims.
# The parts that push the library hardest (varlen paths, 128K sequences) come after the standard
# grids: a CUDA error there (which poisons the process's context) cannot cost the core tables.
GPU_PARTS = [("setup", 10), ("training", 140), ("decode", 35), ("rotary", 5), ("training_fp16", 85),
             ("varlen", 70), ("memory", 30), ("training_flex", 55)]
CPU_PARTS = [("setup", 10), ("training", 150), ("decode", 40), ("rotary", 1), ("training_fp16", 1),
             ("varlen", 60), ("memory", 1), ("training_flex", 1)]
SEQLEN_PRIORITY = [2048, 16384, 4096, 8192, 1024, 512, 256]
MATH_MAX_SEQLEN = 4096  # the math backend materialises s x s scores: slow and huge beyond this
# FlexAttention shapes, most informative first: (hdim, causal, seqlen).
FLEX_PRIORITY = [(128, False, 4096), (128, True, 4096), (128, True, 16384), (128, False, 16384),
                 (128, True, 1024), (64, True, 4096), (256, True, 4096), (64, True, 16384),
                 (256, True, 16384), (64, False, 4096), (256, False, 4096)]
FLEX_COMPILE_GUESS_S = 20.0


class Plan:
    """Grid sizes and implementation lists for one device (GPU, CPU, or --tiny smoke test)."""

    def __init__(self, device, tiny):
        gpu = device.type == "cuda"
        self.timing = ({"target_ms": 30.0, "warmup_ms": 10.0, "max_reps": 100} if gpu else
                       {"target_ms": 200.0 if tiny else 600.0, "min_reps": 3})
        self.training_dtypes = ["bf16"] if gpu else ["fp32"]  # CPU bf16 attention is very slow
        self.fp16 = gpu
        self.hdims = [64, 128, 256] if gpu else [64, 128]
        self.seqlens = [512, 1024, 2048, 4096, 8192, 16384] if gpu else [256, 512, 1024]
        self.tokens, self.model_dim = (16384, 2048) if gpu else (1024, 512)
        self.train_impls = (["ours", "ours_sm80", "ours_sm90", "torch_flash", "cudnn", "efficient",
                             "math"] if gpu else ["ours", "torch_cpu", "math"])
        self.fp16_impls = ["ours", "ours_sm80", "ours_sm90", "torch_flash", "cudnn"]
        self.decode_impls = (["ours", "torch_flash", "cudnn", "efficient", "math", "flex"] if gpu
                             else ["ours", "torch_cpu"])
        self.varlen_impls = (["ours", "ours_sm80", "ours_sm90", "torch_flash", "cudnn", "efficient",
                              "flex"] if gpu else ["ours", "torch_cpu"])
        self.varlen = dict(dtype=torch.bfloat16 if gpu else torch.float32, total=16384 if gpu else 1024,
                           nheads=16 if gpu else 4, hdim=128 if gpu else 64, causals=[False, True])
        self.memory_impls = ["ours", "torch_flash", "cudnn", "efficient", "math"]
        self.memory = dict(dtype=torch.bfloat16, nheads=16, hdim=128, causal=True,
                           seqlens=[1024 << i for i in range(8)])  # 1K .. 128K
        self.flex_shapes = FLEX_PRIORITY
        if tiny:
            self.hdims, self.seqlens = [64], ([256, 512] if not gpu else [512, 1024])
            self.tokens, self.model_dim = (512, 256) if not gpu else (4096, 1024)
            self.varlen.update(total=512 if not gpu else 4096, nheads=4, hdim=64)
            self.memory["seqlens"] = [1024, 2048, 4096]
            self.flex_shapes = [(64, True, 1024)]
            # Few FlexAttention compilations (~10-30 s each): one in varlen (causal document
            # mask), one in training_flex, none in decode (two decode shapes only).
            self.varlen["causals"] = [True]
            self.decode_impls = [n for n in self.decode_impls if n != "flex"]
        self.decode_quick = tiny


def _open(path, device, ceilings, part_names):
    results = ResultFile(path, device, extra={"suite_parts": part_names})
    results.set_ceilings(ceilings)
    results.data["skipped"] = []
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="total budget; no new work starts after it (default 6.5 GPU, 5 CPU)")
    p.add_argument("--hard-limit-minutes", type=float, default=None,
                   help="watchdog: exit (status 3) at this time from process start, whatever is "
                        "running; every JSON is already on disk (default --max-minutes + 1)")
    p.add_argument("--parts", default=None,
                   help="comma list of parts to run (default all): " + ",".join(n for n, _ in GPU_PARTS))
    p.add_argument("--tiny", action="store_true", help="tiny grids: a smoke test of every part")
    p.add_argument("--outdir", default=RESULTS_DIR, help="where JSON and PNG files go")
    p.add_argument("--prefix", default=None, help="file name prefix (default: device slug, e.g. h100)")
    p.add_argument("--plotdir", default=None, help="where the PNGs go (default: --outdir)")
    p.add_argument("--no-plots", action="store_true", help="do not draw PNGs at the end")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    plan = Plan(device, args.tiny)
    all_parts = GPU_PARTS if gpu else CPU_PARTS
    wanted = [n for n, _ in all_parts] if args.parts is None else args.parts.split(",")
    unknown = [n for n in wanted if n not in dict(all_parts)]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; known: {[n for n, _ in all_parts]}")
    parts = [(n, b) for n, b in all_parts if n in wanted or n == "setup"]
    max_minutes = args.max_minutes if args.max_minutes is not None else (6.5 if gpu else 5.0)
    clock = SuiteClock(max_minutes * 60, parts, start=PROCESS_START)
    hard_limit_s = 60 * (args.hard_limit_minutes if args.hard_limit_minutes is not None
                         else max_minutes + 1.0)
    start_watchdog(hard_limit_s - (time.monotonic() - PROCESS_START))
    torch.manual_seed(0)
    prefix = args.prefix or device_slug(device)
    path = lambda what: os.path.join(args.outdir, f"{prefix}-{what}.json")  # noqa: E731

    part = clock.begin("setup")
    unavailable = []  # {"impl", "reason"}: written into every result file
    impl_cache = {}

    def impls(names):
        """Checked implementations (each checked once); unavailable ones are logged once."""
        out = []
        for name in names:
            if name not in impl_cache:
                found = available_impls([name], device, unavailable)
                impl_cache[name] = found[0] if found else None
                if not found:
                    log(f"[unavailable] {name}: {unavailable[-1]['reason']}")
            if impl_cache[name] is not None:
                out.append(impl_cache[name])
        return out

    ceilings = measure_ceilings(device)
    part_names = [n for n, _ in parts]
    files = {}

    def result_file(what):
        if what not in files:
            files[what] = _open(path(what), device, ceilings, part_names)
            # Implementations unavailable on this machine are listed in every file.
            files[what].data["unavailable"] = unavailable
        return files[what]

    log(f"[suite] device={device_name(device)} parts={part_names} budget={clock.total_s:.0f} s "
        f"out={args.outdir}/{prefix}-*.json")
    clock.end(part)

    for name, _ in parts[1:]:
        part = clock.begin(name)
        try:
            run_part(name, plan, impls, result_file, part, device)
        except Exception as exc:  # a broken part must not take the others down
            log(f"[suite] part {name} failed: {exc!r}")
            what = {"decode": "decode", "varlen": "varlen", "memory": "memory",
                    "rotary": "rotary"}.get(name, "attention")
            result_file(what).data["skipped"].append({"part": name, "reason": f"part failed: {exc!r}"[:300]})
        for results in files.values():
            results.data["suite_seconds"] = round(clock.elapsed(), 1)
            results.save()
        clock.end(part)
        if gpu:
            torch.cuda.empty_cache()

    total = clock.elapsed()
    written = [f.path for f in files.values()]
    log(f"[suite] measured in {total:.0f} s: {', '.join(written)}")
    if not args.no_plots:
        draw_plots(written, args.plotdir or args.outdir)
    print_summaries(written)
    log(f"[suite] done in {clock.elapsed():.0f} s")
    return 0


def start_watchdog(seconds):
    """The budget only stops new work from starting; a call that hangs (a compile, a driver
    problem) would still overrun. This daemon timer ends the process at the hard limit; the JSON
    files are complete up to the last config (each is written atomically after every config)."""
    def fire():
        log("[suite] hard time limit reached: exiting now (status 3); the JSON files keep what was "
            "measured")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(3)
    timer = threading.Timer(max(1.0, seconds), fire)
    timer.daemon = True
    timer.start()
    return timer


def device_name(device):
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def run_part(name, plan, impls, result_file, part, device):
    if name in ("training", "training_fp16", "training_flex"):
        results = result_file("attention")
        notes = results.data["skipped"]
        if name == "training":
            dtypes, names = plan.training_dtypes, plan.train_impls
        elif name == "training_fp16":
            if not plan.fp16:
                return
            dtypes, names = ["fp16"], plan.fp16_impls
        else:
            dtypes, names = ["bf16"], ["flex"]
        chosen = impls(names)
        configs = training_configs([DTYPES_BY_NAME[d] for d in dtypes], plan.hdims, [False, True],
                                   plan.seqlens, plan.tokens, plan.model_dim)
        # Most telling seqlens first (README tables show 2K and 16K), so a budget cut-off drops
        # the least important ones across every hdim rather than the last hdim entirely.
        rank = {s: i for i, s in enumerate(SEQLEN_PRIORITY)}
        configs.sort(key=lambda c: (rank.get(c.seqlen, len(rank)), c.hdim, c.causal))
        if name == "training_flex":
            # Prioritised subset, in priority order (flex compiles once per shape).
            by_key = {(c.hdim, c.causal, c.seqlen): c for c in configs}
            configs = [by_key[k] for k in plan.flex_shapes if k in by_key]
            estimator = Estimator(device, compile_guess_s=FLEX_COMPILE_GUESS_S)
        else:
            estimator = Estimator(device)

        def allowed(impl_name, c):
            return impl_name != "math" or c.seqlen <= MATH_MAX_SEQLEN
        if any(i.name == "math" for i in chosen):
            notes.append({"impl": "math", "reason": f"policy: training grid only up to seqlen "
                                                    f"{MATH_MAX_SEQLEN} (materialises s x s scores)"})
        if name == "training_fp16" and chosen:
            notes.append({"impl": "efficient,math,flex", "reason": "policy: timed in bf16 only "
                          "(the 8-minute budget goes to ours and the fastest peers in fp16)"})
        if name == "training_flex" and chosen:
            notes.append({"impl": "flex", "reason": "policy: a subset of the bf16 grid in priority "
                          "order, as the budget allows (compiles once per shape)"})
        run_training(configs, chosen, OPS, device, results, notes, allowed=allowed, part=part,
                     estimator=estimator, timing_options=plan.timing)
    elif name == "decode":
        # Imported here: bench_decode.py is maintained separately; if it breaks, only this part fails.
        from bench_decode import CPU_DECODE_SHAPES, DECODE_QUICK_SHAPES, DECODE_SHAPES, run_decode_grid
        results = result_file("decode")
        args = argparse.Namespace(quick=plan.decode_quick,
                                  dtypes=[torch.bfloat16 if device.type == "cuda" else torch.float32])
        chosen = impls(plan.decode_impls)
        # bench_decode checks the deadline before each (batch, context) shape; ~1/4 of the part each.
        per_shape = part.budget_s / 5

        def deadline_passed():
            return not part.allows(per_shape)
        run_decode_grid(args, device, chosen, results, results.data["skipped"], deadline_passed)
        # bench_decode stops at the deadline without a note: record the shapes it did not start.
        shapes = CPU_DECODE_SHAPES if device.type != "cuda" else (
            DECODE_QUICK_SHAPES if plan.decode_quick else DECODE_SHAPES)
        seen = {(r["batch"], r["seqlen_k"]) for r in results.rows} | \
            {(n.get("batch"), n.get("seqlen_k")) for n in results.data["skipped"]}
        for batch, context in shapes:
            if (batch, context) not in seen:
                results.data["skipped"].append({"op": "decode", "batch": batch, "seqlen_k": context,
                                                "reason": "time budget: shape not started"})
    elif name == "varlen":
        results = result_file("varlen")
        run_varlen(impls(plan.varlen_impls), device, results, results.data["skipped"], part,
                   ops=OPS, timing_options=plan.timing, **plan.varlen)
    elif name == "memory":
        if device.type != "cuda":
            return
        results = result_file("memory")
        run_memory(impls(plan.memory_impls), device, results, results.data["skipped"], part,
                   **plan.memory)
    elif name == "rotary":
        if device.type != "cuda":
            return
        from bench_rotary import run_rotary
        run_rotary(device, result_file("rotary"))
    else:
        raise ValueError(name)


def draw_plots(paths, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("[suite] matplotlib not installed: no PNGs (draw them later with plot_results.py)")
        return
    from plot_results import plot_file
    os.makedirs(outdir, exist_ok=True)
    for p in paths:
        try:
            for png in plot_file(plt, p, outdir):
                log(f"[suite] plot {png}")
        except Exception as exc:  # a plotting bug must not lose the measurements
            log(f"[suite] plotting {p} failed: {exc!r}")


def print_summaries(paths):
    from summarize_results import summarize
    for p in paths:
        try:
            print(summarize(p, markdown=False))
            print()
        except Exception as exc:
            log(f"[suite] summary of {p} failed: {exc!r}")


if __name__ == "__main__":
    sys.exit(main())
