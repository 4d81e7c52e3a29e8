"""flash_attn.ops.rms_norm (flash-attn 2.8 API): the RMSNorm twins of flash_attn.ops.layer_norm on the
same fused kernels."""

import torch
from torch.nn import init

from .layer_norm import _norm_api, _parallel_api, _subset_api


def rms_norm(x, weight, epsilon):
    return dropout_add_rms_norm(x, None, weight, None, 0.0, epsilon, None, None, False)


def dropout_add_rms_norm(x0, residual, weight, bias, dropout_p, epsilon, rowscale=None, layerscale=None,
                         prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    return _norm_api(x0, residual, weight, bias, dropout_p, epsilon, rowscale, layerscale, prenorm,
                     residual_in_fp32, return_dropout_mask, True)


def dropout_add_rms_norm_subset(x0, residual, weight, bias, dropout_p, epsilon, layerscale=None, x0_subset=None,
                                out_subset=None, rowscale_const=1.0, out_numrows=0, prenorm=False,
                                residual_in_fp32=False, return_dropout_mask=False):
    return _subset_api(x0, residual, weight, bias, dropout_p, epsilon, layerscale, x0_subset, out_subset,
                       rowscale_const, out_numrows, prenorm, residual_in_fp32, return_dropout_mask, True)


def dropout_add_rms_norm_parallel_residual(x0, x1, residual, weight0, bias0, weight1, bias1, dropout_p, epsilon,
                                           prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    return _parallel_api(x0, x1, residual, weight0, bias0, weight1, bias1, dropout_p, epsilon, prenorm,
                         residual_in_fp32, return_dropout_mask, True)


class RMSNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps=1e-5, device=None, dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.ones_(self.weight)

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class DropoutAddRMSNorm(torch.nn.Module):
    def __init__(self, hidden_size, prenorm=False, p=0.0, eps=1e-5, residual_in_fp32=False, device=None,
                 dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.prenorm = prenorm
        self.p = p
        self.eps = eps
        self.residual_in_fp32 = residual_in_fp32
        self.weight = torch.nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.ones_(self.weight)

    def forward(self, x0, residual=None):
        return dropout_add_rms_norm(x0, residual, self.weight, None, self.p if self.training else 0.0, self.eps,
                                    prenorm=self.prenorm, residual_in_fp32=self.residual_in_fp32)
