"""Tables of ours against the peers from benchmark result files (BENCH.md / benchmarks/README.md format).

    python benchmarks/summarize_results.py benchmarks/results/h100-attention.json
    python benchmarks/summarize_results.py benchmarks/results/h100-decode.json --markdown

Training rows (fwd / bwd / fwd_bwd / varlen_*): one line per config with ours (and the path that
really ran), ours_sm80, torch_flash, cudnn, the best peer, and the ratios ours/best, ours/cudnn,
ours_sm80/torch_flash (> 1: ours is faster). Decode rows: one line per (batch, context, page
layout) of ours, against the best peer on the same problem (peers read a dense cache), ratio in
TB/s (= peer time / ours time, since both count the same bytes). Every number printed comes from
the JSON, so the output can be pasted into a README as it is.
"""
import argparse
import json
import sys

OP_ORDER = ["fwd", "bwd", "fwd_bwd", "varlen_fwd", "varlen_bwd"]
MISSING = "—"


def is_peer(impl):
    """Peers are everything that is not one of our own paths."""
    return not impl.startswith("ours")


def fmt(value):
    """One decimal from 10 up (GPU TFLOP/s, µs); 3 significant digits below (TB/s, CPU TFLOP/s)."""
    if value is None:
        return MISSING
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt_ratio(r):
    return MISSING if r is None else f"{r:.2f}x"


def render(headers, lines, markdown, right_from):
    """A markdown table, or a plain one with aligned columns; columns >= right_from are numbers."""
    if markdown:
        align = ["---" if i < right_from else "---:" for i in range(len(headers))]
        out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *lines)]

    def row(cells):
        return "  ".join(c.ljust(w) if i < right_from else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([row(headers), "  ".join("-" * w for w in widths)] + [row(l) for l in lines])


def group_configs(rows, key_fields):
    """{config key: {impl (+ page): row}}; a later row for the same key replaces an earlier one."""
    configs = {}
    for r in rows:
        key = tuple(r.get(f) for f in key_fields)
        configs.setdefault(key, {})[(r["impl"], r.get("page_size"))] = r
    return configs


TRAIN_KEY = ("op", "dtype", "hdim", "causal", "seqlen_q", "seqlen_k", "batch", "nheads", "nheads_kv",
             "mix")  # mix: varlen rows' length distribution (None for the fixed-length grid)


def training_table(rows, markdown):
    configs = group_configs(rows, TRAIN_KEY)

    def order(key):
        op = key[0]
        return (OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER), op) + tuple(
            (v is None, v) for v in key[1:])
    headers = ["op", "dtype", "hdim", "causal", "seqlen", "ours TFLOP/s (path)", "ours_sm80",
               "torch_flash", "cudnn", "best peer", "ours/best", "ours/cudnn", "sm80/torch_flash"]
    lines = []
    for key in sorted(configs, key=order):
        impls = configs[key]
        k = dict(zip(TRAIN_KEY, key))

        def tf(impl):
            r = impls.get((impl, None))
            return r["tflops"] if r else None
        ours = impls.get(("ours", None))
        ours_cell = MISSING
        if ours:
            ours_cell = fmt(ours['tflops']) + (f" ({ours['path']})" if ours.get("path") else "")
        peers = [(r["tflops"], impl) for (impl, _), r in impls.items() if is_peer(impl)]
        best = max(peers) if peers else None
        seqlen = str(k["seqlen_q"]) if k["seqlen_q"] == k["seqlen_k"] else \
            f"{k['seqlen_q']}/{k['seqlen_k']}"
        if k["mix"]:  # varlen: the distribution, number of sequences and the longest one
            seqlen = f"{k['mix']}: {k['batch']} seqs, max {seqlen}"
        lines.append([k["op"], k["dtype"], str(k["hdim"]), "yes" if k["causal"] else "no", seqlen,
                      ours_cell, fmt(tf("ours_sm80")), fmt(tf("torch_flash")),
                      fmt(tf("cudnn")),
                      f"{fmt(best[0])} ({best[1]})" if best else MISSING,
                      fmt_ratio(ratio(tf("ours"), best[0] if best else None)),
                      fmt_ratio(ratio(tf("ours"), tf("cudnn"))),
                      fmt_ratio(ratio(tf("ours_sm80"), tf("torch_flash")))])
    return render(headers, lines, markdown, right_from=4)


DECODE_KEY = ("dtype", "hdim", "batch", "seqlen_q", "seqlen_k", "nheads", "nheads_kv")


