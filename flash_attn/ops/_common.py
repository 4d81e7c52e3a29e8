"""Glue shared by the fused ops (flash_attn.ops.*, flash_attn.losses.*): tensor placement, dtype
mapping and the random seed of a dropout mask, for the raw-pointer binding in flash_attn._C."""

from typing import Tuple

import torch

from .. import _C

DTYPES = {
    torch.float32: _C.DType.float32,
    torch.float16: _C.DType.float16,
    torch.bfloat16: _C.DType.bfloat16,
}


def has_kernels() -> bool:
    """True when the loaded extension carries the fused-op bindings (csrc/bindings/bind_ops.cpp)."""
    return hasattr(_C, "norm_fwd") and hasattr(_C, "cross_entropy_fwd")


def dtype_of(t: torch.Tensor, name: str):
    if t.dtype not in DTYPES:
        raise TypeError(f"{name}: dtype {t.dtype} is not supported (float32, float16, bfloat16)")
    return DTYPES[t.dtype]


def set_device(p, t: torch.Tensor) -> None:
    """device / device_index of a params struct, from t."""
    if t.device.type == "cuda":
        p.device = _C.Device.cuda
        p.device_index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    elif t.device.type == "cpu":
        p.device = _C.Device.cpu
    else:
        raise ValueError(f"device {t.device} is not supported (cpu or cuda)")


def stream_of(t: torch.Tensor) -> int:
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


def rows_2d(t: torch.Tensor) -> torch.Tensor:
    """(rows, last) view with a unit last-dim stride (a copy only when needed)."""
    t = t.reshape(-1, t.shape[-1])
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t


def new_seed_offset() -> Tuple[int, int]:
    """A Philox (seed, offset) drawn from torch's default CPU generator, so torch.manual_seed makes
    the dropout masks reproducible (they do not depend on the device)."""
    seed, offset = torch.randint(0, 2**62, (2,), dtype=torch.int64).tolist()
    return seed, offset
