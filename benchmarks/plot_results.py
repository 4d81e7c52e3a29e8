"""PNG figures from benchmark result files (the JSON format of BENCH.md / benchmarks/README.md).

    python benchmarks/plot_results.py benchmarks/results/h100-attention.json benchmarks/results/h100-decode.json
    python benchmarks/plot_results.py results.json --outdir /tmp/plots

Training rows (op fwd / bwd / fwd_bwd): one figure per (op, dtype), a subplot grid of
hdim (rows) x causal (columns), TFLOP/s against seqlen on a log2 axis, one line per implementation.
Varlen rows (varlen_*): bars of useful TFLOP/s per length mix, a subplot per op x causal.
Memory rows (op memory): peak GiB against seqlen, log-log, out-of-memory attempts marked OOM.
Decode rows: one figure of grouped bars, TB/s per (batch, context) and implementation, paged caches
hatched, the measured copy ceiling dashed. Figures are named <json stem>-<op>-<dtype>.png and
<json stem>-decode.png (just <json stem>.png when the stem already ends in "decode"; likewise
-varlen.png and -memory.png). Every number
drawn is read from the JSON; nothing is typed in by hand.
"""
import argparse
import json
import os
import sys
from collections import defaultdict

DEFAULT_OUTDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# One colour and marker per implementation, fixed across figures so "ours" always looks the same.
IMPL_STYLE = {
    "ours": ("#d62728", "o"), "ours_sm80": ("#ff7f0e", "s"), "ours_sm90": ("#8c564b", "D"),
    "torch_flash": ("#1f77b4", "^"), "cudnn": ("#2ca02c", "v"), "efficient": ("#9467bd", "<"),
    "flex": ("#17becf", ">"), "math": ("#7f7f7f", "x"), "torch_cpu": ("#bcbd22", "P"),
}
IMPL_ORDER = list(IMPL_STYLE)
PAGE_HATCH = {None: "", 16: "//", 256: "xx"}  # other page sizes get ".."
LAYOUT_HATCH = {"padded": "//", "nested": ".."}  # varlen peers; packed (ours, flex) is plain


def impl_rank(impl):
    base = impl.replace("_nested", "")
    rank = IMPL_ORDER.index(base) if base in IMPL_ORDER else len(IMPL_ORDER)
    return rank + (0.5 if base != impl else 0)


def impl_style(impl):
    """A peer's nested-tensor variant (e.g. torch_flash_nested) shares the peer's colour."""
    return IMPL_STYLE.get(impl, IMPL_STYLE.get(impl.replace("_nested", ""), ("#000000", "*")))


def header_line(data):
    commit = str(data.get("commit", "unknown"))[:8]
    return f"{data.get('device', '?')}  |  commit {commit}  |  {data.get('date', '?')}"


def impl_label(impl, rows):
    """'ours (sm90)' or 'ours (sm80/sm90)': the path that really ran, as recorded in the rows."""
    paths = sorted({r["path"] for r in rows if r.get("path")})
    return f"{impl} ({'/'.join(paths)})" if paths else impl


