"""flash_attn.ops.triton.layer_norm (flash-attn 2.8 API): layer_norm_fn / rms_norm_fn and the
LayerNorm / RMSNorm modules, on the fused C++/CUDA kernels of csrc/ops (flash_attn/ops/_norm.py).
x1 / weight1 / bias1: a second input (own dropout mask) added before the norm, and a second output
normalised with weight1 / bias1 (parallel residual). Works on CPU and CUDA tensors."""

import torch
import torch.nn.functional as F
from torch.nn import init

from .._norm import NormConfig, fused_norm


def _ref_norm_input(x, weight, bias, residual, x1, weight1, bias1, dropout_p, rowscale, zero_centered_weight,
                    dropout_mask, dropout_mask1, upcast):
    """The part both references share: upcast, zero-centred weights, rowscale, dropout, x1 and the residual.
    Returns the normaliser's input and its (possibly adjusted) weights."""
    if upcast:
        x = x.float()
        weight = weight.float()
        bias = bias.float() if bias is not None else None
        residual = residual.float() if residual is not None else residual
        x1 = x1.float() if x1 is not None else None
        weight1 = weight1.float() if weight1 is not None else None
        bias1 = bias1.float() if bias1 is not None else None
    if zero_centered_weight:
        weight = weight + 1.0
        if weight1 is not None:
            weight1 = weight1 + 1.0
    if x1 is not None:
        assert rowscale is None, "rowscale is not supported with parallel LayerNorm"
    if rowscale is not None:
        x = x * rowscale[..., None]
    if dropout_p > 0.0:
        x = x.masked_fill(~dropout_mask, 0.0) / (1.0 - dropout_p) if dropout_mask is not None else F.dropout(x, p=dropout_p)
        if x1 is not None:
            x1 = (x1.masked_fill(~dropout_mask1, 0.0) / (1.0 - dropout_p) if dropout_mask1 is not None
                  else F.dropout(x1, p=dropout_p))
    if x1 is not None:
        x = x + x1
    if residual is not None:
        x = (x + residual).to(x.dtype)
    return x, weight, bias, weight1, bias1


def layer_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                   rowscale=None, prenorm=False, zero_centered_weight=False, dropout_mask=None, dropout_mask1=None,
                   upcast=False):
    """Pure-PyTorch reference (masks given explicitly when dropout_p > 0)."""
    dtype = x.dtype
    x, weight, bias, weight1, bias1 = _ref_norm_input(x, weight, bias, residual, x1, weight1, bias1, dropout_p,
                                                      rowscale, zero_centered_weight, dropout_mask, dropout_mask1,
                                                      upcast)
    out = F.layer_norm(x.to(weight.dtype), x.shape[-1:], weight=weight, bias=bias, eps=eps).to(dtype)
    if weight1 is None:
        return out if not prenorm else (out, x)
    out1 = F.layer_norm(x.to(weight1.dtype), x.shape[-1:], weight=weight1, bias=bias1, eps=eps).to(dtype)
    return (out, out1) if not prenorm else (out, out1, x)


def rms_norm_ref(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                 rowscale=None, prenorm=False, zero_centered_weight=False, dropout_mask=None, dropout_mask1=None,
                 upcast=False):
    dtype = x.dtype
    x, weight, bias, weight1, bias1 = _ref_norm_input(x, weight, bias, residual, x1, weight1, bias1, dropout_p,
                                                      rowscale, zero_centered_weight, dropout_mask, dropout_mask1,
                                                      upcast)
    rstd = 1 / torch.sqrt((x.square()).mean(dim=-1, keepdim=True) + eps)
    out = ((x * rstd * weight) + bias if bias is not None else (x * rstd * weight)).to(dtype)
    if weight1 is None:
        return out if not prenorm else (out, x)
    out1 = ((x * rstd * weight1) + bias1 if bias1 is not None else (x * rstd * weight1)).to(dtype)
    return (out, out1) if not prenorm else (out, out1, x)


