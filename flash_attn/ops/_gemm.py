"""Row-major linear-layer GEMMs on flash_attn._C.gemm_epilogue (cuBLASLt with fused epilogues), each
with a plain-PyTorch fallback (CPU, fp32, no cuBLASLt, or no cuBLASLt kernel for the epilogue).

cuBLAS is column-major: a row-major (r, c) matrix is the column-major (c, r) matrix, so for
out = x @ W^T (x: (M, K), W: (N, K)) we ask for out^T (N x M) = op(W^T) x^T, i.e. A = W with
trans_a, B = x, m = N, n = M, k = K, and the bias (length m = N) is broadcast along rows of D,
which is exactly the per-feature bias."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _C
from . import _common as C

_WORKSPACE_BYTES = 32 * 1024 * 1024
_workspaces = {}


def _workspace(device) -> Tensor:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    ws = _workspaces.get(idx)
    if ws is None:
        ws = torch.empty(_WORKSPACE_BYTES, dtype=torch.uint8, device=device)
        _workspaces[idx] = ws
    return ws


def fused_available(*tensors) -> bool:
    """cuBLASLt path: CUDA fp16/bf16 tensors of one dtype and a loadable libcublasLt."""
    t0 = tensors[0]
    if t0.device.type != "cuda" or t0.dtype not in (torch.float16, torch.bfloat16):
        return False
    if any(t is not None and (t.dtype != t0.dtype or t.device != t0.device) for t in tensors):
        return False
    return hasattr(_C, "gemm_epilogue") and _C.gemm_epilogue_available()


def _gemm(m, n, k, a, lda, trans_a, b, ldb, trans_b, d, ldd, epilogue, bias=None, aux=None, aux_ld=0,
          beta=0.0) -> bool:
    p = _C.GemmParams()
    p.device_index = d.device.index if d.device.index is not None else torch.cuda.current_device()
    p.dtype = C.DTYPES[d.dtype]
    p.m, p.n, p.k = m, n, k
    p.a, p.lda, p.trans_a = a.data_ptr(), lda, trans_a
    p.b, p.ldb, p.trans_b = b.data_ptr(), ldb, trans_b
    p.d, p.ldd = d.data_ptr(), ldd
    p.beta = float(beta)
    p.epilogue = getattr(_C.Epilogue, epilogue)
    p.bias = C.ptr(bias)
    p.aux, p.aux_ld = C.ptr(aux), aux_ld
    ws = _workspace(d.device)
    p.workspace, p.workspace_bytes = ws.data_ptr(), ws.numel()
    return _C.gemm_epilogue(p, C.stream_of(d))


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def linear_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], activation: str = "none",
               save_pre_act: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """(act(x @ W^T + b), pre-activation if save_pre_act and activation == 'gelu_approx').
    x: (M, K) contiguous; activation: 'none', 'gelu_approx' or 'relu'."""
    M, K = x.shape
    N = weight.shape[0]
    if fused_available(x, weight, bias) and M > 0:
        weight = weight.contiguous()
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
        b = bias if bias is not None else (torch.zeros(N, dtype=x.dtype, device=x.device) if activation != "none"
                                           else None)
        pre = None
        if activation == "gelu_approx" and save_pre_act and N % 8 == 0:
            pre = torch.empty(M, N, dtype=x.dtype, device=x.device)
            epi = "gelu_aux_bias"
        elif activation == "gelu_approx":
            epi = "gelu_bias"
        elif activation == "relu":
            epi = "relu_bias"
        else:
            epi = "bias" if b is not None else "none"
        if activation != "gelu_approx" or not save_pre_act or pre is not None:
            if _gemm(N, M, K, weight, K, True, x, x.stride(0), False, out, N, epi, bias=b, aux=pre, aux_ld=N):
                return out, pre
    pre = F.linear(x, weight, bias)
    if activation == "gelu_approx":
        return gelu_tanh(pre), (pre if save_pre_act else None)
    if activation == "relu":
        return F.relu(pre), None
    return pre, None


def linear_dgrad(dout: Tensor, weight: Tensor, pre_act: Optional[Tensor] = None,
                 accumulate: Optional[Tensor] = None, want_bias_grad: bool = False):
    """dx = dout @ W (+ accumulate). With pre_act (gelu_approx): dx = (dout @ W) * gelu'(pre_act) and, if
    want_bias_grad, also the column sums of that product. Returns (dx, bias_grad or None)."""
    M, N = dout.shape
    K = weight.shape[1]
    if fused_available(dout, weight, pre_act, accumulate) and M > 0:
        weight = weight.contiguous()
        dx = accumulate.clone() if accumulate is not None else torch.empty(M, K, dtype=dout.dtype, device=dout.device)
        beta = 1.0 if accumulate is not None else 0.0
        if pre_act is None:
            if _gemm(K, M, N, weight, K, False, dout, N, False, dx, K, "none", beta=beta):
                return dx, None
        elif accumulate is None and K % 8 == 0:
            db = torch.empty(K, dtype=dout.dtype, device=dout.device)
            if _gemm(K, M, N, weight, K, False, dout, N, False, dx, K, "dgelu_bgrad", bias=db, aux=pre_act,
                     aux_ld=K):
                return dx, (db if want_bias_grad else None)
    dx = dout @ weight
    if pre_act is not None:
        with torch.enable_grad():
            pre = pre_act.detach().requires_grad_(True)
            act = gelu_tanh(pre)
        (dx,) = torch.autograd.grad(act, pre, dx)
    if accumulate is not None:
        dx = dx + accumulate
    db = dx.sum(0) if (pre_act is not None and want_bias_grad) else None
    return dx, db


def linear_wgrad(x: Tensor, dout: Tensor, want_bias_grad: bool):
    """(dW = dout^T @ x, db = dout.sum(0) or None)."""
    M, K = x.shape
    N = dout.shape[1]
    if fused_available(x, dout) and M > 0:
        dw = torch.empty(N, K, dtype=x.dtype, device=x.device)
        if want_bias_grad:
            db = torch.empty(N, dtype=x.dtype, device=x.device)
            if _gemm(K, N, M, x, x.stride(0), False, dout, N, True, dw, K, "bgradb", bias=db):
                return dw, db
        elif _gemm(K, N, M, x, x.stride(0), False, dout, N, True, dw, K, "none"):
            return dw, None
    dw = dout.t() @ x
    return dw, (dout.sum(0) if want_bias_grad else None)
