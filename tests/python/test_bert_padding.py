"""bert_padding: unpad/pad round trips, index helpers and their gradients, and the end-to-end
"unpad -> varlen attention -> pad" equivalence with padded attention."""

import pytest
import torch

from flash_attn import flash_attn_func, flash_attn_varlen_func
from flash_attn.bert_padding import (index_first_axis, index_put_first_axis, pad_input, unpad_input,
                                     unpad_input_for_concatenated_sequences)


def _mask(lengths, seqlen, device):
    return (torch.arange(seqlen, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]).long()


@pytest.mark.parametrize("lengths", [[5, 0, 8, 1], [8, 8, 8, 8], [3, 7, 2, 6]], ids=["edge", "full", "mixed"])
def test_unpad_pad_round_trip(device, lengths):
    batch, seqlen = 4, 8
    x = torch.randn(batch, seqlen, 3, 5, device=device, requires_grad=True)
    mask = _mask(lengths, seqlen, device)
    hidden, indices, cu, max_len, used = unpad_input(x, mask)
    assert hidden.shape == (sum(lengths), 3, 5)
    assert cu.dtype == torch.int32 and cu.tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    assert max_len == max(lengths) and isinstance(max_len, int)
    assert used.tolist() == lengths
    back = pad_input(hidden, indices, batch, seqlen)
    expected = x * mask[:, :, None, None]
    assert torch.equal(back, expected)
    g = torch.randn_like(back)
    (gx,) = torch.autograd.grad(back, x, g)
    assert torch.equal(gx, g * mask[:, :, None, None])


def test_unused_mask(device):
    x = torch.randn(2, 6, 4, device=device)
    mask = _mask([2, 3], 6, device)
    unused = torch.zeros_like(mask)
    unused[0, 2] = 1  # one allocated-but-unused token in sequence 0
    hidden, indices, cu, max_len, used = unpad_input(x, mask, unused)
    assert cu.tolist() == [0, 3, 6] and used.tolist() == [2, 3] and max_len == 3
    assert torch.equal(hidden[:3], x[0, :3])


def test_index_helpers_grad(device):
    x = torch.randn(10, 3, device=device, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([7, 2, 5], device=device)
    assert torch.autograd.gradcheck(lambda t: index_first_axis(t, idx), (x,))
    y = torch.randn(3, 3, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: index_put_first_axis(t, idx, 10), (y,))


def test_unpad_concatenated_sequences(device):
    x = torch.randn(2, 6, 4, device=device)
    lens = torch.tensor([[2, 3, 0, 0, 0, 0], [4, 0, 0, 0, 0, 0]], device=device)
    hidden, indices, cu, max_len = unpad_input_for_concatenated_sequences(x, lens)
    assert cu.tolist() == [0, 2, 5, 9] and max_len == 4
    assert indices.tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert torch.equal(hidden, torch.cat([x[0, :5], x[1, :4]]))


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_via_bert_padding_matches_padded(device, causal):
    """Unpadded varlen attention equals per-sequence attention of the unpadded rows."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    batch, seqlen, h, d = 3, 12, 2, 32
    lengths = [12, 5, 9]
    mask = _mask(lengths, seqlen, device)
    q, k, v = (torch.randn(batch, seqlen, h, d, dtype=dtype, device=device) for _ in range(3))
    qu, idx, cu, max_len, _ = unpad_input(q, mask)
    ku, _, _, _, _ = unpad_input(k, mask)
    vu, _, _, _, _ = unpad_input(v, mask)
    out = pad_input(flash_attn_varlen_func(qu, ku, vu, cu, cu, max_len, max_len, causal=causal), idx, batch, seqlen)
    for b, n in enumerate(lengths):
        ref = flash_attn_func(q[b:b + 1, :n], k[b:b + 1, :n], v[b:b + 1, :n], causal=causal)
        torch.testing.assert_close(out[b:b + 1, :n], ref, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=0)
        assert torch.all(out[b, n:] == 0)
