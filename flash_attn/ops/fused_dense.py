"""flash_attn.ops.fused_dense (flash-attn 2.8 API): FusedDense, FusedMLP, ColumnParallelLinear,
RowParallelLinear, ParallelFusedMLP, fused_dense_func, fused_mlp_func.

On CUDA fp16/bf16 the GEMMs go through cuBLASLt with fused epilogues (flash_attn/ops/_gemm.py):
bias, GELU(tanh) with the pre-activation saved as aux, dGELU + bias-grad, and the bias gradient of
the weight-gradient GEMM. Elsewhere (CPU, fp32) the same autograd Functions run plain PyTorch GEMMs,
so tensor / sequence parallelism behaves the same on every device.

Tensor parallelism (process_group): with sequence_parallel the input is all-gathered along dim 0
before the GEMM and the input gradient reduce-scattered; without it the input is replicated and its
gradient all-reduced. Row-parallel outputs are partial sums: reduce-scattered (sequence_parallel)
or all-reduced by the module."""

from typing import Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import _distributed as D
from ._gemm import gelu_tanh, linear_dgrad, linear_fwd, linear_wgrad


def _autocast_input(x: Tensor) -> Tensor:
    """Under CUDA autocast the GEMMs run in the autocast dtype (as flash-attn's do)."""
    if x.is_cuda and torch.is_autocast_enabled():
        get = getattr(torch, "get_autocast_dtype", None)
        return x.to(dtype=get("cuda") if get is not None else torch.get_autocast_gpu_dtype())
    return x


def _gather_input(x2d: Tensor, process_group, sequence_parallel: bool) -> Tensor:
    if process_group is not None and sequence_parallel:
        return D.all_gather_raw(x2d, process_group)
    return x2d


def _reduce_input_grad(grad: Tensor, process_group, sequence_parallel: bool) -> Tensor:
    if process_group is None:
        return grad
    return D.reduce_scatter_raw(grad, process_group) if sequence_parallel else D.all_reduce_raw(grad, process_group)


class FusedDenseFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, return_residual=False, process_group=None, sequence_parallel=True):
        x = _autocast_input(x).contiguous()
        weight = weight.to(x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
        batch_shape = x.shape[:-1]
        x2d = x.reshape(-1, x.shape[-1])
        total_x = _gather_input(x2d, process_group, sequence_parallel)
        out, _ = linear_fwd(total_x, weight, bias)
        ctx.compute_weight_gradient = weight.requires_grad
        ctx.return_residual = return_residual
        ctx.process_group = process_group
        ctx.sequence_parallel = sequence_parallel
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x2d if weight.requires_grad else None, weight)
        ctx.x_shape = x.shape
        # Sequence-parallel: dim 0 grew by the world size (the gather is along dim 0).
        out = out.reshape(-1, *batch_shape[1:], weight.shape[0])
        return out if not return_residual else (out, x)

    @staticmethod
    def backward(ctx, grad_output, *args):
        x2d, weight = ctx.saved_tensors
        pg, sp = ctx.process_group, ctx.sequence_parallel
        dout = grad_output.contiguous().reshape(-1, grad_output.shape[-1])
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            acc = None
            if ctx.return_residual:
                (grad_res,) = args
                acc = grad_res.contiguous().reshape(-1, weight.shape[1]) if grad_res is not None else None
            if pg is None or acc is None:
                grad_input, _ = linear_dgrad(dout, weight, accumulate=acc)
                grad_input = _reduce_input_grad(grad_input, pg, sp)
            else:
                # The residual's gradient is already this rank's (not a partial sum): add after the reduction.
                grad_input, _ = linear_dgrad(dout, weight)
                grad_input = _reduce_input_grad(grad_input, pg, sp) + acc
        if ctx.needs_input_grad[1]:
            total_x = _gather_input(x2d, pg, sp)
            grad_weight, grad_bias = linear_wgrad(total_x, dout, ctx.has_bias and ctx.needs_input_grad[2])
        if grad_input is not None:
            grad_input = grad_input.reshape(ctx.x_shape)
        return grad_input, grad_weight, grad_bias, None, None, None


def fused_dense_func(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, return_residual: bool = False,
                     process_group=None, sequence_parallel: bool = True):
    return FusedDenseFunc.apply(x, weight, bias, return_residual, process_group, sequence_parallel)


