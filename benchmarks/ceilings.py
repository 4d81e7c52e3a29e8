"""The two hardware ceilings every attention number is read against (BENCH.md "ceilings"):
dense bf16 matmul throughput and device-memory copy bandwidth, measured with the same timer."""
import torch

from results_io import log, round_sig
from timing import time_fn


def matmul_tflops(device, n, dtype=torch.bfloat16):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    timing = time_fn(lambda _: torch.matmul(a, b, out=c), [None], device,
                     target_ms=500.0 if device.type == "cuda" else 3000.0)
    return 2.0 * n ** 3 / (timing.ms * 1e-3) / 1e12


def copy_tbps(device, nbytes):
    """Device-to-device copy; bandwidth counts the read and the write (2 x nbytes per copy)."""
    src = torch.randn(nbytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    timing = time_fn(lambda _: dst.copy_(src), [None], device,
                     target_ms=500.0 if device.type == "cuda" else 2000.0)
    return 2.0 * src.numel() * 4 / (timing.ms * 1e-3) / 1e12


def measure_ceilings(device):
    """GPU: 8192^3 bf16 matmul and a 2 GiB copy. CPU: a 1024^3 fp32 matmul (CPUs without bf16
    units run bf16 matmul far below their fp32 peak) and a 256 MiB copy, sizes recorded alongside."""
    on_gpu = device.type == "cuda"
    n = 8192 if on_gpu else 1024
    nbytes = (2 << 30) if on_gpu else (256 << 20)
    ceilings = {}
    try:
        if on_gpu:
            ceilings["matmul_bf16_tflops"] = round_sig(matmul_tflops(device, n))
        else:
            ceilings["matmul_fp32_tflops"] = round_sig(matmul_tflops(device, n, torch.float32))
    except Exception as exc:
        log(f"[ceilings] matmul failed: {exc!r}")
    try:
        ceilings["copy_tbps"] = round_sig(copy_tbps(device, nbytes))
    except Exception as exc:
        log(f"[ceilings] copy failed: {exc!r}")
    if not on_gpu:
        ceilings["matmul_n"] = n
        ceilings["copy_bytes"] = nbytes
    log(f"[ceilings] {ceilings}")
    if on_gpu:
        torch.cuda.empty_cache()
    return ceilings
