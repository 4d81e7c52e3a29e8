"""Glue between torch tensors and the raw-pointer binding flash_attn._C.

Holds the process-wide state of the package (requested CUDA path, the implementation the last
eager call ran) and the small helpers that fill parameter structs from tensors. Nothing here
validates deeply: the C++ API is the source of truth and raises ValueError naming the argument.
"""

import os
from typing import Optional

import torch

from . import _C

_DTYPES = {
    torch.float32: _C.DType.float32,
    torch.float16: _C.DType.float16,
    torch.bfloat16: _C.DType.bfloat16,
}
_CUDA_PATHS = {"auto": 0, "sm80": 1, "sm90": 2}
_CUDA_PATH_ENUMS = (_C.CudaPath.auto, _C.CudaPath.sm80, _C.CudaPath.sm90)
_IMPL_NAMES = {_C.Impl.cpu: "cpu", _C.Impl.sm80: "sm80", _C.Impl.sm90: "sm90"}

_state = {"cuda_path": 0, "last_impl": None}


def set_cuda_path(path: str = "auto") -> None:
    """Choose the CUDA implementation: "auto" (fastest supported), "sm80" or "sm90"."""
    if path not in _CUDA_PATHS:
        raise ValueError(f"cuda_path must be one of {sorted(_CUDA_PATHS)}, got {path!r}")
    _state["cuda_path"] = _CUDA_PATHS[path]


def get_cuda_path() -> int:
    return _state["cuda_path"]


def last_impl() -> Optional[str]:
    """The implementation ("cpu", "sm80" or "sm90") that the last eager call ran."""
    return _state["last_impl"]


def record_impl(impl) -> None:
    _state["last_impl"] = _IMPL_NAMES[impl]


def built_with_cuda() -> bool:
    return _C.built_with_cuda()


set_cuda_path(os.environ.get("FLASH_ATTN_CUDA_PATH", "auto") or "auto")


# ---- parameter filling ------------------------------------------------------------------------


def init_params(p, q: torch.Tensor, cuda_path: int) -> None:
    """Placement and dtype, taken from q (every tensor must share them; C++ re-checks)."""
    dtype = _DTYPES.get(q.dtype)
    if dtype is None:
        raise TypeError(f"q: dtype {q.dtype} is not supported (use float16, bfloat16; float32 on CPU)")
    p.dtype = dtype
    if q.device.type == "cuda":
        p.device = _C.Device.cuda
        p.device_index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    elif q.device.type == "cpu":
        p.device = _C.Device.cpu
    else:
        raise ValueError(f"q: device {q.device} is not supported (cpu or cuda)")
    p.cuda_path = _CUDA_PATH_ENUMS[cuda_path]


def stream_of(t: torch.Tensor) -> int:
    """The raw cudaStream_t of torch's current stream for t's device (0 on the CPU)."""
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def strides3(t: torch.Tensor):
    """(batch, row, head) element strides of a (b, s, h, d) or varlen (total, h, d) tensor."""
    s = t.stride()
    if t.dim() == 4:
        return s[0], s[1], s[2]
    return 0, s[0], s[1]


def set_masks(p, softmax_scale, causal, window_left, window_right, softcap, alibi_slopes) -> None:
    p.softmax_scale = softmax_scale
    p.causal = causal
    p.window_left = window_left
    p.window_right = window_right
    p.softcap = softcap
    if alibi_slopes is not None:
        p.alibi_slopes = alibi_slopes.data_ptr()
        p.alibi_batch_stride = alibi_slopes.stride(0) if alibi_slopes.dim() == 2 else 0


def set_qkv(p, q, k, v) -> None:
    p.q = q.data_ptr()
    p.q_batch_stride, p.q_row_stride, p.q_head_stride = strides3(q)
    p.k = k.data_ptr()
    p.k_batch_stride, p.k_row_stride, p.k_head_stride = strides3(k)
    p.v = v.data_ptr()
    p.v_batch_stride, p.v_row_stride, p.v_head_stride = strides3(v)
    p.nheads = q.shape[-2]
    p.nheads_k = k.shape[-2]
    p.head_dim = q.shape[-1]


def set_out_lse(p, out, lse) -> None:
    p.out = out.data_ptr()
    p.out_batch_stride, p.out_row_stride, p.out_head_stride = strides3(out)
    p.softmax_lse = lse.data_ptr()
    if lse.dim() == 3:  # (b, h, s)
        p.lse_batch_stride, p.lse_head_stride = lse.stride(0), lse.stride(1)
    else:  # varlen (h, total_q)
        p.lse_batch_stride, p.lse_head_stride = 0, lse.stride(0)


def set_grads(p, dout, dq, dk, dv) -> None:
    p.dout = dout.data_ptr()
    p.dout_batch_stride, p.dout_row_stride, p.dout_head_stride = strides3(dout)
    p.dq = dq.data_ptr()
    p.dq_batch_stride, p.dq_row_stride, p.dq_head_stride = strides3(dq)
    p.dk = dk.data_ptr()
    p.dk_batch_stride, p.dk_row_stride, p.dk_head_stride = strides3(dk)
    p.dv = dv.data_ptr()
    p.dv_batch_stride, p.dv_row_stride, p.dv_head_stride = strides3(dv)


def set_probs(p, probs) -> None:
    p.attn_probs = probs.data_ptr()
    p.probs_batch_stride, p.probs_head_stride, p.probs_row_stride = probs.stride()[:3]


def workspace_for(nbytes: int, device: torch.device) -> Optional[torch.Tensor]:
    # The tensor must stay referenced until the call returns; on CUDA torch's caching allocator
    # is stream-ordered, so freeing it right after the (asynchronous) launch is safe.
    if nbytes == 0:
        return None
    return torch.empty(nbytes, dtype=torch.uint8, device=device)


def new_rng_state(device: torch.device) -> torch.Tensor:
    # Drawn from torch's generator so torch.manual_seed makes dropout reproducible and CUDA-graph
    # replays (which replay the generator's philox offsets) draw fresh masks.
    return torch.randint(-(2**63), 2**63 - 1, (2,), dtype=torch.int64, device=device)
