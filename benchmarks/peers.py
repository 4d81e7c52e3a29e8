"""The implementations a benchmark compares, behind one small interface.

Every implementation takes q, k, v in flash-attn's (batch, seqlen, nheads, hdim) layout and returns
the output in that layout (SDPA peers transpose views in and out: no copies, the usual way a model
that keeps BSHD activations calls SDPA). `scope()` is entered around every call, timed or not, so
forced paths / SDPA backends also govern the backward pass.

Names follow BENCH.md: ours, ours_sm80, ours_sm90 (flash_attn with its CUDA path forced),
torch_flash, cudnn, efficient, math (torch SDPA with one backend forced), flex (FlexAttention,
compiled), torch_cpu (torch SDPA on the CPU, its own backend choice).
"""
import contextlib
import functools

import torch
import torch.nn.functional as F

ALL_IMPLS = ["ours", "ours_sm80", "ours_sm90", "torch_flash", "cudnn", "efficient", "math", "flex",
             "torch_cpu"]


class Unavailable(Exception):
    """The implementation cannot run here at all (not a per-shape failure)."""


def import_flash_attn():
    try:
        import flash_attn
    except Exception as exc:  # ImportError, or a broken extension (undefined symbol, ...)
        raise Unavailable(f"import flash_attn failed: {exc!r}") from exc
    if not hasattr(flash_attn, "flash_attn_func"):  # e.g. an empty source dir seen as a namespace
        raise Unavailable(f"flash_attn at {getattr(flash_attn, '__path__', '?')} has no flash_attn_func")
    return flash_attn


def last_impl():
    """flash_attn.last_impl() as a string, or None when unavailable."""
    try:
        import flash_attn
        value = flash_attn.last_impl()
    except Exception:
        return None
    return None if value is None else str(getattr(value, "name", value))


# ---------------------------------------------------------------------------------------------
# ours
# ---------------------------------------------------------------------------------------------
class Ours:
    """flash_attn's public API; `path` None lets the dispatcher choose ("auto")."""

    def __init__(self, name, path=None):
        self.name = name
        self.path = path
        self.fa = None

    def check(self, device):
        self.fa = import_flash_attn()
        built_with_cuda = getattr(self.fa, "built_with_cuda", None)
        if device.type == "cuda" and built_with_cuda is not None and not built_with_cuda():
            raise Unavailable("this flash_attn build has no CUDA backend")
        if self.path is not None:
            if device.type != "cuda":
                raise Unavailable(f"{self.name} forces a CUDA path; device is {device.type}")
            try:
                self.fa.set_cuda_path(self.path)
            except Exception as exc:
                raise Unavailable(f"set_cuda_path({self.path!r}) failed: {exc!r}") from exc
            finally:
                self._reset_path()

    def _reset_path(self):
        try:
            self.fa.set_cuda_path("auto")
        except Exception:
            pass

    @contextlib.contextmanager
    def scope(self):
        if self.path is None:
            yield
            return
        self.fa.set_cuda_path(self.path)
        try:
            yield
        finally:
            self._reset_path()

    def attention(self, q, k, v, causal, scale):
        return self.fa.flash_attn_func(q, k, v, softmax_scale=scale, causal=causal)

    def varlen_attention(self, q, k, v, cu_seqlens, max_seqlen, causal, scale):
        """Packed (total, nheads, hdim) tensors, one cu_seqlens for q and k (self-attention)."""
        return self.fa.flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                                              softmax_scale=scale, causal=causal)

    def decode(self, q, k_cache, v_cache, cache_seqlens, block_table, scale):
        return self.fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=cache_seqlens,
                                               block_table=block_table, softmax_scale=scale,
                                               causal=True)


# ---------------------------------------------------------------------------------------------
# torch SDPA peers
# ---------------------------------------------------------------------------------------------
def _sdpa_backend(name):
    from torch.nn.attention import SDPBackend
    return {"torch_flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def _sdpa(q, k, v, causal, scale):
    """SDPA on BSHD tensors. is_causal in torch is top-left aligned; flash-attn's is bottom-right.
    They agree when sq == sk; for sq != sk pass an explicit bottom-right mask."""
    sq, sk = q.shape[1], k.shape[1]
    kwargs = {"scale": scale}
    if q.shape[2] != k.shape[2]:
        kwargs["enable_gqa"] = True
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if causal and sq != sk:
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, **kwargs)
    else:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, **kwargs)
    return out.transpose(1, 2)


