"""Bad inputs raise a clear exception (ValueError / TypeError / RuntimeError, like flash-attn) whose
message names the offending argument."""

import pytest
import torch

from flash_attn import (flash_attn_func, flash_attn_qkvpacked_func, flash_attn_varlen_func,
                        flash_attn_with_kvcache, set_cuda_path)

ERRORS = (ValueError, TypeError, RuntimeError)


def _t(*shape, device, dtype=None):
    dtype = dtype or (torch.float16 if device == "cuda" else torch.float32)
    return torch.randn(*shape, device=device, dtype=dtype)


def _qkv(device, **kw):
    return _t(2, 8, 4, 32, device=device, **kw), _t(2, 10, 2, 32, device=device, **kw), _t(2, 10, 2, 32, device=device, **kw)


def _cu(lengths, device, dtype=torch.int32):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=dtype, device=device)


FUNC_CASES = {
    "q_not_tensor": (lambda d: flash_attn_func([1.0], *_qkv(d)[1:]), "q"),
    "q_int_dtype": (lambda d: flash_attn_func(_qkv(d)[0].to(torch.int32), *_qkv(d)[1:]), "q"),
    "q_float64": (lambda d: flash_attn_func(*(x.double() for x in _qkv(d))), "q"),
    "k_dtype_mismatch": (lambda d: flash_attn_func(_qkv(d)[0], _qkv(d)[1].bfloat16(), _qkv(d)[2]), "k"),
    "q_rank": (lambda d: flash_attn_func(_qkv(d)[0][0], *_qkv(d)[1:]), "q"),
    "k_head_dim": (lambda d: flash_attn_func(_qkv(d)[0], _t(2, 10, 2, 64, device=d), _t(2, 10, 2, 64, device=d)), "k"),
    "v_shape": (lambda d: flash_attn_func(*_qkv(d)[:2], _t(2, 11, 2, 32, device=d)), "v"),
    "k_batch": (lambda d: flash_attn_func(_qkv(d)[0], _t(3, 10, 2, 32, device=d), _t(3, 10, 2, 32, device=d)), "k"),
    "nheads_k_divides": (lambda d: flash_attn_func(_qkv(d)[0], _t(2, 10, 3, 32, device=d), _t(2, 10, 3, 32, device=d)),
                         "nheads_k"),
    "head_dim_too_big": (lambda d: flash_attn_func(*(_t(1, 4, 1, 264, device=d) for _ in range(3))), "head_dim"),
    "dropout_p_one": (lambda d: flash_attn_func(*_qkv(d), dropout_p=1.0), "dropout_p"),
    "window_not_pair": (lambda d: flash_attn_func(*_qkv(d), window_size=3), "window_size"),
    "window_below_minus_one": (lambda d: flash_attn_func(*_qkv(d), window_size=(-2, 0)), "window_size"),
    "softcap_negative": (lambda d: flash_attn_func(*_qkv(d), softcap=-1.0), "softcap"),
    "alibi_dtype": (lambda d: flash_attn_func(*_qkv(d), alibi_slopes=torch.ones(4, device=d, dtype=torch.float64)),
                    "alibi_slopes"),
    "alibi_shape": (lambda d: flash_attn_func(*_qkv(d), alibi_slopes=torch.ones(3, device=d)), "alibi_slopes"),
    "qkvpacked_rank": (lambda d: flash_attn_qkvpacked_func(_t(2, 8, 4, 32, device=d)), "qkv"),
    "softmax_scale_nan": (lambda d: flash_attn_func(*_qkv(d), softmax_scale=float("nan")), "softmax_scale"),
}


@pytest.mark.parametrize("case", list(FUNC_CASES), ids=list(FUNC_CASES))
def test_flash_attn_func_errors(device, case):
    fn, arg = FUNC_CASES[case]
    with pytest.raises(ERRORS, match=arg):
        fn(device)


def _varlen_args(device, lengths=(3, 5)):
    total = sum(lengths)
    q, k, v = (_t(total, 2, 32, device=device) for _ in range(3))
    return q, k, v, _cu(lengths, device), _cu(lengths, device), max(lengths), max(lengths)


def _replace(args, index, value):
    args = list(args)
    args[index] = value
    return args


VARLEN_CASES = {
    "cu_seqlens_q_int64": (lambda d: _replace(_varlen_args(d), 3, _cu((3, 5), d, torch.int64)), "cu_seqlens_q"),
    "cu_seqlens_k_int64": (lambda d: _replace(_varlen_args(d), 4, _cu((3, 5), d, torch.int64)), "cu_seqlens_k"),
    "cu_seqlens_k_length": (lambda d: _replace(_varlen_args(d), 4, _cu((3, 2, 3), d)), "cu_seqlens_k"),
    "cu_seqlens_q_total": (lambda d: _replace(_varlen_args(d), 3, _cu((3, 4), d)), "cu_seqlens_q"),
    "q_rank_varlen": (lambda d: _replace(_varlen_args(d), 0, _t(1, 8, 2, 32, device=d)), "q"),
    "max_seqlen_too_small": (lambda d: _replace(_varlen_args(d), 5, 2), "cu_seqlens_q|max_seqlen"),
}