def layer_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                  rowscale=None, prenorm=False, residual_in_fp32=False, zero_centered_weight=False,
                  is_rms_norm=False, return_dropout_mask=False, out_dtype=None, out=None, residual_out=None):
    x_shape = x.shape
    hidden = x_shape[-1]
    if x1 is not None and rowscale is not None:
        raise ValueError("rowscale is not supported with x1 (parallel LayerNorm)")
    if weight1 is not None and x1 is None:
        pass  # two outputs from one input: allowed
    if zero_centered_weight:
        # weight + 1 outside the Function: autograd carries the gradient through the addition.
        weight = weight + 1.0
        if weight1 is not None:
            weight1 = weight1 + 1.0
    xm = x.reshape(-1, hidden)
    xm = xm if xm.stride(-1) == 1 else xm.contiguous()
    res = None
    if residual is not None:
        res = residual.reshape(-1, hidden)
        res = res if res.stride(-1) == 1 else res.contiguous()
    x1m = None
    if x1 is not None:
        x1m = x1.reshape(-1, hidden).to(x.dtype)
        x1m = x1m if x1m.stride(-1) == 1 else x1m.contiguous()
    residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else None)
    cfg = NormConfig(eps=eps, dropout_p=dropout_p, is_rms_norm=is_rms_norm, residual_dtype=residual_dtype,
                     out_dtype=out_dtype, return_dropout_mask=return_dropout_mask and dropout_p > 0.0,
                     keep_residual_out=prenorm)
    rs = rowscale.reshape(-1) if rowscale is not None else None
    y, y1, res_out, dm, dm1 = fused_norm(xm, res, x1m, weight, bias, weight1, bias1, rs, None, None, None, cfg)
    y = y.reshape(x_shape)
    if out is not None:
        out.copy_(y)
        y = out
    y1 = y1.reshape(x_shape) if y1 is not None else None
    if prenorm:
        res_out = res_out.reshape(x_shape)
        if residual_out is not None:
            residual_out.copy_(res_out)
            res_out = residual_out
    if return_dropout_mask:
        ones = lambda: torch.ones(x_shape, dtype=torch.bool, device=x.device)  # noqa: E731
        dm = dm.reshape(x_shape) if dm is not None else (ones() if dropout_p == 0.0 else None)
        dm1 = dm1.reshape(x_shape) if dm1 is not None else (ones() if x1 is not None and dropout_p == 0.0 else None)
    outs = (y,) if weight1 is None else (y, y1)
    if prenorm:
        outs = outs + (res_out,)
    if return_dropout_mask:
        outs = outs + (dm, dm1)
    return outs[0] if len(outs) == 1 else outs


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, zero_centered_weight=False,
                return_dropout_mask=False, out_dtype=None, out=None, residual_out=None):
    return layer_norm_fn(x, weight, bias, residual, x1, weight1, bias1, eps, dropout_p, rowscale, prenorm,
                         residual_in_fp32, zero_centered_weight, True, return_dropout_mask, out_dtype, out,
                         residual_out)


class RMSNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps=1e-5, dropout_p=0.0, zero_centered_weight=False, device=None, dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.eps = eps
        self.drop = torch.nn.Dropout(dropout_p) if dropout_p > 0.0 else None
        self.zero_centered_weight = zero_centered_weight
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if not self.zero_centered_weight:
            init.ones_(self.weight)
        else:
            init.zeros_(self.weight)

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return rms_norm_fn(x, self.weight, self.bias, residual=residual, eps=self.eps,
                           dropout_p=self.drop.p if self.drop is not None and self.training else 0.0,
                           prenorm=prenorm, residual_in_fp32=residual_in_fp32,
                           zero_centered_weight=self.zero_centered_weight)


class LayerNorm(torch.nn.LayerNorm):
    def __init__(self, hidden_size, eps=1e-5, device=None, dtype=None):
        super().__init__(hidden_size, eps=eps, device=device, dtype=dtype)

    def forward(self, x, residual=None, prenorm=False, residual_in_fp32=False):
        return layer_norm_fn(x, self.weight, self.bias, residual=residual, eps=self.eps, prenorm=prenorm,
                             residual_in_fp32=residual_in_fp32)