class Sdpa:
    def __init__(self, name):
        self.name = name
        self.backend = None

    def check(self, device):
        if self.name == "torch_cpu":
            if device.type != "cpu":
                raise Unavailable("torch_cpu is the CPU peer")
            return
        if device.type != "cuda" and self.name != "math":
            raise Unavailable(f"{self.name} needs a CUDA device")
        try:
            self.backend = _sdpa_backend(self.name)
        except Exception as exc:
            raise Unavailable(f"this torch has no SDPA backend for {self.name}: {exc!r}") from exc
        if self.name == "cudnn" and device.type == "cuda" and not torch.backends.cudnn.is_available():
            raise Unavailable("cuDNN not available")

    def scope(self):
        if self.backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel
        return sdpa_kernel(self.backend)

    def attention(self, q, k, v, causal, scale):
        return _sdpa(q, k, v, causal, scale)

    def decode(self, q, k_cache, v_cache, cache_seqlens, block_table, scale):
        # The cache is dense and full (every sequence uses the whole context), so no mask: with one
        # query row, flash-attn's bottom-right causal sees every key.
        if block_table is not None:
            raise Unavailable("SDPA has no paged cache")
        return _sdpa(q, k_cache, v_cache, False, scale)


# ---------------------------------------------------------------------------------------------
# FlexAttention
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=64)
def _causal_block_mask(seqlen_q, seqlen_k, device_str):
    from torch.nn.attention.flex_attention import create_block_mask
    offset = seqlen_k - seqlen_q

    def bottom_right_causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset

    return create_block_mask(bottom_right_causal, B=None, H=None, Q_LEN=seqlen_q, KV_LEN=seqlen_k,
                             device=device_str)


class Flex:
    name = "flex"

    def check(self, device):
        if device.type != "cuda":
            raise Unavailable("flex is benchmarked on CUDA only (CPU needs inductor's C++ backend)")
        # dynamic=False compiles once per shape; past dynamo's recompile limit (8 by default) it
        # would silently fall back to eager flex_attention, which materialises the score matrix.
        import torch._dynamo.config as dynamo_config
        for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(dynamo_config, knob):
                setattr(dynamo_config, knob, max(getattr(dynamo_config, knob), 4096))
        try:
            _compiled_flex()
        except Exception as exc:
            raise Unavailable(f"FlexAttention unavailable: {exc!r}") from exc

    def scope(self):
        return contextlib.nullcontext()

    def attention(self, q, k, v, causal, scale):
        sq, sk = q.shape[1], k.shape[1]
        mask = _causal_block_mask(sq, sk, str(q.device)) if causal else None
        return self.attention_block_mask(q, k, v, mask, scale)

    def attention_block_mask(self, q, k, v, block_mask, scale):
        """BSHD tensors, any BlockMask (None: dense), e.g. a document mask over packed sequences."""
        out = _compiled_flex()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                               block_mask=block_mask, scale=scale, enable_gqa=q.shape[2] != k.shape[2])
        return out.transpose(1, 2)

    def decode(self, q, k_cache, v_cache, cache_seqlens, block_table, scale):
        if block_table is not None:
            raise Unavailable("flex is run on the dense cache only")
        return self.attention(q, k_cache, v_cache, False, scale)


def make_impl(name):
    if name == "ours":
        return Ours("ours")
    if name in ("ours_sm80", "ours_sm90"):
        return Ours(name, path=name.split("_")[1])
    if name in ("torch_flash", "cudnn", "efficient", "math", "torch_cpu"):
        return Sdpa(name)
    if name == "flex":
        return Flex()
    raise ValueError(f"unknown impl {name!r}; known: {', '.join(ALL_IMPLS)}")


def available_impls(names, device, notes):
    """Instantiate and check each named implementation; unavailable ones go to `notes` instead."""
    impls = []
    for name in names:
        impl = make_impl(name)
        try:
            impl.check(device)
        except Unavailable as exc:
            notes.append({"impl": name, "reason": str(exc)})
            continue
        impls.append(impl)
    return impls
