"""Fused cross-entropy (flash-attn 2.8's flash_attn.ops.triton.cross_entropy API) on the C++ kernels
of csrc/ops (one pass over the logits per direction, fp32 statistics, no (rows x vocab) fp32 buffer).

Vocab-parallel: with a process_group each rank holds logits[:, rank * V/P : (rank + 1) * V/P]; every
rank's kernel returns its shard's lse, target logit and sum of logits, which are combined with one
all-gather (lse) and one all-reduce (target, sum); the backward then needs no communication.
"""

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from .. import _common as C
from ... import _C


def _run_forward(logits: Tensor, labels: Tensor, smoothing, logit_scale, lse_square_scale, ignore_index,
                 vocab_start, total_classes, want_loss: bool):
    rows, vocab = logits.shape
    f32 = dict(dtype=torch.float32, device=logits.device)
    lse = torch.empty(rows, **f32)
    loss = torch.empty(rows, **f32) if want_loss else None
    z_loss = torch.empty(rows, **f32) if want_loss else None
    target = None if want_loss else torch.empty(rows, **f32)
    sum_z = None if want_loss else torch.empty(rows, **f32)
    p = _C.CrossEntropyParams()
    C.set_device(p, logits)
    p.dtype = C.dtype_of(logits, "logits")
    p.logits, p.logits_row_stride = logits.data_ptr(), logits.stride(0)
    p.labels = labels.data_ptr()
    p.rows, p.vocab, p.vocab_start, p.total_classes = rows, vocab, vocab_start, total_classes
    p.label_smoothing, p.logit_scale = float(smoothing), float(logit_scale)
    p.lse_square_scale, p.ignore_index = float(lse_square_scale), int(ignore_index)
    p.lse, p.loss, p.z_loss = C.ptr(lse), C.ptr(loss), C.ptr(z_loss)
    p.target, p.sum_z = C.ptr(target), C.ptr(sum_z)
    _C.cross_entropy_fwd(p, C.stream_of(logits))
    return lse, loss, z_loss, target, sum_z


def _combine(lse, target, sum_z, labels, smoothing, lse_square_scale, ignore_index, total_classes):
    """Loss from the global lse and the (global) target logit / logit sum; the same formula as the kernel."""
    z_loss = lse_square_scale * lse.square() if lse_square_scale != 0.0 else torch.zeros_like(lse)
    loss = lse - (1.0 - smoothing) * target - (smoothing / total_classes) * sum_z + z_loss
    ignored = labels == ignore_index
    return loss.masked_fill(ignored, 0.0), z_loss.masked_fill(ignored, 0.0)


class CrossEntropyLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, precomputed_lse=None, smoothing=0.0, logit_scale=1.0, lse_square_scale=0.0,
                ignore_index=-100, inplace_backward=False, process_group=None):
        if logits.dim() != 2:
            raise ValueError(f"logits: expected (batch, vocab), got shape {tuple(logits.shape)}")
        rows, vocab = logits.shape
        if labels.shape != (rows,):
            raise ValueError(f"labels: expected shape ({rows},), got {tuple(labels.shape)}")
        if labels.device != logits.device:
            raise ValueError(f"labels: must be on logits' device ({logits.device}), got {labels.device}")
        world = 1 if process_group is None else dist.get_world_size(process_group)
        rank = 0 if process_group is None else dist.get_rank(process_group)
        total_classes, vocab_start = world * vocab, rank * vocab
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        labels = labels.to(torch.int64).contiguous()
        use_lse = precomputed_lse is not None and world == 1
        if world == 1 and not use_lse:
            lse, loss, z_loss, _, _ = _run_forward(logits, labels, smoothing, logit_scale, lse_square_scale,
                                                   ignore_index, vocab_start, total_classes, True)
        else:
            lse, _, _, target, sum_z = _run_forward(logits, labels, smoothing, logit_scale, lse_square_scale,
                                                    ignore_index, vocab_start, total_classes, False)
            if use_lse:
                lse = precomputed_lse.to(torch.float32).reshape(rows).contiguous()
            if world > 1:
                gathered = [torch.empty_like(lse) for _ in range(world)]
                dist.all_gather(gathered, lse, group=process_group)
                lse = torch.logsumexp(torch.stack(gathered), dim=0)
                both = torch.stack([target, sum_z])
                dist.all_reduce(both, group=process_group)
                target, sum_z = both[0], both[1]
            loss, z_loss = _combine(lse, target, sum_z, labels, smoothing, lse_square_scale, ignore_index,
                                    total_classes)
        ctx.save_for_backward(logits, lse, labels)
        ctx.mark_non_differentiable(z_loss)
        ctx.cfg = (smoothing, logit_scale, lse_square_scale, ignore_index, inplace_backward, vocab_start,
                   total_classes)
        return loss, z_loss

    @staticmethod
    def backward(ctx, grad_loss, grad_z_loss):
        del grad_z_loss  # z_loss is reported for logging only (its gradient flows through loss)
        logits, lse, labels = ctx.saved_tensors
        smoothing, logit_scale, lse_square_scale, ignore_index, inplace, vocab_start, total_classes = ctx.cfg
        rows, vocab = logits.shape
        grad_loss = grad_loss.to(torch.float32)
        dlogits = logits if inplace else torch.empty_like(logits)
        p = _C.CrossEntropyParams()
        C.set_device(p, logits)
        p.dtype = C.dtype_of(logits, "logits")
        p.logits, p.logits_row_stride = logits.data_ptr(), logits.stride(0)
        p.labels = labels.data_ptr()
        p.rows, p.vocab, p.vocab_start, p.total_classes = rows, vocab, vocab_start, total_classes
        p.label_smoothing, p.logit_scale = float(smoothing), float(logit_scale)
        p.lse_square_scale, p.ignore_index = float(lse_square_scale), int(ignore_index)
        p.lse = lse.data_ptr()
        p.dloss, p.dloss_stride = grad_loss.data_ptr(), grad_loss.stride(0) if rows > 0 else 1
        p.dlogits, p.dlogits_row_stride = dlogits.data_ptr(), dlogits.stride(0)
        _C.cross_entropy_bwd(p, C.stream_of(logits))
        return dlogits, None, None, None, None, None, None, None, None


def cross_entropy_loss(
    logits: Tensor,
    labels: Tensor,
    precomputed_lse: Optional[Tensor] = None,
    label_smoothing: float = 0.0,
    logit_scale: float = 1.0,
    lse_square_scale: float = 0.0,
    ignore_index: int = -100,
    inplace_backward: bool = False,
    process_group=None,
) -> Tuple[Tensor, Tensor]:
    """
    Arguments:
        logits: (batch, vocab_size) or, with process_group, this rank's (batch, vocab_size / world) shard
        labels: (batch,) class indices of the full vocabulary
        precomputed_lse: optional (batch,) logsumexp of the scaled logits (used when not split)
        label_smoothing, logit_scale: loss = CE(logit_scale * logits) with label smoothing
        lse_square_scale: adds the z-loss lse_square_scale * lse^2 to every (non-ignored) row
        inplace_backward: write the gradient into logits (saves memory; logits is overwritten)
        process_group: the vocab-parallel group, or None
    Returns:
        losses: (batch,) fp32, 0 where labels == ignore_index; z_losses: (batch,) fp32 (no gradient)
    """
    return CrossEntropyLossFunction.apply(logits, labels, precomputed_lse, label_smoothing, logit_scale,
                                          lse_square_scale, ignore_index, inplace_backward, process_group)