# Values inside cu_seqlens are checked on every call where they are host memory (CPU tensors); in
# device memory only in the debug mode FLASH_ATTN_CHECK_INDICES=1 (it costs a sync).
HOST_CHECKED_ONLY = {"cu_seqlens_q_total", "max_seqlen_too_small"}


@pytest.mark.parametrize("case", list(VARLEN_CASES), ids=list(VARLEN_CASES))
def test_varlen_errors(device, case, monkeypatch):
    make, arg = VARLEN_CASES[case]
    if device == "cuda" and case in HOST_CHECKED_ONLY:
        monkeypatch.setenv("FLASH_ATTN_CHECK_INDICES", "1")
    with pytest.raises(ERRORS, match=arg):
        flash_attn_varlen_func(*make(device))


def _kv_args(device):
    q = _t(2, 1, 4, 32, device=device)
    kc, vc = _t(2, 16, 2, 32, device=device), _t(2, 16, 2, 32, device=device)
    return q, kc, vc


KVCACHE_CASES = {
    "k_without_v": (lambda d: flash_attn_with_kvcache(*_kv_args(d), k=_t(2, 1, 2, 32, device=d), cache_seqlens=3),
                    "k and v"),
    "append_without_cache_seqlens": (lambda d: flash_attn_with_kvcache(*_kv_args(d), k=_t(2, 1, 2, 32, device=d),
                                                                       v=_t(2, 1, 2, 32, device=d)), "cache_seqlens"),
    "cache_seqlens_int64": (lambda d: flash_attn_with_kvcache(*_kv_args(d), cache_seqlens=torch.tensor([1, 2], device=d)),
                            "cache_seqlens"),
    "cache_seqlens_too_big": (lambda d: flash_attn_with_kvcache(*_kv_args(d), cache_seqlens=17), "cache_seqlens"),
    "block_table_float": (lambda d: flash_attn_with_kvcache(*_kv_args(d), cache_seqlens=1,
                                                            block_table=torch.zeros(2, 1, device=d)), "block_table"),
    "rotary_cos_without_sin": (lambda d: flash_attn_with_kvcache(*_kv_args(d), cache_seqlens=1,
                                                                 rotary_cos=_t(16, 8, device=d)), "rotary_cos"),
    "rotary_dim_too_big": (lambda d: flash_attn_with_kvcache(*_kv_args(d), cache_seqlens=1, rotary_cos=_t(16, 20, device=d),
                                                             rotary_sin=_t(16, 20, device=d)), "rotary_cos"),
    "v_cache_shape": (lambda d: flash_attn_with_kvcache(_kv_args(d)[0], _kv_args(d)[1], _t(2, 15, 2, 32, device=d),
                                                       cache_seqlens=1), "v_cache"),
    "k_cache_last_dim_strided": (lambda d: flash_attn_with_kvcache(_kv_args(d)[0], _t(2, 16, 2, 64, device=d)[..., ::2],
                                                                   _kv_args(d)[2], cache_seqlens=1), "k_cache"),
    "cache_batch_idx_out_of_range": (lambda d: flash_attn_with_kvcache(
        *_kv_args(d), cache_seqlens=1, cache_batch_idx=torch.tensor([0, 5], dtype=torch.int32, device=d)),
        "cache_batch_idx"),
    "cache_leftpad_too_big": (lambda d: flash_attn_with_kvcache(
        *_kv_args(d), cache_seqlens=2, cache_leftpad=torch.tensor([0, 3], dtype=torch.int32, device=d)),
        "cache_leftpad"),
}


@pytest.mark.parametrize("case", list(KVCACHE_CASES), ids=list(KVCACHE_CASES))
def test_kvcache_errors(device, case, monkeypatch):
    if device == "cuda" and case in ("cache_batch_idx_out_of_range", "cache_leftpad_too_big"):
        monkeypatch.setenv("FLASH_ATTN_CHECK_INDICES", "1")  # device memory: checked in the debug mode
    fn, arg = KVCACHE_CASES[case]
    with pytest.raises(ERRORS, match=arg):
        fn(device)


def test_set_cuda_path_rejects_unknown():
    with pytest.raises(ValueError, match="cuda_path"):
        set_cuda_path("sm70")
    set_cuda_path("auto")


def test_device_mismatch(device):
    if device == "cpu":
        pytest.skip("needs a second device")
    q, k, v = _qkv(device)
    with pytest.raises(ERRORS, match="k"):
        flash_attn_func(q, k.cpu(), v)


def test_fp32_rejected_on_cuda(device):
    if device == "cpu":
        pytest.skip("fp32 is accepted on the CPU")
    with pytest.raises(ERRORS, match="q"):
        flash_attn_func(*_qkv(device, dtype=torch.float32))
