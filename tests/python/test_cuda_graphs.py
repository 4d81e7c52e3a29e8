"""CUDA-graph capture: fwd+bwd (with and without dropout) and a kvcache decode step, captured once and
replayed. Skipped without a GPU."""

import pytest
import torch

from flash_attn import flash_attn_func, flash_attn_with_kvcache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _side_stream():
    """Every test body runs on a side stream: nothing (not even autograd's bookkeeping for the leaf
    tensors) may touch the legacy default stream while another stream captures."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()


def _capture(fn, warmup=2):
    """Runs fn a few times (as torch requires before capture), then captures it."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = fn()
    return graph, result


def _train_step_inputs(hdim=64):
    torch.manual_seed(0)
    shape_q, shape_kv = (2, 257, 8, hdim), (2, 300, 2, hdim)
    q = torch.randn(shape_q, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(shape_kv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(shape_kv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(shape_q, device="cuda", dtype=torch.bfloat16)
    return q, k, v, dout


def test_fwd_bwd_graph_replays_match_eager():
    q, k, v, dout = _train_step_inputs()

    def step():
        out = flash_attn_func(q, k, v, causal=True, deterministic=True)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
        return out, dq, dk, dv

    eager = [t.clone() for t in step()]
    graph, static = _capture(step)
    for _ in range(2):
        graph.replay()
        torch.cuda.synchronize()
        for a, b in zip(static, eager):
            assert torch.equal(a, b)


def test_dropout_graph_replays_draw_fresh_masks():
    q, k, v, dout = _train_step_inputs()
    p = 0.25

    def step():
        out = flash_attn_func(q, k, v, dropout_p=p, causal=False)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
        return out, dq, dk, dv

    graph, static = _capture(step)
    graph.replay()
    first = [t.clone() for t in static]
    graph.replay()
    torch.cuda.synchronize()
    second = [t.clone() for t in static]
    assert not torch.equal(first[0], second[0])  # a new mask per replay
    for t in first + second:
        assert torch.isfinite(t.float()).all()
    # Without dropout the expectation of the output is the plain attention: the mean over replays of
    # the difference stays small relative to a single replay's deviation.
    plain = flash_attn_func(q, k, v).detach().float()
    dev1 = (first[0].float() - plain).abs().mean()
    dev_avg = ((first[0].float() + second[0].float()) / 2 - plain).abs().mean()
    assert dev_avg < dev1


def test_kvcache_decode_step_graph():
    torch.manual_seed(1)
    b, hk, h, d, cap = 3, 2, 8, 128, 512
    k_cache = torch.randn(b, cap, hk, d, device="cuda", dtype=torch.float16)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(b, 1, h, d, device="cuda", dtype=torch.float16)
    k_new = torch.randn(b, 1, hk, d, device="cuda", dtype=torch.float16)
    v_new = torch.randn_like(k_new)
    seqlens = torch.tensor([10, 200, 377], dtype=torch.int32, device="cuda")

    def step():
        return flash_attn_with_kvcache(q, k_cache, v_cache, k=k_new, v=v_new, cache_seqlens=seqlens,
                                       causal=True, num_splits=0)

    k0, v0 = k_cache.clone(), v_cache.clone()
    expected = step().clone()
    graph, static = _capture(step)
    for step_no in range(3):
        seqlens += 1  # the next position: the captured kernels read lengths from device memory
        k_cache.copy_(k0)
        v_cache.copy_(v0)
        graph.replay()
        torch.cuda.synchronize()
        k_cache.copy_(k0)
        v_cache.copy_(v0)
        eager = step()
        assert torch.equal(static, eager), step_no
    assert not torch.equal(static, expected)
