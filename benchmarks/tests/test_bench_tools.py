"""Fast CPU checks of the benchmark tooling's logic (no timing runs): length mixes, FLOP counts,
budgets, the memory part's OOM handling (with a fake torch.cuda), the FlexAttention document mask
against ours, and the table / plot / README generators on a synthetic result file.

    python3 -m pytest -q benchmarks/tests
"""
import contextlib
import json
import math
import os
import sys
import types

import pytest
import torch

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH_DIR)
sys.path.append(os.path.dirname(BENCH_DIR))

import bench_memory  # noqa: E402
import bench_varlen  # noqa: E402
import budget  # noqa: E402
import readme_perf  # noqa: E402
import summarize_results  # noqa: E402
from results_io import ResultFile  # noqa: E402


@pytest.mark.parametrize("distribution,low,high", [("uniform", 512, 4096), ("loguniform", 32, 4096)])
def test_mix_lengths_sum_exactly_and_stay_in_range(distribution, low, high):
    lengths = bench_varlen.mix_lengths(distribution, low, high, 16384, seed=3)
    assert sum(lengths) == 16384
    assert all(1 <= n <= high for n in lengths)
    assert lengths == bench_varlen.mix_lengths(distribution, low, high, 16384, seed=3)  # seeded


def test_useful_flops_counts_each_sequence_alone():
    assert bench_varlen.useful_flops("fwd", [3, 5], 2, 8, False) == 4.0 * (9 + 25) * 2 * 8
    assert bench_varlen.useful_flops("bwd", [4], 1, 1, True) == 2.5 * 4.0 * 16 / 2


def test_budget_rolls_unused_time_forward_and_reserves_for_later_parts():
    clock = budget.SuiteClock(100.0, [("a", 50), ("b", 30), ("c", 20)])
    a = clock.begin("a")
    # a may not eat into half of b's and c's nominal budgets: 100 - 25 = 75 >= 50, so 50.
    assert a.budget_s == pytest.approx(50.0, abs=0.5)
    clock.end(a)  # used ~0 s: ~50 s carried forward
    b = clock.begin("b")
    assert b.budget_s == pytest.approx(80.0, abs=0.5)  # 30 + 50 carried (cap: 100 - 10 = 90)
    assert b.allows(10.0) and not b.allows(1000.0)


class _FakeEvent:
    def __init__(self, enable_timing=True):
        pass

    def record(self):
        pass

    def elapsed_time(self, other):
        return 5.0


def test_memory_part_records_oom_and_failures_and_goes_on(monkeypatch, tmp_path):
    alloc = {"now": 0, "peak": 0}
    fake_cuda = types.SimpleNamespace(
        memory_allocated=lambda d=None: alloc["now"], max_memory_allocated=lambda d=None: alloc["peak"],
        reset_peak_memory_stats=lambda d=None: alloc.update(peak=alloc["now"]),
        synchronize=lambda d=None: None, empty_cache=lambda: None, Event=_FakeEvent,
        OutOfMemoryError=torch.cuda.OutOfMemoryError)

    class Shim:  # torch, with a fake cuda namespace and CPU tensors
        cuda = fake_cuda
        autograd = torch.autograd

        def randn(self, *shape, device=None, dtype=None):
            t = torch.randn(*shape, dtype=dtype)
            alloc["now"] += t.numel() * t.element_size()
            return t

        def __getattr__(self, name):
            return getattr(torch, name)
    monkeypatch.setattr(bench_memory, "torch", Shim())

    class Impl:
        def __init__(self, name, oom_above=None, fail_at=None):
            self.name, self.oom_above, self.fail_at = name, oom_above, fail_at

        def scope(self):
            return contextlib.nullcontext()

        def attention(self, q, k, v, causal, scale):
            s = q.shape[1]
            if s == self.fail_at:
                raise ValueError("unsupported seqlen")
            if self.oom_above and s > self.oom_above:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64 GiB")
            alloc["peak"] = max(alloc["peak"], alloc["now"] + s * s * 10)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    results = ResultFile(str(tmp_path / "m.json"), torch.device("cpu"))
    notes = results.data["skipped"] = []
    impls = [Impl("ours"), Impl("math", oom_above=32), Impl("cudnn", fail_at=32)]
    bench_memory.run_memory(impls, types.SimpleNamespace(type="cuda"), results, notes, None,
                            dtype=torch.float32, nheads=2, hdim=8, causal=True, seqlens=[16, 32, 64, 128])
    got = {(r["impl"], r["seqlen_q"]): r for r in results.rows}
    assert all(("ours", s) in got and got[("ours", s)]["peak_mib"] > 0 for s in (16, 32, 64, 128))
    assert got[("math", 64)]["oom"] is True and ("math", 128) not in got
    assert any(n["impl"] == "math" and n["seqlen_q"] == 128 and "out of memory" in n["reason"] for n in notes)
    assert ("cudnn", 32) not in got and ("cudnn", 64) in got  # a failure skips one seqlen only
    assert json.load(open(tmp_path / "m.json"))["rows"]  # saved as it goes


