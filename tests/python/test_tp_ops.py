"""Tensor-parallel pieces of the fused ops on CPU with torch.distributed (gloo, 2 processes spawned
once): the vocab-parallel cross-entropy, ColumnParallelLinear / RowParallelLinear with and without
sequence_parallel, and ParallelFusedMLP, each against the single-process result."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

WORLD = 2
ROWS, VOCAB, D_IN, D_OUT = 8, 64, 16, 32


def _inputs():
    """The full (unsharded) tensors; every rank and the reference draw the same ones."""
    g = torch.Generator().manual_seed(1234)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t = {
        "logits": r(ROWS * 2, VOCAB) * 2,
        "labels": torch.randint(0, VOCAB, (ROWS * 2,), generator=g),
        "x_col": r(ROWS, D_IN), "w_col": r(D_OUT, D_IN), "b_col": r(D_OUT), "g_col": r(ROWS, D_OUT),
        "x_row": r(ROWS, D_OUT), "w_row": r(D_IN, D_OUT), "b_row": r(D_IN), "g_row": r(ROWS, D_IN),
        "w1": r(D_OUT, D_IN) * 0.3, "b1": r(D_OUT), "w2": r(D_IN, D_OUT) * 0.3, "b2": r(D_IN),
    }
    t["labels"][3] = -100
    return t


CE_CASES = [(0.0, 1.0, 0.0), (0.1, 0.5, 1e-2)]


def _worker(rank, init_file, out_dir):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from flash_attn.ops.fused_dense import ColumnParallelLinear, ParallelFusedMLP, RowParallelLinear
    from flash_attn.ops.triton.cross_entropy import cross_entropy_loss

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    pg = dist.group.WORLD
    t = _inputs()
    res = {}
    v = VOCAB // WORLD
    for i, (smooth, scale, zs) in enumerate(CE_CASES):
        shard = t["logits"][:, rank * v:(rank + 1) * v].clone().requires_grad_(True)
        loss, z = cross_entropy_loss(shard, t["labels"], label_smoothing=smooth, logit_scale=scale,
                                     lse_square_scale=zs, process_group=pg)
        (loss * torch.arange(1, loss.numel() + 1)).sum().backward()
        res[f"ce{i}"] = (loss.detach(), z, shard.grad)
    o, ri = D_OUT // WORLD, ROWS // WORLD
    for sp in (True, False):
        col = ColumnParallelLinear(D_IN, D_OUT, pg, sequence_parallel=sp)
        with torch.no_grad():
            col.weight.copy_(t["w_col"][rank * o:(rank + 1) * o])
            col.bias.copy_(t["b_col"][rank * o:(rank + 1) * o])
        x = (t["x_col"][rank * ri:(rank + 1) * ri] if sp else t["x_col"]).clone().requires_grad_(True)
        out = col(x)
        out.backward(t["g_col"][:, rank * o:(rank + 1) * o])
        res[f"col{sp}"] = (out.detach(), x.grad, col.weight.grad, col.bias.grad)

        row = RowParallelLinear(D_OUT, D_IN, pg, sequence_parallel=sp)
        with torch.no_grad():
            row.weight.copy_(t["w_row"][:, rank * o:(rank + 1) * o])
            if row.bias is not None:
                row.bias.copy_(t["b_row"])
        x = t["x_row"][:, rank * o:(rank + 1) * o].clone().requires_grad_(True)
        out = row(x)
        out.backward(t["g_row"][rank * ri:(rank + 1) * ri] if sp else t["g_row"])
        res[f"row{sp}"] = (out.detach(), x.grad, row.weight.grad, None if row.bias is None else row.bias.grad)

    mlp = ParallelFusedMLP(D_IN, D_OUT, process_group=pg, sequence_parallel=True)
    with torch.no_grad():
        mlp.fc1.weight.copy_(t["w1"][rank * o:(rank + 1) * o])
        mlp.fc1.bias.copy_(t["b1"][rank * o:(rank + 1) * o])
        mlp.fc2.weight.copy_(t["w2"][:, rank * o:(rank + 1) * o])
        if mlp.fc2.bias is not None:
            mlp.fc2.bias.copy_(t["b2"])
    x = t["x_col"][rank * ri:(rank + 1) * ri].clone().requires_grad_(True)
    out = mlp(x)
    out.backward(t["g_row"][rank * ri:(rank + 1) * ri])
    res["mlp"] = (out.detach(), x.grad, mlp.fc1.weight.grad, mlp.fc2.weight.grad)
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tp_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    d = tmp_path_factory.mktemp("tp")
    mp.spawn(_worker, args=(str(d / "init"), str(d)), nprocs=WORLD, join=True)
    return [torch.load(d / f"rank{r}.pt") for r in range(WORLD)]


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", range(len(CE_CASES)))
def test_vocab_parallel_cross_entropy(tp_results, case):
    from flash_attn.ops.triton.cross_entropy import cross_entropy_loss

    t = _inputs()
    smooth, scale, zs = CE_CASES[case]
    logits = t["logits"].clone().requires_grad_(True)
    loss, z = cross_entropy_loss(logits, t["labels"], label_smoothing=smooth, logit_scale=scale, lse_square_scale=zs)
    (loss * torch.arange(1, loss.numel() + 1)).sum().backward()
    v = VOCAB // WORLD
    for rank, res in enumerate(tp_results):
        l_r, z_r, g_r = res[f"ce{case}"]
        close(l_r, loss.detach())
        close(z_r, z)
        close(g_r, logits.grad[:, rank * v:(rank + 1) * v])


@pytest.mark.parametrize("sp", [True, False])
def test_column_parallel_linear(tp_results, sp):
    t = _inputs()
    x = t["x_col"].clone().requires_grad_(True)
    w = t["w_col"].clone().requires_grad_(True)
    b = t["b_col"].clone().requires_grad_(True)
    out = F.linear(x, w, b)
    out.backward(t["g_col"])
    o, ri = D_OUT // WORLD, ROWS // WORLD
    for rank, res in enumerate(tp_results):
        out_r, dx_r, dw_r, db_r = res[f"col{sp}"]
        close(out_r, out.detach()[:, rank * o:(rank + 1) * o])
        close(dx_r, x.grad[rank * ri:(rank + 1) * ri] if sp else x.grad)
        close(dw_r, w.grad[rank * o:(rank + 1) * o])
        close(db_r, b.grad[rank * o:(rank + 1) * o])


@pytest.mark.parametrize("sp", [True, False])
def test_row_parallel_linear(tp_results, sp):
    t = _inputs()
    x = t["x_row"].clone().requires_grad_(True)
    w = t["w_row"].clone().requires_grad_(True)
    b = t["b_row"].clone().requires_grad_(True)
    out = F.linear(x, w, b)
    out.backward(t["g_row"])
    o, ri = D_OUT // WORLD, ROWS // WORLD
    for rank, res in enumerate(tp_results):
        out_r, dx_r, dw_r, db_r = res[f"row{sp}"]
        close(out_r, out.detach()[rank * ri:(rank + 1) * ri] if sp else out.detach())
        close(dx_r, x.grad[:, rank * o:(rank + 1) * o])
        close(dw_r, w.grad[:, rank * o:(rank + 1) * o])
        if rank == 0:
            close(db_r, b.grad)
        else:
            assert db_r is None  # only rank 0 holds the bias


def test_parallel_fused_mlp(tp_results):
    t = _inputs()
    x = t["x_col"].clone().requires_grad_(True)
    w1, w2 = t["w1"].clone().requires_grad_(True), t["w2"].clone().requires_grad_(True)
    out = F.linear(F.gelu(F.linear(x, w1, t["b1"]), approximate="tanh"), w2, t["b2"])
    out.backward(t["g_row"])
    o, ri = D_OUT // WORLD, ROWS // WORLD
    for rank, res in enumerate(tp_results):
        out_r, dx_r, dw1_r, dw2_r = res["mlp"]
        close(out_r, out.detach()[rank * ri:(rank + 1) * ri])
        close(dx_r, x.grad[rank * ri:(rank + 1) * ri])
        close(dw1_r, w1.grad[rank * o:(rank + 1) * o])
        close(dw2_r, w2.grad[:, rank * o:(rank + 1) * o])
