"""flash_attn_func forward + backward against the fp64 reference: every flag, dtypes, head dims,
GQA/MQA and odd shapes."""

import pytest
import torch

import flash_attn
from flash_attn import flash_attn_func
from helpers import compare_to_reference, mha_ref, rand, skip_unsupported_dtype

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (name, kwargs of flash_attn_func); alibi is filled in per test (needs the batch/head count).
FLAGS = [
    ("plain", {}),
    ("causal", {"causal": True}),
    ("window", {"window_size": (5, 3)}),
    ("window_left_only", {"window_size": (7, -1)}),
    ("window_right_only", {"window_size": (-1, 2)}),
    ("softcap", {"softcap": 2.5}),
    ("alibi", {"alibi": "heads"}),
    ("alibi_batch", {"alibi": "batch"}),
    ("causal_window", {"causal": True, "window_size": (6, -1)}),
    ("causal_softcap_alibi", {"causal": True, "softcap": 3.0, "alibi": "heads"}),
    ("window_softcap_alibi_scale", {"window_size": (4, 4), "softcap": 1.5, "alibi": "batch",
                                    "softmax_scale": 0.3}),
]
SHAPES = [(1, 1), (17, 33), (33, 17), (64, 64)]


def _alibi(kind, batch, nheads, device):
    if kind is None:
        return None
    shape = (nheads,) if kind == "heads" else (batch, nheads)
    return (torch.rand(shape, device=device) * 0.5 + 0.05).float()


def run_case(device, dtype, batch, seqlen_q, seqlen_k, nheads, nheads_k, head_dim, flags):
    skip_unsupported_dtype(device, dtype)
    flags = dict(flags)
    alibi = _alibi(flags.pop("alibi", None), batch, nheads, device)
    q = rand(batch, seqlen_q, nheads, head_dim, dtype=dtype, device=device)
    k = rand(batch, seqlen_k, nheads_k, head_dim, dtype=dtype, device=device)
    v = rand(batch, seqlen_k, nheads_k, head_dim, dtype=dtype, device=device)
    out, lse, s_dmask = flash_attn_func(q, k, v, alibi_slopes=alibi, return_attn_probs=True, **flags)
    assert s_dmask is None  # 2.8: no S_dmask without dropout
    assert out.dtype == dtype
    assert flash_attn.last_impl() == "cpu" if device == "cpu" else flash_attn.last_impl() in ("sm80", "sm90")
    ref_kw = {"causal": flags.get("causal", False), "window": flags.get("window_size", (-1, -1)),
              "softcap": flags.get("softcap", 0.0), "alibi_slopes": alibi,
              "softmax_scale": flags.get("softmax_scale")}
    compare_to_reference(out, lse, [q, k, v], mha_ref(**ref_kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seqlens", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("flags", FLAGS, ids=[f[0] for f in FLAGS])
def test_flags(device, dtype, seqlens, flags):
    run_case(device, dtype, 2, seqlens[0], seqlens[1], 3, 3, 32, flags[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 40, 59, 64, 80, 96, 111, 128, 160, 192, 224, 256])
def test_head_dims(device, dtype, head_dim):
    run_case(device, dtype, 1, 37, 45, 2, 2, head_dim, {"causal": head_dim % 2 == 0})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(4, 1), (4, 2), (6, 3)], ids=lambda h: f"h{h[0]}_hk{h[1]}")
@pytest.mark.parametrize("causal", [False, True])
def test_gqa_mqa(device, dtype, heads, causal):
    run_case(device, dtype, 2, 29, 41, heads[0], heads[1], 64, {"causal": causal})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_odd_shape_113x203(device, dtype, causal):
    run_case(device, dtype, 1, 113, 203, 2, 1, 64, {"causal": causal})


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_big_1023x1024(device, dtype, causal):
    if device == "cpu":
        pytest.skip("GPU-sized case")
    run_case(device, dtype, 2, 1023, 1024, 8, 2, 128, {"causal": causal})


@pytest.mark.parametrize("head_dim,flags", [(32, {"causal": True}), (256, {"window_size": (300, 40)})],
                         ids=["d32_causal", "d256_local"])
def test_long_2048(device, head_dim, flags):
    """The longest sequences of the CPU acceptance range (2048 x 2048), GQA, fwd + bwd."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    run_case(device, dtype, 1, 2048, 2048, 2, 1, head_dim, flags)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_softmax_scale_default_uses_original_head_dim(device, dtype):
    """head_dim 59 (padded to 64 on CUDA): the default scale must be 59 ** -0.5."""
    skip_unsupported_dtype(device, dtype)
    q = rand(1, 9, 2, 59, dtype=dtype, device=device, requires_grad=False)
    k = rand(1, 11, 2, 59, dtype=dtype, device=device, requires_grad=False)
    v = rand(1, 11, 2, 59, dtype=dtype, device=device, requires_grad=False)
    a = flash_attn_func(q, k, v)
    b = flash_attn_func(q, k, v, softmax_scale=59 ** -0.5)
    assert a.shape == (1, 9, 2, 59)
    assert torch.equal(a, b)


def test_non_contiguous_inputs(device):
    """Strided q/k/v (last dim contiguous) and a non-contiguous last dim are both accepted."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    base = torch.randn(2, 24, 3, 4, 64, dtype=dtype, device=device)
    q, k = base[:, :, 0], base[:, :, 1]  # head stride != head_dim * ... : strided views
    v = torch.randn(2, 24, 64, 4, dtype=dtype, device=device).transpose(2, 3)  # last dim strided
    assert v.stride(-1) != 1
    q, k, v = (x.requires_grad_() if x.is_leaf else x for x in (q, k, v))
    out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    ref_q, ref_k, ref_v = (x.detach().contiguous() for x in (q, k, v))
    out2 = flash_attn_func(ref_q, ref_k, ref_v, causal=True)
    torch.testing.assert_close(out, out2, atol=0, rtol=0)