def test_flex_document_mask_matches_ours_varlen(monkeypatch):
    flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention
    import peers
    try:
        ours = peers.make_impl("ours")
        ours.check(torch.device("cpu"))
    except peers.Unavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(peers, "_compiled_flex", lambda: flex_attention)  # eager flex: mask logic only
    lengths = bench_varlen.mix_lengths("loguniform", 4, 200, 512, 1)
    total, h, d = sum(lengths), 2, 32
    q, k, v = (torch.randn(total, h, d) for _ in range(3))
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    for causal in (False, True):
        flex = bench_varlen._PackedFlex(peers.Flex(), lengths, causal, torch.device("cpu"))
        mine = bench_varlen._PackedOurs(ours, cu, max(lengths))
        a = flex.attention(q, k, v, causal, 1 / math.sqrt(d))
        b = mine.attention(q, k, v, causal, 1 / math.sqrt(d))
        assert (a - b).abs().max().item() < 1e-4
    # A second mix reuses the same mask function (no FlexAttention recompilation).
    other = bench_varlen._PackedFlex(peers.Flex(), bench_varlen.mix_lengths("uniform", 16, 128, 512, 2),
                                     True, torch.device("cpu"))
    assert other.block_mask.mask_mod is flex.block_mask.mask_mod


def _synthetic(tmp_path):
    rows = []
    for impl, rate in (("ours", 500.0), ("cudnn", 550.0), ("torch_flash", 350.0)):
        for op in ("fwd", "bwd", "fwd_bwd"):
            for seqlen in (2048, 16384):
                rows.append({"op": op, "impl": impl, "dtype": "bf16", "hdim": 128, "causal": True,
                             "batch": 16384 // seqlen, "seqlen_q": seqlen, "seqlen_k": seqlen,
                             "nheads": 16, "nheads_kv": 16, "ms": 1.0, "tflops": rate,
                             **({"path": "sm90"} if impl == "ours" else {})})
    for impl, layout in (("ours", "packed"), ("torch_flash", "padded"), ("torch_flash_nested", "nested")):
        rows.append({"op": "varlen_fwd", "impl": impl, "dtype": "bf16", "hdim": 128, "causal": False,
                     "batch": 7, "seqlen_q": 4000, "seqlen_k": 4000, "nheads": 16, "nheads_kv": 16,
                     "mix": "uniform", "total_tokens": 16384, "lengths": [1], "layout": layout,
                     "ms": 1.0, "tflops": 100.0})
    for impl in ("ours", "math"):
        for seqlen in (1024, 2048):
            r = {"op": "memory", "pass": "fwd_bwd", "impl": impl, "dtype": "bf16", "hdim": 128,
                 "causal": True, "batch": 1, "nheads": 16, "nheads_kv": 16, "seqlen_q": seqlen,
                 "seqlen_k": seqlen}
            r.update({"oom": True, "peak_mib": None} if impl == "math" and seqlen == 2048 else
                     {"peak_mib": 10.0 * seqlen})
            rows.append(r)
    data = {"device": "SYNTHETIC", "commit": "abcdef0", "date": "2026-01-01", "software": {},
            "ceilings": {"matmul_bf16_tflops": 700.0}, "rows": rows,
            "skipped": [{"impl": "flex", "reason": "time budget"}],
            "unavailable": [{"impl": "cudnn", "reason": "no cuDNN"}]}
    path = tmp_path / "syn.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_tables_and_readme_section_read_every_number_from_rows(tmp_path, capsys):
    path = _synthetic(tmp_path)
    text = summarize_results.summarize(path, markdown=True)
    assert "uniform: 7 seqs, max 4000" in text and "OOM" in text and "unavailable cudnn" in text
    readme_perf.main([path, "--readme-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "## Measured performance" in out and "syn.json" in out
    assert "| fwd | 128 | yes | 16384 | 500.0 (sm90) |" in out
    assert "0.91x" in out  # 500 / 550: ours against the best peer
    assert "torch_flash_nested" in out and "OOM" in out


def test_plots_are_written_for_every_kind_of_row(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plot_results
    written = plot_results.plot_file(plt, _synthetic(tmp_path), str(tmp_path))
    names = sorted(os.path.basename(p) for p in written)
    assert "syn-varlen.png" in names and "syn-memory.png" in names and "syn-fwd-bf16.png" in names
    assert all(os.path.getsize(p) > 1000 for p in written)