def plot_training(plt, data, rows, stem, outdir):
    written = []
    by_fig = defaultdict(list)
    for r in rows:
        by_fig[(r["op"], r["dtype"])].append(r)
    ceiling = data.get("ceilings", {}).get("matmul_bf16_tflops")
    for (op, dtype), fig_rows in sorted(by_fig.items()):
        hdims = sorted({r["hdim"] for r in fig_rows})
        causals = sorted({bool(r["causal"]) for r in fig_rows})
        fig, axes = plt.subplots(len(hdims), len(causals), squeeze=False, sharex=True,
                                 figsize=(5.2 * len(causals), 3.6 * len(hdims) + 0.8))
        handles = {}
        for i, hdim in enumerate(hdims):
            for j, causal in enumerate(causals):
                ax = axes[i][j]
                cell = [r for r in fig_rows if r["hdim"] == hdim and bool(r["causal"]) == causal]
                for impl in sorted({r["impl"] for r in cell}, key=impl_rank):
                    pts = sorted((r["seqlen_q"], r["tflops"]) for r in cell if r["impl"] == impl)
                    color, marker = impl_style(impl)
                    (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color,
                                      marker=marker, linewidth=2.2 if impl == "ours" else 1.4,
                                      markersize=6, zorder=4 if impl == "ours" else 2)
                    # Legend label from all rows of the figure, so one impl has one entry.
                    handles.setdefault(impl, (line, impl_label(
                        impl, [r for r in fig_rows if r["impl"] == impl])))
                if ceiling and dtype == "bf16":
                    ax.axhline(ceiling, color="gray", linestyle="--", linewidth=1)
                ax.set_xscale("log", base=2)
                seqlens = sorted({r["seqlen_q"] for r in cell})
                if seqlens:
                    ax.set_xticks(seqlens)
                    ax.set_xticklabels([str(s) for s in seqlens])
                ax.set_ylim(bottom=0)
                ax.grid(True, which="major", alpha=0.3)
                ax.set_title(f"hdim {hdim}, {'causal' if causal else 'non-causal'}", fontsize=10)
                if i == len(hdims) - 1:
                    ax.set_xlabel("seqlen (q = k; batch x seqlen fixed)")
                if j == 0:
                    ax.set_ylabel("TFLOP/s")
        legend = [h for _, h in sorted(handles.items(), key=lambda kv: impl_rank(kv[0]))]
        lines, labels = [h[0] for h in legend], [h[1] for h in legend]
        if ceiling and dtype == "bf16":
            lines.append(plt.Line2D([], [], color="gray", linestyle="--"))
            labels.append(f"bf16 matmul ceiling ({ceiling:g})")
        fig.legend(lines, labels, loc="lower center", ncol=len(labels) if len(labels) <= 5 else 4, fontsize=9,
                   frameon=False)
        fig.suptitle(f"Attention {op}, {dtype}\n{header_line(data)}", fontsize=11)
        fig.tight_layout(rect=(0, 0.07 if len(labels) <= 5 else 0.11, 1, 1))
        path = os.path.join(outdir, f"{stem}-{op}-{dtype}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_decode(plt, data, rows, stem, outdir):
    groups = list(dict.fromkeys((r["batch"], r["seqlen_k"]) for r in rows))  # the grid's order
    series = sorted({(r["impl"], r.get("page_size")) for r in rows},
                    key=lambda s: (impl_rank(s[0]), s[1] or 0))
    value = {(r["batch"], r["seqlen_k"], r["impl"], r.get("page_size")): r["tbps"] for r in rows}
    notes = {r["impl"]: r["note"] for r in rows if r.get("note")}
    width = 0.85 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.26 * len(series) * len(groups) + 3), 5.2))
    for k, (impl, page) in enumerate(series):
        xs, ys = [], []
        for g, (batch, ctx) in enumerate(groups):
            v = value.get((batch, ctx, impl, page))
            if v is not None:
                xs.append(g - 0.425 + width * (k + 0.5))
                ys.append(v)
        color, _ = impl_style(impl)
        label = impl_label(impl, [r for r in rows if r["impl"] == impl and r.get("page_size") == page])
        label += " contiguous" if page is None else f" paged {page}"
        if impl in notes:
            label += " *"
        ax.bar(xs, ys, width, color=color, edgecolor="black", linewidth=0.4,
               hatch=PAGE_HATCH.get(page, ".."), label=label, alpha=0.9 if page is None else 0.6)
    ceiling = data.get("ceilings", {}).get("copy_tbps")
    if ceiling:
        ax.axhline(ceiling, color="black", linestyle="--", linewidth=1.2,
                   label=f"copy ceiling ({ceiling:g} TB/s)")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"batch {b}\ncontext {c}" for b, c in groups])
    ax.set_ylabel("TB/s (K, V, q, out bytes / time)")
    ax.set_ylim(0, max([ceiling or 0] + list(value.values())) * 1.1)
    ax.grid(True, axis="y", alpha=0.3)
    r0 = rows[0]
    ax.set_title(f"Decode (kvcache step): {r0['dtype']}, hdim {r0['hdim']}, "
                 f"{r0['nheads']} q / {r0['nheads_kv']} kv heads\n{header_line(data)}", fontsize=11)
    ax.legend(fontsize=8, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if notes:
        text = "\n".join(f"* {impl}: {note}" for impl, note in sorted(notes.items()))
        fig.text(0.01, 0.01, text, fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.05 * bool(notes), 1, 1))
    # 'h100-decode.json' gives 'h100-decode.png', not 'h100-decode-decode.png'.
    name = stem if stem.endswith("decode") else f"{stem}-decode"
    path = os.path.join(outdir, f"{name}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_varlen(plt, data, rows, stem, outdir):
    """Grouped bars: useful TFLOP/s per length mix (x) and implementation (bars); a subplot per
    op (rows) and causal (columns). Padded peers (they compute on the padding) and nested-tensor
    peers are hatched."""
    ops = [op for op in ("varlen_fwd", "varlen_bwd", "varlen_fwd_bwd") if any(r["op"] == op for r in rows)]
    ops += sorted({r["op"] for r in rows} - set(ops))
    causals = sorted({bool(r["causal"]) for r in rows})
    mixes = list(dict.fromkeys(r["mix"] for r in rows))
    impls = sorted({r["impl"] for r in rows}, key=impl_rank)
    width = 0.85 / max(1, len(impls))
    fig, axes = plt.subplots(len(ops), len(causals), squeeze=False,
                             figsize=(max(6.0, 0.5 * len(impls) * len(mixes) + 2) * len(causals),
                                      3.2 * len(ops) + 1.2))
    for i, op in enumerate(ops):
        for j, causal in enumerate(causals):
            ax = axes[i][j]
            cell = {(r["mix"], r["impl"]): r for r in rows if r["op"] == op and bool(r["causal"]) == causal}
            for k, impl in enumerate(impls):
                xs, ys, layout = [], [], None
                for g, mix in enumerate(mixes):
                    r = cell.get((mix, impl))
                    if r is not None:
                        xs.append(g - 0.425 + width * (k + 0.5))
                        ys.append(r["tflops"])
                        layout = r.get("layout")
                color, _ = impl_style(impl)
                ax.bar(xs, ys, width, color=color, edgecolor="black", linewidth=0.4,
                       hatch=LAYOUT_HATCH.get(layout, ""),
                       label=impl_label(impl, [r for r in rows if r["impl"] == impl]) +
                       (f" ({layout})" if layout in LAYOUT_HATCH else ""))
            ax.set_xticks(range(len(mixes)))
            labels = []
            for mix in mixes:
                r = next((r for r in rows if r["mix"] == mix), None)
                labels.append(f"{mix}\n{r['batch']} seqs, max {r['seqlen_q']}" if r else mix)
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_ylabel("useful TFLOP/s")
            ax.grid(True, axis="y", alpha=0.3)
            ax.set_title(f"{op}, {'causal' if causal else 'non-causal'}", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    r0 = rows[0]
    fig.suptitle(f"Varlen (mixed lengths, {r0['total_tokens']} tokens): {r0['dtype']}, hdim {r0['hdim']}, "
                 f"{r0['nheads']} heads; ours packed, SDPA peers padded (//) or nested (..), flex document mask"
                 f"\n{header_line(data)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = os.path.join(outdir, f"{stem}.png" if stem.endswith("varlen") else f"{stem}-varlen.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_memory(plt, data, rows, stem, outdir):
    """Peak GiB of one fwd+bwd against seqlen (log-log), one line per implementation; an
    out-of-memory attempt is drawn as a cross on the top edge, labelled OOM."""
    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    oom_marks = []
    for impl in sorted({r["impl"] for r in rows}, key=impl_rank):
        mine = sorted((r for r in rows if r["impl"] == impl), key=lambda r: r["seqlen_q"])
        pts = [(r["seqlen_q"], r["peak_mib"] / 1024) for r in mine if r.get("peak_mib") is not None]
        color, marker = impl_style(impl)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker,
                    linewidth=2.2 if impl == "ours" else 1.4, label=impl, zorder=4 if impl == "ours" else 2)
        else:
            ax.plot([], [], color=color, marker=marker, label=impl)
        oom_marks += [(r["seqlen_q"], color) for r in mine if r.get("oom")]
    values = [r["peak_mib"] / 1024 for r in rows if r.get("peak_mib") is not None]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    seqlens = sorted({r["seqlen_q"] for r in rows})
    ax.set_xticks(seqlens)
    ax.set_xticklabels([f"{s // 1024}K" if s >= 1024 else str(s) for s in seqlens])
    if values:
        top = max(values) * 3
        ax.set_ylim(min(values) / 2, top)
        for seqlen, color in oom_marks:
            ax.plot([seqlen], [top / 1.25], marker="X", markersize=11, color=color, linestyle="none")
            ax.annotate("OOM", (seqlen, top / 1.25), textcoords="offset points", xytext=(0, -16),
                        ha="center", fontsize=8, color=color)
    ax.set_xlabel("seqlen (batch 1)")
    ax.set_ylabel("peak GiB during one fwd+bwd (inputs, outputs, workspace)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    r0 = rows[0]
    ax.set_title(f"Peak memory vs seqlen: {r0['dtype']}, hdim {r0['hdim']}, {r0['nheads']} heads, "
                 f"causal={r0['causal']}\n{header_line(data)}", fontsize=10)
    fig.tight_layout()
    path = os.path.join(outdir, f"{stem}.png" if stem.endswith("memory") else f"{stem}-memory.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_file(plt, json_path, outdir):
    with open(json_path) as f:
        data = json.load(f)
    stem = os.path.splitext(os.path.basename(json_path))[0]
    rows = data.get("rows", [])
    decode = [r for r in rows if r.get("op") == "decode" and r.get("tbps") is not None]
    varlen = [r for r in rows if str(r.get("op")).startswith("varlen_") and r.get("tflops") is not None]
    memory = [r for r in rows if r.get("op") == "memory"]
    training = [r for r in rows if r.get("op") != "decode" and r.get("tflops") is not None
                and r not in varlen]
    written = []
    if training:
        written += plot_training(plt, data, training, stem, outdir)
    if decode:
        written += plot_decode(plt, data, decode, stem, outdir)
    if varlen:
        written += plot_varlen(plt, data, varlen, stem, outdir)
    if memory:
        written += plot_memory(plt, data, memory, stem, outdir)
    if not written:
        print(f"{json_path}: no training (tflops), decode (tbps), varlen or memory rows to plot",
              file=sys.stderr)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="result files (BENCH.md format)")
    parser.add_argument("--outdir", default=DEFAULT_OUTDIR, help="where the PNGs go")
    args = parser.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed (the GPU machine has none)
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_results.py: matplotlib is not installed (pip install matplotlib); "
              "no figures written.")
        return 0
    os.makedirs(args.outdir, exist_ok=True)
    for json_path in args.json:
        for path in plot_file(plt, json_path, args.outdir):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