class FusedDense(nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, return_residual: bool = False,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.return_residual = return_residual

    def forward(self, x, process_group=None):
        """If process_group is not None, we're doing Tensor Parallel with sequence parallelism:
        we do an all_gather of x before doing the matmul."""
        return fused_dense_func(x, self.weight, self.bias, return_residual=self.return_residual,
                                process_group=process_group)


def _local_features(features: int, multiple_of: int, process_group) -> int:
    world = dist.get_world_size(process_group)
    rank = dist.get_rank(process_group)
    if features % multiple_of:
        raise ValueError(f"features ({features}) must be a multiple of {multiple_of}")
    multiple = features // multiple_of
    div, mod = divmod(multiple, world)
    return (div + int(rank < mod)) * multiple_of


class ColumnParallelLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, process_group, bias: bool = True,
                 sequence_parallel=True, multiple_of=1, device=None, dtype=None) -> None:
        local_out = _local_features(out_features, multiple_of, process_group)
        super().__init__(in_features, local_out, bias=bias, device=device, dtype=dtype)
        self.process_group = process_group
        self.sequence_parallel = sequence_parallel

    def forward(self, x):
        # sequence_parallel: x is this rank's slice of the sequence (all-gathered here); otherwise x is
        # already the full input on every rank.
        return fused_dense_func(x, self.weight, self.bias, process_group=self.process_group,
                                sequence_parallel=self.sequence_parallel)


class RowParallelLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, process_group, bias: bool = True,
                 sequence_parallel=True, multiple_of=1, device=None, dtype=None) -> None:
        local_in = _local_features(in_features, multiple_of, process_group)
        rank = dist.get_rank(process_group)
        # Only rank 0 holds the bias, so it is added once to the reduced output.
        super().__init__(local_in, out_features, bias=bias and rank == 0, device=device, dtype=dtype)
        self.process_group = process_group
        self.sequence_parallel = sequence_parallel

    def forward(self, x):
        """We're doing Tensor Parallel with sequence parallelism: we do the matmul and then
        a reduce_scatter of the result."""
        out = fused_dense_func(x, self.weight, self.bias)
        reduce_fn = D.reduce_scatter if self.sequence_parallel else D.all_reduce
        return reduce_fn(out, self.process_group)


_ACTIVATIONS = ("gelu_approx", "relu", "sqrelu")


def _act_fwd(pre: Tensor, activation: str) -> Tensor:
    if activation == "gelu_approx":
        return gelu_tanh(pre)
    if activation == "relu":
        return F.relu(pre)
    return F.relu(pre).square()


class FusedMLPFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight1, bias1, weight2, bias2, activation="gelu_approx", save_pre_act=True,
                return_residual=False, checkpoint_lvl=0, heuristic=0, process_group=None, sequence_parallel=True):
        """checkpoint_lvl: 0 saves the pre-activation and the activation; 1 saves the pre-activation and
        recomputes the activation; 2 saves neither and recomputes fc1 in the backward."""
        if activation not in _ACTIVATIONS:
            raise NotImplementedError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
        if checkpoint_lvl not in (0, 1, 2):
            raise ValueError(f"checkpoint_lvl must be 0, 1 or 2, got {checkpoint_lvl}")
        if not save_pre_act:
            checkpoint_lvl = 0
        x = _autocast_input(x).contiguous()
        weight1, weight2 = weight1.to(x.dtype), weight2.to(x.dtype)
        bias1 = bias1.to(x.dtype) if bias1 is not None else None
        bias2 = bias2.to(x.dtype) if bias2 is not None else None
        batch_shape = x.shape[:-1]
        x2d = x.reshape(-1, x.shape[-1])
        total_x = _gather_input(x2d, process_group, sequence_parallel)
        act, pre = FusedMLPFunc._fc1(total_x, weight1, bias1, activation, save_pre_act)
        out, _ = linear_fwd(act, weight2, bias2)
        ctx.cfg = (activation, checkpoint_lvl, return_residual, process_group, sequence_parallel)
        ctx.has_bias = (bias1 is not None, bias2 is not None)
        if save_pre_act:
            if checkpoint_lvl == 0:
                ctx.save_for_backward(x2d, weight1, bias1, weight2, pre, act)
            elif checkpoint_lvl == 1:
                ctx.save_for_backward(x2d, weight1, bias1, weight2, pre, None)
            else:
                ctx.save_for_backward(x2d, weight1, bias1, weight2, None, None)
        ctx.x_shape = x.shape
        out = out.reshape(-1, *batch_shape[1:], weight2.shape[0])  # dim 0 grew by the gather, if any
        return out if not return_residual else (out, x)

    @staticmethod
    def _fc1(total_x, weight1, bias1, activation, save_pre_act):
        """(activation output, what the backward needs to differentiate the activation)."""
        if activation == "gelu_approx":
            return linear_fwd(total_x, weight1, bias1, "gelu_approx", save_pre_act)
        if activation == "relu":
            act, _ = linear_fwd(total_x, weight1, bias1, "relu")
            return act, act  # relu'(pre) = (act > 0)
        pre, _ = linear_fwd(total_x, weight1, bias1)
        return _act_fwd(pre, activation), pre

    @staticmethod
    def backward(ctx, grad_output, *args):
        activation, checkpoint_lvl, return_residual, pg, sp = ctx.cfg
        x2d, weight1, bias1, weight2, pre, act = ctx.saved_tensors
        total_x = _gather_input(x2d, pg, sp)
        if checkpoint_lvl == 2 or pre is None:
            act, pre = FusedMLPFunc._fc1(total_x, weight1, bias1, activation, True)
        elif act is None:
            act = pre if activation == "relu" else _act_fwd(pre, activation)
        dout = grad_output.contiguous().reshape(-1, grad_output.shape[-1])
        has_b1, has_b2 = ctx.has_bias
        dw2, db2 = linear_wgrad(act, dout, has_b2 and ctx.needs_input_grad[4])
        if activation == "gelu_approx":
            dpre, db1 = linear_dgrad(dout, weight2, pre_act=pre, want_bias_grad=has_b1)
        else:
            dact, _ = linear_dgrad(dout, weight2)
            dpre = dact * (pre > 0).to(dact.dtype) if activation == "relu" else dact * 2 * F.relu(pre)
            db1 = dpre.sum(0) if has_b1 else None
        if not ctx.needs_input_grad[2]:
            db1 = None
        dw1, _ = linear_wgrad(total_x, dpre, False)
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad_input, _ = linear_dgrad(dpre, weight1)
            grad_input = _reduce_input_grad(grad_input, pg, sp)
            if return_residual:
                (grad_res,) = args
                if grad_res is not None:
                    grad_input = grad_input + grad_res.contiguous().reshape(grad_input.shape)
            grad_input = grad_input.reshape(ctx.x_shape)
        return grad_input, dw1, db1, dw2, db2, None, None, None, None, None, None, None


