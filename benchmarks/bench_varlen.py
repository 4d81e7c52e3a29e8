"""Varlen part of the suite: batches of sequences of mixed lengths, as packed training data.

Ours runs flash_attn_varlen_func on the packed tokens (total, nheads, hdim) with cu_seqlens. The
SDPA peers get the same sequences two ways: padded to the longest one, (batch, max_len, nheads,
hdim), with no padding mask (a mask would force the slower efficient/math kernels), so they also
compute on the padding: the cost a padded batch really has, and a lower bound on what a correct
padded run (with a key-padding mask) costs; and, for the backends torch runs on jagged nested
tensors, the packed tokens as a nested tensor (impl "<peer>_nested": torch's own varlen path).
FlexAttention runs the packed tokens as one sequence with a document mask (and causal within each
document): the same work as ours, block-sparse.

TFLOP/s counts the useful FLOPs only, sum over sequences of 4·s_i²·h·d (halved for causal), for
every implementation, so a padded peer's number is its effective rate on the real tokens.
Rows: op varlen_fwd / varlen_bwd / varlen_fwd_bwd, batch = number of sequences, seqlen_q =
seqlen_k = longest sequence, plus mix (length distribution), lengths, total_tokens, layout
(packed / padded / nested).
"""
import contextlib
import math
import random

import torch

from peers import Flex, Ours, Sdpa, last_impl
from results_io import DTYPE_NAMES, OP_FLOP_FACTOR, log, round_sig
from timing import num_input_sets, time_attention_op

# (name, distribution, low, high) with bounds as fractions of the total token count, so the CPU
# smoke run (1024 tokens) and the GPU run (16384 tokens: uniform 512..4096, log-uniform 32..4096:
# many short sequences and a few long ones) draw the same shapes of mix.
MIXES = [("uniform", "uniform", 1 / 32, 1 / 4), ("loguniform", "loguniform", 1 / 512, 1 / 4)]
# SDPA backends torch can run on a jagged nested tensor (its own varlen path, no padding).
NESTED_PEERS = ("torch_flash", "efficient", "cudnn", "torch_cpu")
LAYOUT_NOTES = {"padded": "padded to the longest sequence, no padding mask (computes on the padding)",
                "nested": "torch nested (jagged) tensor: SDPA's own varlen path, no padding"}


def mix_lengths(distribution, low, high, total, seed):
    """Sequence lengths summing exactly to `total`, drawn from the distribution (seeded)."""
    rng = random.Random(seed)
    lengths = []
    while sum(lengths) < total:
        if distribution == "uniform":
            n = rng.randint(low, high)
        else:
            n = int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        lengths.append(max(1, min(n, total - sum(lengths))))
    return lengths


def useful_flops(op, lengths, nheads, hdim, causal):
    fwd = sum(4.0 * n * n * nheads * hdim for n in lengths)
    return OP_FLOP_FACTOR[op] * (fwd / 2 if causal else fwd)


# ---------------------------------------------------------------------------------------------
# Implementations adapted to time_attention_op's interface: attention(q, k, v, causal, scale)
# ---------------------------------------------------------------------------------------------
class _PackedOurs:
    def __init__(self, ours, cu_seqlens, max_seqlen):
        self.name, self.ours = ours.name, ours
        self.cu_seqlens, self.max_seqlen = cu_seqlens, max_seqlen

    def scope(self):
        return self.ours.scope()

    def attention(self, q, k, v, causal, scale):
        return self.ours.varlen_attention(q, k, v, self.cu_seqlens, self.max_seqlen, causal, scale)


class _NestedSdpa:
    """SDPA on jagged nested tensors built (as views) from the packed tokens and the offsets."""

    def __init__(self, sdpa, cu_seqlens, lengths):
        self.name, self.sdpa = sdpa.name + "_nested", sdpa
        self.offsets = cu_seqlens.long()
        # Given up front, so torch does not compute them with a device sync inside the timed call.
        self.min_len, self.max_len = min(lengths), max(lengths)

    def scope(self):
        return self.sdpa.scope()

    def _nested(self, x):
        return torch.nested.nested_tensor_from_jagged(x, self.offsets, min_seqlen=self.min_len,
                                                      max_seqlen=self.max_len).transpose(1, 2)

    def attention(self, q, k, v, causal, scale):
        out = torch.nn.functional.scaled_dot_product_attention(
            self._nested(q), self._nested(k), self._nested(v), is_causal=causal, scale=scale)
        return out.transpose(1, 2).values()


# FlexAttention's mask function reads the document id of every token from this module-level
# tensor. Keeping one tensor per (device, total) and overwriting its contents for each mix means
# the compiled kernel is reused across mixes (a new tensor or closure would recompile).
_doc_ids = {}


def _document_ids(lengths, device):
    total = sum(lengths)
    key = (str(device), total)
    if key not in _doc_ids:
        _doc_ids[key] = torch.empty(total, dtype=torch.int32, device=device)
    ids = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32),
                                  torch.tensor(lengths))
    _doc_ids[key].copy_(ids)
    return _doc_ids[key]


def _make_document_mask_mods(doc):
    def document(b, h, q_idx, kv_idx):
        return doc[q_idx] == doc[kv_idx]

    def document_causal(b, h, q_idx, kv_idx):
        # Within one document positions are offset alike, so kv <= q is causal inside it.
        return (doc[q_idx] == doc[kv_idx]) & (kv_idx <= q_idx)
    return document, document_causal


_mask_mods = {}


