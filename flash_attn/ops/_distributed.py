"""Autograd-aware collectives for tensor / sequence parallelism (flash-attn keeps these in
flash_attn.utils.distributed): all-gather along dim 0, reduce-scatter along dim 0, all-reduce.
They work on any torch.distributed backend; where gloo lacks a collective (reduce_scatter,
the *_into_tensor forms) a list-based equivalent stands in."""

import torch
import torch.distributed as dist
from torch import Tensor


def _world(group) -> int:
    return dist.get_world_size(group)


def all_gather_raw(x: Tensor, group) -> Tensor:
    """Concatenation of every rank's x along dim 0."""
    world = _world(group)
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x, group=group)
    return torch.cat(parts, dim=0)


def reduce_scatter_raw(x: Tensor, group) -> Tensor:
    """This rank's dim-0 slice of the sum of every rank's x."""
    world = _world(group)
    if world == 1:
        return x
    x = x.contiguous()
    if x.shape[0] % world != 0:
        raise ValueError(f"reduce_scatter: dim 0 ({x.shape[0]}) must be divisible by the world size ({world})")
    rank = dist.get_rank(group)
    if dist.get_backend(group) == "nccl":
        out = torch.empty((x.shape[0] // world, *x.shape[1:]), dtype=x.dtype, device=x.device)
        dist.reduce_scatter_tensor(out, x, group=group)
        return out
    total = x.clone()
    dist.all_reduce(total, group=group)
    return total.chunk(world, dim=0)[rank].contiguous()


def all_reduce_raw(x: Tensor, group) -> Tensor:
    if _world(group) == 1:
        return x
    x = x.contiguous().clone()
    dist.all_reduce(x, group=group)
    return x


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return all_gather_raw(x, group)

    @staticmethod
    def backward(ctx, grad):
        return reduce_scatter_raw(grad, ctx.group), None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return reduce_scatter_raw(x, group)

    @staticmethod
    def backward(ctx, grad):
        return all_gather_raw(grad, ctx.group), None


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return all_reduce_raw(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def all_gather(x: Tensor, group) -> Tensor:
    return _AllGather.apply(x, group)


def reduce_scatter(x: Tensor, group) -> Tensor:
    return _ReduceScatter.apply(x, group)


def all_reduce(x: Tensor, group) -> Tensor:
    return _AllReduce.apply(x, group)


class _CopyToRegion(torch.autograd.Function):
    """Identity forward, all-reduce backward: the input of a column-parallel layer whose input is
    replicated (not sequence-parallel)."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return all_reduce_raw(grad, ctx.group), None


def copy_to_region(x: Tensor, group) -> Tensor:
    return _CopyToRegion.apply(x, group)
