"""The sm80 path's experiment switches (csrc/cuda/sm80/README.md, "Performance pass 4") change only the
schedule of the same arithmetic, so every variant must give BITWISE the same results as the default:
forward out / lse, and backward dq / dk / dv in deterministic mode (fixed summation order). The
default itself is checked against the reference by the other suites (test_flash_attn_func.py, ...).

Skipped without a GPU of compute capability >= 8.0. On the H100: `pytest tests/python/test_sm80_variants.py`."""

import os

import pytest
import torch

import flash_attn
from flash_attn import flash_attn_func

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
    reason="needs an sm80+ GPU")

# (env name, values to compare with the default). FWD_VARIANT flag sets compiled: d64 0 and 4 (early barrier,
# the default); d128 0, 4 and 44 (4 + K through the loader's fast path + S loop unrolled by 4, the default since
# pass 5); d256 5, 19 (P V split by head dim + split mask loop) and 83 (19 with the swizzled tiles, the default
# since pass 5); unlisted sets run the default, which is fine here. BWD: DO2=0 is the single-dO-buffer kernel
# (the default before pass 4); BWD_VARIANT 0 / 2 / 7 (defaults d64 0, d128 2, d256 7). BWD_DOT=0: the
# one-warp-per-(row, head) D = rowsum(dO * O) kernel (the vectorised one is the default since pass 5).
FWD_VARIANTS = [("FLASH_SM80_FWD_VARIANT", v) for v in ("0", "4", "5", "19", "44", "83")]
BWD_VARIANTS = ([("FLASH_SM80_BWD_DO2", "0"), ("FLASH_SM80_BWD_DOT", "0")] +
                [("FLASH_SM80_BWD_VARIANT", v) for v in ("0", "2", "7")])

# Tails (not multiples of the tiles), sq != sk (bottom-right causal), several key / query blocks.
SEQLENS = [(1, 1), (113, 203), (128, 128), (217, 128), (512, 640), (1000, 1100)]
MASKS = {"none": {}, "causal": {"causal": True}, "local": {"window_size": (97, 13)},
         "local_left": {"window_size": (150, -1)}, "local_right": {"window_size": (-1, 70)}}


@pytest.fixture(autouse=True)
def _sm80_path():
    flash_attn.set_cuda_path("sm80")
    yield
    flash_attn.set_cuda_path("auto")


def _run(env, q, k, v, dout, mask_kw, backward, deterministic=True):
    name, value = env if env else (None, None)
    old = os.environ.get(name) if name else None
    try:
        if name:
            os.environ[name] = value
        if not backward:
            with torch.no_grad():
                out, lse, _ = flash_attn_func(q, k, v, return_attn_probs=True, **mask_kw)
            return out, lse
        qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
        out = flash_attn_func(qg, kg, vg, deterministic=deterministic, **mask_kw)
        dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), dout)
        return out, dq, dk, dv
    finally:
        if name:
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _inputs(b, sq, sk, h, hk, d, dtype):
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dtype)
    k = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype)
    v = torch.randn(b, sk, hk, d, device="cuda", dtype=dtype)
    dout = torch.randn(b, sq, h, d, device="cuda", dtype=dtype)
    return q, k, v, dout


@pytest.mark.parametrize("env", FWD_VARIANTS, ids=lambda e: f"{e[0][11:]}={e[1]}")
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", [64, 128, 256])
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_fwd_variant_bitwise(env, mask, dtype, hdim, seqlens):
    torch.manual_seed(hdim + 7 * seqlens[0] + seqlens[1])
    q, k, v, dout = _inputs(2, seqlens[0], seqlens[1], 4, 2, hdim, dtype)
    base = _run(None, q, k, v, dout, MASKS[mask], False)
    got = _run(env, q, k, v, dout, MASKS[mask], False)
    assert flash_attn.last_impl() == "sm80"
    for name, x, y in zip(("out", "lse"), got, base):
        assert torch.equal(x, y), f"{name}: max diff {(x.float() - y.float()).abs().max().item()}"


@pytest.mark.parametrize("env", BWD_VARIANTS, ids=lambda e: f"{e[0][11:]}={e[1]}")
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("hdim", [64, 128, 256])
@pytest.mark.parametrize("seqlens", SEQLENS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_bwd_variant_bitwise(env, mask, dtype, hdim, seqlens):
    torch.manual_seed(hdim + 7 * seqlens[0] + seqlens[1])
    q, k, v, dout = _inputs(2, seqlens[0], seqlens[1], 4, 2, hdim, dtype)
    base = _run(None, q, k, v, dout, MASKS[mask], True)
    got = _run(env, q, k, v, dout, MASKS[mask], True)
    assert flash_attn.last_impl() == "sm80"
    for name, x, y in zip(("out", "dq", "dk", "dv"), got, base):
        assert torch.equal(x, y), f"{name}: max diff {(x.float() - y.float()).abs().max().item()}"
    # Default (atomic) dQ mode: the reductions themselves (kBwdRedFast changes them); the order of the
    # atomics varies, so compare to the deterministic result within a few 16-bit ulps of the largest value.
    got_nd = _run(env, q, k, v, dout, MASKS[mask], True, deterministic=False)
    for name, x, y in zip(("out", "dq", "dk", "dv"), got_nd, base):
        err = (x.float() - y.float()).abs().max().item()
        assert err <= 1e-2 * y.float().abs().max().item() + 1e-6, f"{name} (atomic dQ mode): max diff {err}"
