"""flash_attn.ops.layer_norm (flash-attn 2.8 API): dropout + add + LayerNorm, its subset and
parallel-residual variants and the DropoutAddLayerNorm module, on the fused C++/CUDA kernels of
csrc/ops (see _norm.py). Works on CPU and CUDA tensors.

Dropout masks come from a counter-based RNG seeded from torch's generator (torch.manual_seed makes
them reproducible); they are not the bits flash-attn's CUDA kernel would draw."""

import torch
from torch.nn import init

from ._norm import NormConfig, fused_norm


def _residual_dtype(residual, residual_in_fp32, x0):
    if residual is not None:
        return residual.dtype
    return torch.float32 if residual_in_fp32 else x0.dtype


def _as_rows(t, hidden):
    return None if t is None else t.reshape(-1, hidden)


def _prepare(x0, residual, weight, x1=None):
    hidden = weight.numel()
    x0m = _as_rows(x0, hidden)
    if x0m.stride(-1) != 1:
        x0m = x0m.contiguous()
    res = _as_rows(residual, hidden)
    if res is not None and res.stride(-1) != 1:
        res = res.contiguous()
    x1m = None
    if x1 is not None:
        x1m = _as_rows(x1, hidden).to(x0.dtype)
        if x1m.stride(-1) != 1:
            x1m = x1m.contiguous()
    return x0m, res, x1m


def _norm_api(x0, residual, weight, bias, dropout_p, epsilon, rowscale, layerscale, prenorm, residual_in_fp32,
              return_dropout_mask, is_rms_norm):
    x0m, res, _ = _prepare(x0, residual, weight)
    cfg = NormConfig(eps=epsilon, dropout_p=dropout_p, is_rms_norm=is_rms_norm,
                     residual_dtype=_residual_dtype(residual, residual_in_fp32, x0),
                     return_dropout_mask=return_dropout_mask and dropout_p > 0.0, keep_residual_out=prenorm)
    rs = None if rowscale is None else rowscale.reshape(-1)
    y, _, res_out, dmask, _ = fused_norm(x0m, res, None, weight, bias, None, None, rs, layerscale, None, None, cfg)
    y = y.view(x0.shape)
    out = (y, res_out.view(x0.shape)) if prenorm else y
    if not return_dropout_mask:
        return out
    if dmask is None:
        dmask = torch.ones(x0.shape, dtype=torch.bool, device=x0.device)
    dmask = dmask.view(x0.shape)
    return (*out, dmask) if prenorm else (out, dmask)