@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_flag(device, deterministic):
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q = rand(2, 77, 4, 64, dtype=dtype, device=device)
    k = rand(2, 91, 2, 64, dtype=dtype, device=device)
    v = rand(2, 91, 2, 64, dtype=dtype, device=device)
    dout = torch.randn(2, 77, 4, 64, dtype=dtype, device=device)
    results = []
    for _ in range(3):
        out = flash_attn_func(q, k, v, causal=True, deterministic=deterministic)
        results.append(torch.autograd.grad(out, (q, k, v), dout))
    if deterministic:
        for r in results[1:]:
            for a, b in zip(r, results[0]):
                assert torch.equal(a, b)
    compare_to_reference(out, flash_attn_func(q, k, v, causal=True, return_attn_probs=True)[1],
                         [q, k, v], mha_ref(causal=True), dtype, dout=dout, ours_grads=results[-1])


def test_no_grad_and_requires_grad_false(device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    q = rand(1, 8, 2, 32, dtype=dtype, device=device, requires_grad=False)
    out = flash_attn_func(q, q, q)
    assert out.grad_fn is None
    q.requires_grad_()
    with torch.no_grad():
        out = flash_attn_func(q, q, q)
    assert out.grad_fn is None


def test_return_attn_probs_convention(device):
    dtype = torch.float16 if device == "cuda" else torch.float32
    q = rand(2, 8, 2, 32, dtype=dtype, device=device)
    out = flash_attn_func(q, q, q)
    assert isinstance(out, torch.Tensor)
    res = flash_attn_func(q, q, q, return_attn_probs=True)
    assert isinstance(res, tuple) and len(res) == 3
    out2, lse, s_dmask = res
    assert lse.shape == (2, 2, 8) and lse.dtype == torch.float32
    assert s_dmask is None
    torch.testing.assert_close(out, out2, atol=0, rtol=0)
    # lse is not differentiable; out still is.
    assert not lse.requires_grad
    out2.sum().backward()
    assert q.grad is not None


@pytest.fixture
def force_hdim_padding(monkeypatch):
    """Make the CPU take the CUDA-only zero-padding path (head_dim -> next multiple of 8)."""
    import flash_attn.flash_attn_interface as fai

    monkeypatch.setattr(fai, "_padded_hdim", lambda x: (x.shape[-1] + 7) // 8 * 8)


@pytest.mark.parametrize("head_dim", [59, 111])
@pytest.mark.parametrize("variant", ["func", "qkvpacked", "kvpacked", "varlen"])
def test_hdim_padding_path(force_hdim_padding, head_dim, variant):
    """Padding must not change results: scale from the original head dim, outputs/grads sliced."""
    from flash_attn import flash_attn_kvpacked_func, flash_attn_qkvpacked_func, flash_attn_varlen_func
    from reference import attention_varlen_ref

    dtype, device = torch.float32, "cpu"
    if variant == "func":
        q, k, v = (rand(2, 13, 2, head_dim, dtype=dtype, device=device) for _ in range(3))
        out, lse, _ = flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
        compare_to_reference(out, lse, [q, k, v], mha_ref(causal=True), dtype)
    elif variant == "qkvpacked":
        qkv = rand(2, 13, 3, 2, head_dim, dtype=dtype, device=device)
        out, lse, _ = flash_attn_qkvpacked_func(qkv, return_attn_probs=True)
        ref = mha_ref()
        compare_to_reference(out, lse, [qkv], lambda t: ref(t[:, :, 0], t[:, :, 1], t[:, :, 2]), dtype)
    elif variant == "kvpacked":
        q = rand(2, 13, 2, head_dim, dtype=dtype, device=device)
        kv = rand(2, 17, 2, 1, head_dim, dtype=dtype, device=device)
        out, lse, _ = flash_attn_kvpacked_func(q, kv, return_attn_probs=True)
        ref = mha_ref()
        compare_to_reference(out, lse, [q, kv], lambda a, b: ref(a, b[:, :, 0], b[:, :, 1]), dtype)
    else:
        cu = torch.tensor([0, 4, 4, 15], dtype=torch.int32)
        q, k, v = (rand(15, 2, head_dim, dtype=dtype, device=device) for _ in range(3))
        out, lse, _ = flash_attn_varlen_func(q, k, v, cu, cu, 11, 11, causal=True, return_attn_probs=True)
        compare_to_reference(out, lse, [q, k, v],
                             lambda a, b, c: attention_varlen_ref(a, b, c, cu, cu, causal=True), dtype)
    assert out.shape[-1] == head_dim