class _PackedFlex:
    name = "flex"

    def __init__(self, flex, lengths, causal, device):
        from torch.nn.attention.flex_attention import create_block_mask
        doc = _document_ids(lengths, device)
        key = id(doc)
        if key not in _mask_mods:  # same function objects for every mix: no recompilation
            _mask_mods[key] = _make_document_mask_mods(doc)
        mask_mod = _mask_mods[key][1 if causal else 0]
        total = sum(lengths)
        self.flex = flex
        self.block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=total, KV_LEN=total,
                                            device=str(device))

    def scope(self):
        return contextlib.nullcontext()

    def attention(self, q, k, v, causal, scale):
        out = self.flex.attention_block_mask(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0),
                                             self.block_mask, scale)
        return out.squeeze(0)


# ---------------------------------------------------------------------------------------------
# The part
# ---------------------------------------------------------------------------------------------
def _inputs(shape, dtype, device, count):
    return [{name: torch.randn(shape, device=device, dtype=dtype).requires_grad_()
             for name in ("q", "k", "v")} for _ in range(count)]


def _predict_s(op_names, padded_flops, first_compile):
    """Rough seconds for one (config, impl): timing overhead + 13 calls; a first flex call compiles."""
    if first_compile:
        return 30.0
    return sum(0.1 + 13 * padded_flops * OP_FLOP_FACTOR[op] / 100e12 for op in op_names)


def _variants(impls):
    """(impl, layout, row name): ours and flex packed; SDPA peers padded, and those with a
    nested-tensor (jagged) path also on the packed tokens as a nested tensor."""
    out = []
    for impl in impls:
        if isinstance(impl, (Ours, Flex)):
            out.append((impl, "packed", impl.name))
        elif isinstance(impl, Sdpa):
            out.append((impl, "padded", impl.name))
            if impl.name in NESTED_PEERS:
                out.append((impl, "nested", impl.name + "_nested"))
        else:
            out.append((impl, "unsupported", impl.name))
    return out


def run_varlen(impls, device, results, notes, part=None, *, dtype, total, nheads, hdim, causals,
               ops, timing_options=None, seed=0):
    """One config per (mix, causal); for each, every implementation times every op."""
    timing_options = timing_options or {}
    scale = 1.0 / math.sqrt(hdim)
    elem = torch.tensor([], dtype=dtype).element_size()
    configs = []
    for i, (mix, distribution, low, high) in enumerate(MIXES):
        lengths = mix_lengths(distribution, max(1, int(low * total)), max(1, int(high * total)),
                              total, seed + i)
        configs += [(mix, lengths, causal) for causal in causals]
    variants = _variants(impls)
    if part is not None:
        part.plan(len(configs) * len(variants))
    flex_compiled = set()  # causal flags flex has compiled for (one compile serves every mix)
    for mix, lengths, causal in configs:
        batch, max_len = len(lengths), max(lengths)
        base = {"dtype": DTYPE_NAMES[dtype], "hdim": hdim, "causal": causal, "batch": batch,
                "seqlen_q": max_len, "seqlen_k": max_len, "nheads": nheads, "nheads_kv": nheads,
                "mix": mix, "total_tokens": total, "lengths": lengths}
        cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
        packed_bytes = 5 * total * nheads * hdim * elem
        padded_bytes = 5 * batch * max_len * nheads * hdim * elem
        packed = _inputs((total, nheads, hdim), dtype, device, num_input_sets(packed_bytes, device))
        padded = None
        padded_flops = 4.0 * batch * max_len * max_len * nheads * hdim
        for impl, layout, name in variants:
            first_compile = impl.name == "flex" and causal not in flex_compiled
            predicted = _predict_s(ops, padded_flops, first_compile)
            label = f"varlen {base['dtype']} {mix} causal={int(causal)} b={batch} max={max_len} {name}"
            if part is not None and not part.allows(predicted):
                notes.append(dict(base, impl=name, reason=f"time budget (predicted {predicted:.0f} s)"))
                log(f"[budget] {label}: not started")
                part.advance(1)
                continue
            try:
                if layout == "packed" and isinstance(impl, Ours):
                    runner, sets = _PackedOurs(impl, cu, max_len), packed
                elif layout == "packed":
                    runner, sets = _PackedFlex(impl, lengths, causal, device), packed
                elif layout == "nested":
                    runner, sets = _NestedSdpa(impl, cu, lengths), packed
                elif layout == "padded":
                    if padded is None:
                        padded = _inputs((batch, max_len, nheads, hdim), dtype, device,
                                         num_input_sets(padded_bytes, device))
                    runner, sets = impl, padded
                else:
                    raise TypeError(f"no varlen adapter for {impl.name}")
            except Exception as exc:
                log(f"[skip] {label}: {exc!r}"[:400])
                notes.append(dict(base, impl=name, reason=repr(exc)[:300]))
                if part is not None:
                    part.advance(1)
                continue
            for op in ops:
                row_op = "varlen_" + op
                try:
                    timing = time_attention_op(op, runner, sets, causal, scale, device, **timing_options)
                except Exception as exc:
                    log(f"[skip] {row_op} {label}: {exc!r}"[:400])
                    notes.append(dict(base, op=row_op, impl=name, reason=repr(exc)[:300]))
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if impl.name == "flex":
                    flex_compiled.add(causal)
                flops = useful_flops(op, lengths, nheads, hdim, causal)
                row = dict(base, op=row_op, impl=name, layout=layout, ms=round_sig(timing.ms),
                           tflops=round_sig(flops / (timing.ms * 1e-3) / 1e12))
                if layout in LAYOUT_NOTES:
                    row["note"] = LAYOUT_NOTES[layout]
                if impl.name.startswith("ours"):
                    row["path"] = last_impl()
                log(f"{row_op} {label}: {row['ms']} ms, {row['tflops']} TFLOP/s (useful)")
                results.add(row)
            results.save()
            if part is not None:
                part.advance(1, label)
        del packed, padded
        if device.type == "cuda":
            torch.cuda.empty_cache()