def dropout_add_layer_norm(x0, residual, weight, bias, dropout_p, epsilon, rowscale=None, layerscale=None,
                           prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    """residual_in_fp32 only has an effect if residual is None.
    Otherwise residual dtype is residual.dtype."""
    return _norm_api(x0, residual, weight, bias, dropout_p, epsilon, rowscale, layerscale, prenorm,
                     residual_in_fp32, return_dropout_mask, False)


def _subset_api(x0, residual, weight, bias, dropout_p, epsilon, layerscale, x0_subset, out_subset, rowscale_const,
                out_numrows, prenorm, residual_in_fp32, return_dropout_mask, is_rms_norm):
    hidden = weight.numel()
    x_shape = (-1, *x0.shape[1:])
    x0m, res, _ = _prepare(x0, residual, weight)
    if x0_subset is not None:
        x0_subset = x0_subset.reshape(-1)
    if out_subset is not None:
        out_subset = out_subset.reshape(-1)
    cfg = NormConfig(eps=epsilon, dropout_p=dropout_p, is_rms_norm=is_rms_norm, rowscale_const=rowscale_const,
                     out_numrows=out_numrows, residual_dtype=_residual_dtype(residual, residual_in_fp32, x0),
                     return_dropout_mask=return_dropout_mask and dropout_p > 0.0, keep_residual_out=prenorm)
    y, _, res_out, dmask, _ = fused_norm(x0m, res, None, weight, bias, None, None, None, layerscale, x0_subset,
                                         out_subset, cfg)
    y = y.view(x_shape)
    out = (y, res_out.view(x_shape)) if prenorm else y
    if not return_dropout_mask:
        return out
    if dmask is None:
        n = x0_subset.shape[0] if x0_subset is not None else x0m.shape[0]
        dmask = torch.ones(n, hidden, dtype=torch.bool, device=x0.device)
    dmask = dmask.view(x_shape)
    return (*out, dmask) if prenorm else (out, dmask)


def dropout_add_layer_norm_subset(x0, residual, weight, bias, dropout_p, epsilon, layerscale=None, x0_subset=None,
                                  out_subset=None, rowscale_const=1.0, out_numrows=0, prenorm=False,
                                  residual_in_fp32=False, return_dropout_mask=False):
    """x0_subset[i] = 1 + (row of x0 feeding row i), 0 = x0 is zero for row i; out_subset[i] = 1 + (row of
    the output written by row i), 0 = not written; the output has out_numrows rows.
    residual_in_fp32 only has an effect if residual is None."""
    return _subset_api(x0, residual, weight, bias, dropout_p, epsilon, layerscale, x0_subset, out_subset,
                       rowscale_const, out_numrows, prenorm, residual_in_fp32, return_dropout_mask, False)


def _parallel_api(x0, x1, residual, weight0, bias0, weight1, bias1, dropout_p, epsilon, prenorm, residual_in_fp32,
                  return_dropout_mask, is_rms_norm):
    x0m, res, x1m = _prepare(x0, residual, weight0, x1)
    cfg = NormConfig(eps=epsilon, dropout_p=dropout_p, is_rms_norm=is_rms_norm,
                     residual_dtype=_residual_dtype(residual, residual_in_fp32, x0),
                     return_dropout_mask=return_dropout_mask and dropout_p > 0.0, keep_residual_out=prenorm)
    y0, y1, res_out, dm0, dm1 = fused_norm(x0m, res, x1m, weight0, bias0, weight1, bias1, None, None, None, None,
                                           cfg)
    shape = x0.shape
    y0 = y0.view(shape)
    y1 = y1.view(shape) if y1 is not None else None
    out = (y0, y1, res_out.view(shape)) if prenorm else (y0, y1)
    if not return_dropout_mask:
        return out
    ones = lambda: torch.ones(shape, dtype=torch.bool, device=x0.device)  # noqa: E731
    dm0 = dm0.view(shape) if dm0 is not None else ones()
    dm1 = dm1.view(shape) if dm1 is not None else (ones() if x1 is not None else None)
    return (*out, dm0, dm1)


def dropout_add_layer_norm_parallel_residual(x0, x1, residual, weight0, bias0, weight1, bias1, dropout_p, epsilon,
                                             prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    """out0 = LN(dropout(x0) + dropout(x1) + residual) * weight0 + bias0, out1 likewise with weight1 / bias1
    (weight1 may be None: out1 is None). residual_in_fp32 only has an effect if residual is None."""
    return _parallel_api(x0, x1, residual, weight0, bias0, weight1, bias1, dropout_p, epsilon, prenorm,
                         residual_in_fp32, return_dropout_mask, False)


def layer_norm(x, weight, bias, epsilon):
    return dropout_add_layer_norm(x, None, weight, bias, 0.0, epsilon, None, None, False)


class DropoutAddLayerNorm(torch.nn.Module):
    def __init__(self, hidden_size, prenorm=False, p=0.0, eps=1e-5, residual_in_fp32=False, device=None,
                 dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.prenorm = prenorm
        self.p = p
        self.eps = eps
        self.residual_in_fp32 = residual_in_fp32
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.bias = torch.nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.reset_parameters()

    def reset_parameters(self):
        init.ones_(self.weight)
        init.zeros_(self.bias)

    def forward(self, x0, residual=None):
        return dropout_add_layer_norm(x0, residual, self.weight, self.bias, self.p if self.training else 0.0,
                                      self.eps, prenorm=self.prenorm, residual_in_fp32=self.residual_in_fp32)
