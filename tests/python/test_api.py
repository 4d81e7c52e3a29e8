"""Package surface: exports, version, CUDA path selection, and the raw binding flash_attn._C."""

import pytest
import torch

import flash_attn
from flash_attn import _C


def test_exports_and_version():
    assert flash_attn.__version__ == "2.8.3"
    for name in ("flash_attn_func", "flash_attn_qkvpacked_func", "flash_attn_kvpacked_func",
                 "flash_attn_varlen_func", "flash_attn_varlen_qkvpacked_func",
                 "flash_attn_varlen_kvpacked_func", "flash_attn_with_kvcache", "set_cuda_path", "last_impl"):
        assert callable(getattr(flash_attn, name)), name
    from flash_attn.flash_attn_interface import flash_attn_with_kvcache  # noqa: F401  (2.8 import path)
    assert isinstance(_C.built_with_cuda(), bool)


def test_signature_defaults():
    import inspect

    sig = inspect.signature(flash_attn.flash_attn_func)
    assert list(sig.parameters) == ["q", "k", "v", "dropout_p", "softmax_scale", "causal", "window_size", "softcap",
                                    "alibi_slopes", "deterministic", "return_attn_probs"]
    assert sig.parameters["window_size"].default == (-1, -1)
    sig = inspect.signature(flash_attn.flash_attn_varlen_func)
    assert list(sig.parameters)[-1] == "block_table"
    sig = inspect.signature(flash_attn.flash_attn_with_kvcache)
    assert list(sig.parameters) == ["q", "k_cache", "v_cache", "k", "v", "rotary_cos", "rotary_sin", "cache_seqlens",
                                    "cache_batch_idx", "cache_leftpad", "block_table", "softmax_scale", "causal",
                                    "window_size", "softcap", "rotary_interleaved", "alibi_slopes", "num_splits",
                                    "return_softmax_lse"]
    assert sig.parameters["rotary_interleaved"].default is True


def test_binding_fields_round_trip():
    p = _C.KvcacheParams()
    p.q = 0xDEADBEEF0
    p.cache_seqlens = 0x1000
    p.head_dim = 96
    p.softmax_scale = 0.25
    p.window_left = 7
    p.rotary_interleaved = True
    p.dtype = _C.DType.bfloat16
    p.cuda_path = _C.CudaPath.sm90
    p.workspace_bytes = 1 << 40
    assert (p.q, p.cache_seqlens, p.head_dim, p.softmax_scale, p.window_left) == (0xDEADBEEF0, 0x1000, 96, 0.25, 7)
    assert p.rotary_interleaved and p.dtype == _C.DType.bfloat16 and p.cuda_path == _C.CudaPath.sm90
    assert p.workspace_bytes == 1 << 40
    b = _C.BwdParams()
    b.dq, b.deterministic, b.rng_state = 16, True, 32
    assert (b.dq, b.deterministic, b.rng_state) == (16, True, 32)
    assert isinstance(b, _C.FwdParams)


def test_binding_raises_value_error_from_cpp():
    p = _C.FwdParams()  # all pointers null, shapes zero
    p.nheads = 0
    with pytest.raises(ValueError, match="nheads"):
        _C.fwd(p, 0)


def test_select_impl_cpu():
    q = torch.randn(1, 4, 2, 32)
    p = _C.FwdParams()
    flash_attn._backend.init_params(p, q, 0)
    flash_attn._backend.set_qkv(p, q, q, q)
    out, lse = torch.empty_like(q), torch.empty(1, 2, 4)
    flash_attn._backend.set_out_lse(p, out, lse)
    p.batch, p.seqlen_q, p.seqlen_k = 1, 4, 4
    assert _C.select_fwd_impl(p) == _C.Impl.cpu
    assert _C.fwd_workspace_size(p) >= 0


def test_cuda_path_selection(device):
    if device == "cpu":
        flash_attn.flash_attn_func(*(torch.randn(1, 4, 2, 32) for _ in range(3)))
        assert flash_attn.last_impl() == "cpu"
        return
    q = torch.randn(1, 64, 2, 64, device=device, dtype=torch.float16)
    try:
        flash_attn.set_cuda_path("sm80")
        flash_attn.flash_attn_func(q, q, q)
        assert flash_attn.last_impl() == "sm80"
        if torch.cuda.get_device_capability()[0] == 9:
            flash_attn.set_cuda_path("sm90")
            flash_attn.flash_attn_func(q, q, q)
            assert flash_attn.last_impl() == "sm90"
            flash_attn.set_cuda_path("auto")
            flash_attn.flash_attn_func(q, q, q)
            assert flash_attn.last_impl() == "sm90"
    finally:
        flash_attn.set_cuda_path("auto")
