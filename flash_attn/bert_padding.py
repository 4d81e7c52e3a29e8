"""Converting between padded (batch, seqlen, ...) batches and the packed varlen layout.

Same functions, signatures and return values as flash_attn.bert_padding of flash-attn 2.8. The
gather/scatter steps are autograd Functions so gradients flow back to the padded tensors.
"""

import torch
import torch.nn.functional as F


class IndexFirstAxis(torch.autograd.Function):
    """out = input[indices] along dim 0; backward scatters the gradient into zeros."""

    @staticmethod
    def forward(ctx, input, indices):
        ctx.save_for_backward(indices)
        ctx.first_axis_dim = input.shape[0]
        return input[indices]

    @staticmethod
    def backward(ctx, grad_output):
        (indices,) = ctx.saved_tensors
        grad_input = grad_output.new_zeros((ctx.first_axis_dim, *grad_output.shape[1:]))
        grad_input[indices] = grad_output
        return grad_input, None


index_first_axis = IndexFirstAxis.apply


class IndexPutFirstAxis(torch.autograd.Function):
    """out = zeros(first_axis_dim, ...) with out[indices] = values; backward gathers."""

    @staticmethod
    def forward(ctx, values, indices, first_axis_dim):
        ctx.save_for_backward(indices)
        output = values.new_zeros((first_axis_dim, *values.shape[1:]))
        output[indices] = values
        return output

    @staticmethod
    def backward(ctx, grad_output):
        (indices,) = ctx.saved_tensors
        return grad_output[indices], None, None


index_put_first_axis = IndexPutFirstAxis.apply


class IndexFirstAxisResidual(torch.autograd.Function):
    """Like IndexFirstAxis but also returns the input, whose gradient is accumulated too."""

    @staticmethod
    def forward(ctx, input, indices):
        ctx.save_for_backward(indices)
        return input[indices], input.detach()

    @staticmethod
    def backward(ctx, grad_output, grad_residual):
        (indices,) = ctx.saved_tensors
        grad_input = grad_residual.clone()
        grad_input.index_add_(0, indices, grad_output)
        return grad_input, None


index_first_axis_residual = IndexFirstAxisResidual.apply


def _cu_seqlens(seqlens: torch.Tensor) -> torch.Tensor:
    return F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))


def unpad_input(hidden_states, attention_mask, unused_mask=None):
    """hidden_states (batch, seqlen, ...); attention_mask (batch, seqlen), 1 = valid token;
    unused_mask (batch, seqlen), 1 = allocated but unused token (kept in the packed output).

    Returns (hidden (total, ...), indices (total,) into the flattened (batch * seqlen) axis,
    cu_seqlens (batch + 1,) int32, max_seqlen_in_batch (int), seqused (batch,) int32: the number of
    attention_mask tokens of each sequence)."""
    all_masks = (attention_mask + unused_mask) if unused_mask is not None else attention_mask
    seqlens_in_batch = all_masks.sum(dim=-1, dtype=torch.int32)
    used_seqlens_in_batch = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen_in_batch = seqlens_in_batch.max().item()
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return (index_first_axis(flat, indices), indices, _cu_seqlens(seqlens_in_batch), max_seqlen_in_batch,
            used_seqlens_in_batch)


def unpad_input_for_concatenated_sequences(hidden_states, attention_mask_in_length):
    """For batches where each row packs several sequences back to back.

    attention_mask_in_length (batch, seqlen): row b lists the lengths of the sequences packed in
    row b, then zeros, e.g. [2, 3, 0, 0, 0, 0] for two sequences of 2 and 3 tokens. Returns
    (hidden (total, ...), indices, cu_seqlens over all sequences, max_seqlen_in_batch)."""
    row_lengths = attention_mask_in_length.sum(dim=-1)
    seqlen = attention_mask_in_length.shape[-1]
    positions = torch.arange(seqlen, device=attention_mask_in_length.device)
    token_mask = positions.expand(len(row_lengths), seqlen) < row_lengths.unsqueeze(1)
    lengths_flat = attention_mask_in_length.flatten()
    seqlens_in_batch = lengths_flat[torch.nonzero(lengths_flat, as_tuple=False).flatten()]
    indices = torch.nonzero(token_mask.flatten(), as_tuple=False).flatten()
    max_seqlen_in_batch = seqlens_in_batch.max().item()
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return index_first_axis(flat, indices), indices, _cu_seqlens(seqlens_in_batch), max_seqlen_in_batch


def pad_input(hidden_states, indices, batch, seqlen):
    """Inverse of unpad_input: hidden_states (total, ...) -> (batch, seqlen, ...), zeros elsewhere."""
    output = index_put_first_axis(hidden_states, indices, batch * seqlen)
    return output.view(batch, seqlen, *hidden_states.shape[1:])