def decode_table(rows, markdown):
    configs = group_configs(rows, DECODE_KEY)
    headers = ["batch", "context", "page", "ours TB/s (path)", "ours µs", "best peer TB/s",
               "peer µs", "ratio ours/best"]
    lines = []
    for key in configs:  # the file's order: the grid's (batch, context) order
        impls = configs[key]
        k = dict(zip(DECODE_KEY, key))
        peers = sorted(((r["tbps"], impl, page) for (impl, page), r in impls.items()
                        if is_peer(impl)), key=lambda p: p[0])
        best = peers[-1] if peers else None
        best_row = impls[(best[1], best[2])] if best else None
        ours_pages = sorted((page for impl, page in impls if impl == "ours"),
                            key=lambda p: (p is not None, p or 0))
        for page in ours_pages:
            r = impls[("ours", page)]
            best_cell = MISSING
            if best:
                best_cell = f"{fmt(best[0])} ({best[1]}" + \
                    (f", page {best[2]})" if best[2] else ")") + (" †" if best_row.get("note") else "")
            lines.append([str(k["batch"]), str(k["seqlen_k"]),
                          "contiguous" if page is None else str(page),
                          fmt(r['tbps']) + (f" ({r['path']})" if r.get("path") else ""),
                          fmt(r.get("us")), best_cell,
                          fmt(best_row.get("us") if best_row else None),
                          fmt_ratio(ratio(r["tbps"], best[0] if best else None))])
    return render(headers, lines, markdown, right_from=3)


def memory_table(rows, markdown):
    """Peak MiB of one fwd+bwd per seqlen (rows) and implementation (columns); OOM as such."""
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    seqlens = sorted({r["seqlen_q"] for r in rows})
    cell = {}
    for r in rows:
        cell[(r["seqlen_q"], r["impl"])] = "OOM" if r.get("oom") else fmt(r.get("peak_mib"))
    headers = ["seqlen"] + [f"{i} MiB" for i in impls]
    lines = [[str(s)] + [cell.get((s, i), MISSING) for i in impls] for s in seqlens]
    return render(headers, lines, markdown, right_from=0)


def caption(data, rows, decode, memory=False):
    if memory:
        r0 = rows[0]
        return "; ".join([data.get("device", "?"), f"commit {str(data.get('commit', 'unknown'))[:8]}",
                          data.get("date", "?"),
                          f"peak memory of one {r0.get('pass', 'fwd_bwd')}, {r0['dtype']}, "
                          f"hdim {r0['hdim']}, "
                          f"batch {r0['batch']}, {r0['nheads']} heads, causal={r0['causal']} "
                          f"(inputs + outputs + workspace; — = not run)"])
    ceil = data.get("ceilings", {})
    parts = [data.get("device", "?"), f"commit {str(data.get('commit', 'unknown'))[:8]}",
             data.get("date", "?")]
    if ceil.get("matmul_bf16_tflops") and not decode:
        parts.append(f"bf16 matmul ceiling {ceil['matmul_bf16_tflops']:g} TFLOP/s")
    if ceil.get("copy_tbps") and decode:
        parts.append(f"copy ceiling {ceil['copy_tbps']:g} TB/s")
    if decode:
        heads = sorted({(r["dtype"], r["hdim"], r["nheads"], r["nheads_kv"]) for r in rows})
        parts += [f"{d}, hdim {h}, {hq} q / {hk} kv heads" for d, h, hq, hk in heads]
    else:
        tokens = {r["batch"] * r["seqlen_q"] for r in rows}
        model = {r["nheads"] * r["hdim"] for r in rows}
        if len(tokens) == 1 and len(model) == 1:
            parts.append(f"batch·seqlen = {tokens.pop()}, nheads·hdim = {model.pop()}")
    return "; ".join(parts)


def footnotes(data, rows):
    notes = sorted({f"{r['impl']}: {r['note']}" for r in rows if r.get("note")})
    out = [f"† {n}" for n in notes]  # † marks a best peer that carries a note
    for u in data.get("unavailable", []):
        out.append(f"unavailable {u.get('impl', '?')}: {u.get('reason', '?')}")
    skipped = {}
    for s in data.get("skipped", []):
        skipped.setdefault((s.get("impl", "?"), s.get("reason", "?")), []).append(s)
    for (impl, reason), entries in sorted(skipped.items()):
        out.append(f"skipped {impl} on {len(entries)} config(s): {reason}")
    return out


def summarize(path, markdown):
    with open(path) as f:
        data = json.load(f)
    rows = data.get("rows", [])
    training = [r for r in rows if r.get("op") != "decode" and r.get("tflops") is not None]
    decode = [r for r in rows if r.get("op") == "decode" and r.get("tbps") is not None]
    memory = [r for r in rows if r.get("op") == "memory"]
    parts = []
    for subset, kind, table in ((training, "training", training_table), (decode, "decode", decode_table),
                                (memory, "memory", memory_table)):
        if not subset:
            continue
        title = caption(data, subset, kind == "decode", kind == "memory")
        parts.append(f"**{title}**" if markdown else title)
        parts.append(table(subset, markdown))
    if not parts:
        parts.append(f"{path}: no training (tflops), decode (tbps) or memory rows")
    extra = footnotes(data, rows)
    if extra:
        parts.append("\n".join(("- " + e if markdown else e) for e in extra))
    return "\n\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="result files (BENCH.md format)")
    parser.add_argument("--markdown", action="store_true", help="markdown tables (for READMEs)")
    args = parser.parse_args(argv)
    print("\n\n".join(summarize(p, args.markdown) for p in args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
