"""The debug mode FLASH_ATTN_CHECK_INDICES=1 on CUDA: valid calls give the same results as without it,
and raw C++ params whose pointers are not memory of the tensors' device are refused (naming the field).
The bad-value cases themselves are in test_validation_inputs.py ("host" and "debug" cases)."""

import pytest
import torch

from flash_attn import _C, flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache
from flash_attn import _backend as B

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _run_all():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 33, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    out = flash_attn_func(q, k, v, causal=True, dropout_p=0.1)
    grads = torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    cu = torch.tensor([0, 10, 10, 33], dtype=torch.int32, device="cuda")
    qv = q.detach().reshape(66, 4, 64)[:33]
    out_v = flash_attn_varlen_func(qv, qv, qv, cu, cu, 23, 23, causal=True)
    kc = torch.randn(4, 16, 4, 64, device="cuda", dtype=torch.bfloat16)
    table = torch.tensor([[3, 1], [0, 2]], dtype=torch.int32, device="cuda")
    out_k = flash_attn_with_kvcache(q.detach()[:, :1], kc, kc.clone(), cache_seqlens=torch.tensor(
        [20, 7], dtype=torch.int32, device="cuda"), block_table=table)
    return (out, *grads, out_v, out_k)


def test_debug_mode_does_not_change_results(monkeypatch):
    monkeypatch.delenv("FLASH_ATTN_CHECK_INDICES", raising=False)
    plain = _run_all()
    monkeypatch.setenv("FLASH_ATTN_CHECK_INDICES", "1")
    debug = _run_all()
    for a, b in zip(plain, debug):
        assert torch.equal(a, b)


def test_debug_mode_refuses_host_pointer_in_cuda_params(monkeypatch):
    q = torch.randn(1, 8, 2, 64, device="cuda", dtype=torch.float16)
    k_host = torch.randn(1, 8, 2, 64, dtype=torch.float16)
    out = torch.empty_like(q)
    lse = torch.empty(1, 2, 8, device="cuda", dtype=torch.float32)
    p = _C.FwdParams()
    B.init_params(p, q, 0)
    B.set_qkv(p, q, q, q)
    B.set_out_lse(p, out, lse)
    p.batch, p.seqlen_q, p.seqlen_k, p.softmax_scale = 1, 8, 8, 0.125
    p.k = k_host.data_ptr()  # a host pointer in CUDA params: only the debug mode can see it
    monkeypatch.setenv("FLASH_ATTN_CHECK_INDICES", "1")
    with pytest.raises(ValueError, match=r"^k: .*device"):
        _C.fwd(p, B.stream_of(q))