def fused_mlp_func(x: Tensor, weight1: Tensor, weight2: Tensor, bias1: Optional[Tensor] = None,
                   bias2: Optional[Tensor] = None, activation: str = "gelu_approx", save_pre_act: bool = True,
                   return_residual: bool = False, checkpoint_lvl: int = 0, heuristic: int = 0,
                   process_group=None, sequence_parallel: bool = True):
    if activation not in _ACTIVATIONS:
        raise NotImplementedError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    return FusedMLPFunc.apply(x, weight1, bias1, weight2, bias2, activation, save_pre_act, return_residual,
                              checkpoint_lvl, heuristic, process_group, sequence_parallel)


class FusedMLP(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, bias1=True, bias2=True,
                 activation="gelu_approx", return_residual=False, checkpoint_lvl=0, heuristic="auto",
                 device=None, dtype=None):
        """checkpoint_lvl (increasing lvl means slower but more memory saving):
            0: no recomputation in the bwd
            1: recompute gelu_out in the bwd
            2: recompute pre_act and gelu_out in the bwd
        heuristic: accepted for compatibility (cuBLASLt picks the algorithm)."""
        if activation not in _ACTIVATIONS:
            raise NotImplementedError(f"activation must be one of {_ACTIVATIONS}")
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features * 4
        self.activation = activation
        self.return_residual = return_residual
        self.checkpoint_lvl = checkpoint_lvl
        self.heuristic = heuristic
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias1, **factory_kwargs)
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias2, **factory_kwargs)

    def forward(self, x, process_group=None):
        out = fused_mlp_func(x, self.fc1.weight, self.fc2.weight, self.fc1.bias, self.fc2.bias,
                             activation=self.activation, save_pre_act=self.training,
                             return_residual=self.return_residual, checkpoint_lvl=self.checkpoint_lvl,
                             process_group=process_group)
        if self.return_residual:
            out, x = out
        if process_group is not None:
            out = D.reduce_scatter(out, process_group)
        return out if not self.return_residual else (out, x)


class ParallelFusedMLP(nn.Module):
    def __init__(self, in_features, hidden_features, out_features=None, activation="gelu_approx",
                 process_group=None, bias1=True, bias2=True, sequence_parallel=True, checkpoint_lvl=0,
                 heuristic="auto", device=None, dtype=None):
        """process_group is required. fc1 is column-parallel, fc2 row-parallel (bias2 on rank 0 only)."""
        if activation not in _ACTIVATIONS:
            raise NotImplementedError(f"activation must be one of {_ACTIVATIONS}")
        assert process_group is not None, "ParallelFusedMLP requires a process_group"
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.activation = activation
        self.process_group = process_group
        self.sequence_parallel = sequence_parallel
        self.checkpoint_lvl = checkpoint_lvl
        self.heuristic = heuristic
        self.fc1 = ColumnParallelLinear(in_features, hidden_features, process_group, bias=bias1, **factory_kwargs)
        self.fc2 = RowParallelLinear(hidden_features, out_features or in_features, process_group, bias=bias2,
                                     **factory_kwargs)

    def forward(self, x):
        out = fused_mlp_func(x, self.fc1.weight, self.fc2.weight, self.fc1.bias, self.fc2.bias,
                             activation=self.activation, save_pre_act=self.training,
                             checkpoint_lvl=self.checkpoint_lvl, process_group=self.process_group,
                             sequence_parallel=self.sequence_parallel)
        reduce_fn = D.reduce_scatter if self.sequence_parallel else D.all_reduce
        return reduce_fn(out, self.process_group)
