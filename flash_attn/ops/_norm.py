"""The one autograd Function behind every fused-norm API (flash_attn.ops.layer_norm,
flash_attn.ops.rms_norm, flash_attn.ops.triton.layer_norm): dropout + add + LayerNorm / RMSNorm
through flash_attn._C.norm_fwd / norm_bwd (csrc/ops). See include/flash/ops.h, NormParams, for the
exact formula; the dropout masks come from Philox and are regenerated in the backward."""

from dataclasses import dataclass
from typing import Optional

import torch

from .. import _C
from . import _common as C


@dataclass(frozen=True)
class NormConfig:
    eps: float
    dropout_p: float = 0.0
    is_rms_norm: bool = False
    rowscale_const: float = 1.0
    out_numrows: int = 0  # rows of y with out_subset
    residual_dtype: Optional[torch.dtype] = None  # None: x0's dtype
    out_dtype: Optional[torch.dtype] = None  # None: x0's dtype
    return_dropout_mask: bool = False
    keep_residual_out: bool = False  # prenorm: residual_out is an output, not only saved


def _cast_params(weight, *others):
    """The kernel reads weight, bias, weight1, bias1, colscale in one dtype (weight's)."""
    return [None if t is None else t.to(weight.dtype).contiguous() for t in others]


def _params(cfg: NormConfig, x0, weight):
    p = _C.NormParams()
    C.set_device(p, x0)
    p.kind = _C.NormKind.rms_norm if cfg.is_rms_norm else _C.NormKind.layer_norm
    p.hidden = weight.shape[-1]
    p.eps = float(cfg.eps)
    p.dropout_p = float(cfg.dropout_p)
    p.rowscale_const = float(cfg.rowscale_const)
    return p


class FusedNormFunction(torch.autograd.Function):
    """forward(x0, residual, x1, weight, bias, weight1, bias1, rowscale, colscale, x0_subset,
    out_subset, cfg) -> (y, y1, residual_out, dmask, dmask1); absent outputs are None.
    x0 / residual / x1 / rowscale / subsets are 2D (rows, hidden) / 1D (rows,) here."""

    @staticmethod
    def forward(ctx, x0, residual, x1, weight, bias, weight1, bias1, rowscale, colscale, x0_subset, out_subset,
                cfg: NormConfig):
        hidden = weight.shape[-1]
        rows = x0_subset.shape[0] if x0_subset is not None else x0.shape[0]
        weight = weight.contiguous()
        bias, weight1, bias1, colscale = _cast_params(weight, bias, weight1, bias1, colscale)
        in_dtype = x0.dtype
        res_dtype = cfg.residual_dtype or (residual.dtype if residual is not None else in_dtype)
        out_dtype = cfg.out_dtype or in_dtype
        dev = x0.device
        # residual_out (the pre-norm sum) is what the backward normalises again. When it would be
        # x0 itself, bit for bit, x0 is saved instead of a copy.
        identity = (residual is None and x1 is None and cfg.dropout_p == 0.0 and rowscale is None
                    and colscale is None and x0_subset is None and cfg.rowscale_const == 1.0
                    and res_dtype == in_dtype)
        store = cfg.keep_residual_out or not identity
        residual_out = torch.empty(rows, hidden, dtype=res_dtype, device=dev) if store else None
        y_rows = cfg.out_numrows if out_subset is not None else rows
        alloc_y = torch.zeros if out_subset is not None else torch.empty
        y = alloc_y(y_rows, hidden, dtype=out_dtype, device=dev)
        y1 = alloc_y(y_rows, hidden, dtype=out_dtype, device=dev) if weight1 is not None else None
        mean = None if cfg.is_rms_norm else torch.empty(rows, dtype=torch.float32, device=dev)
        rstd = torch.empty(rows, dtype=torch.float32, device=dev)
        want_mask = cfg.return_dropout_mask
        dmask = torch.empty(rows, hidden, dtype=torch.uint8, device=dev) if want_mask else None
        dmask1 = torch.empty(rows, hidden, dtype=torch.uint8, device=dev) if want_mask and x1 is not None else None
        seed, offset = C.new_seed_offset() if cfg.dropout_p > 0.0 else (0, 0)
        if rowscale is not None:
            rowscale = rowscale.to(torch.float32).contiguous()
        if x0_subset is not None:
            x0_subset = x0_subset.to(torch.int32).contiguous()
        if out_subset is not None:
            out_subset = out_subset.to(torch.int32).contiguous()

        p = _params(cfg, x0, weight)
        p.rows = rows
        p.in_dtype = C.dtype_of(x0, "x0")
        p.residual_dtype, p.out_dtype = C.DTYPES[res_dtype], C.DTYPES[out_dtype]
        p.weight_dtype = C.dtype_of(weight, "weight")
        p.x0, p.x0_row_stride = x0.data_ptr(), x0.stride(0)
        if x1 is not None:
            p.x1, p.x1_row_stride = x1.data_ptr(), x1.stride(0)
        if residual is not None:
            p.residual, p.residual_row_stride = residual.data_ptr(), residual.stride(0)
        p.weight, p.bias, p.weight1, p.bias1 = C.ptr(weight), C.ptr(bias), C.ptr(weight1), C.ptr(bias1)
        p.rowscale, p.colscale = C.ptr(rowscale), C.ptr(colscale)
        p.x0_subset, p.out_subset = C.ptr(x0_subset), C.ptr(out_subset)
        p.seed, p.offset = seed, offset
        p.y, p.y_row_stride = y.data_ptr(), y.stride(0)
        if y1 is not None:
            p.y1, p.y1_row_stride = y1.data_ptr(), y1.stride(0)
        if residual_out is not None:
            p.residual_out, p.residual_out_row_stride = residual_out.data_ptr(), residual_out.stride(0)
        p.mean, p.rstd = C.ptr(mean), rstd.data_ptr()
        p.dmask, p.dmask1 = C.ptr(dmask), C.ptr(dmask1)
        _C.norm_fwd(p, C.stream_of(x0))

        ctx.save_for_backward(x0, residual_out if store else x0, weight, bias, weight1, bias1, rowscale, colscale,
                              x0_subset, out_subset, mean, rstd)
        ctx.cfg = cfg
        ctx.meta = (seed, offset, rows, res_dtype, out_dtype, residual is not None, x1 is not None,
                    None if residual is None else residual.dtype, x1.dtype if x1 is not None else None)
        ctx.x0_rows = x0.shape[0]
        masks = [m.view(torch.bool) if m is not None else None for m in (dmask, dmask1)]
        for m in masks:
            if m is not None:
                ctx.mark_non_differentiable(m)
        return y, y1, residual_out if cfg.keep_residual_out else None, masks[0], masks[1]

    @staticmethod
    def backward(ctx, dy, dy1, dresidual_out, _dmask, _dmask1):
        (x0, a, weight, bias, weight1, bias1, rowscale, colscale, x0_subset, out_subset, mean,
         rstd) = ctx.saved_tensors
        cfg = ctx.cfg
        seed, offset, rows, res_dtype, out_dtype, has_residual, has_x1, residual_dtype_in, x1_dtype = ctx.meta
        hidden = weight.shape[-1]
        dev = x0.device

        def grad_in(g, shape, dtype):
            if g is None:
                return torch.zeros(shape, dtype=dtype, device=dev)
            return C.rows_2d(g.to(dtype))

        y_rows = cfg.out_numrows if out_subset is not None else rows
        dy = grad_in(dy, (y_rows, hidden), out_dtype)
        dy1 = grad_in(dy1, (y_rows, hidden), out_dtype) if weight1 is not None else None
        if dresidual_out is not None:
            dresidual_out = C.rows_2d(dresidual_out.to(res_dtype))
        alloc_dx0 = torch.zeros if x0_subset is not None else torch.empty
        dx0 = alloc_dx0(x0.shape, dtype=x0.dtype, device=dev)
        dx1 = torch.empty(rows, hidden, dtype=x1_dtype, device=dev) if has_x1 else None
        dres = torch.empty(rows, hidden, dtype=res_dtype, device=dev) if has_residual else None
        f32 = dict(dtype=torch.float32, device=dev)
        dw = torch.empty(hidden, **f32)
        db = torch.empty(hidden, **f32) if bias is not None else None
        dw1 = torch.empty(hidden, **f32) if weight1 is not None else None
        db1 = torch.empty(hidden, **f32) if bias1 is not None else None
        dcs = torch.empty(hidden, **f32) if colscale is not None else None

        p = _params(cfg, x0, weight)
        p.rows = rows
        p.in_dtype = C.dtype_of(x0, "x0")
        p.residual_dtype, p.out_dtype = C.DTYPES[res_dtype], C.DTYPES[out_dtype]
        p.weight_dtype = C.dtype_of(weight, "weight")
        p.x0, p.x0_row_stride = x0.data_ptr(), x0.stride(0)
        p.weight, p.bias, p.weight1, p.bias1 = C.ptr(weight), C.ptr(bias), C.ptr(weight1), C.ptr(bias1)
        p.rowscale, p.colscale = C.ptr(rowscale), C.ptr(colscale)
        p.x0_subset, p.out_subset = C.ptr(x0_subset), C.ptr(out_subset)
        p.seed, p.offset = seed, offset
        p.residual_out, p.residual_out_row_stride = a.data_ptr(), a.stride(0)
        p.mean, p.rstd = C.ptr(mean), rstd.data_ptr()
        p.dy, p.dy_row_stride = dy.data_ptr(), dy.stride(0)
        if dy1 is not None:
            p.dy1, p.dy1_row_stride = dy1.data_ptr(), dy1.stride(0)
        if dresidual_out is not None:
            p.dresidual_out, p.dresidual_out_row_stride = dresidual_out.data_ptr(), dresidual_out.stride(0)
        p.dx0, p.dx0_row_stride = dx0.data_ptr(), dx0.stride(0)
        if dx1 is not None:
            p.dx1, p.dx1_row_stride = dx1.data_ptr(), dx1.stride(0)
        if dres is not None:
            p.dresidual, p.dresidual_row_stride = dres.data_ptr(), dres.stride(0)
        p.dweight, p.dbias, p.dweight1, p.dbias1, p.dcolscale = (C.ptr(dw), C.ptr(db), C.ptr(dw1), C.ptr(db1),
                                                                 C.ptr(dcs))
        ws_bytes = _C.norm_bwd_workspace_size(p)
        ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev) if ws_bytes > 0 else None
        p.workspace, p.workspace_bytes = C.ptr(ws), ws_bytes
        _C.norm_bwd(p, C.stream_of(x0))

        wd = weight.dtype
        cast = lambda t: None if t is None else t.to(wd)  # noqa: E731
        if dres is not None and residual_dtype_in is not None and dres.dtype != residual_dtype_in:
            dres = dres.to(residual_dtype_in)
        return (dx0, dres, dx1, cast(dw), cast(db), cast(dw1), cast(db1), None, cast(dcs), None, None, None)


def fused_norm(x0, residual, x1, weight, bias, weight1, bias1, rowscale, colscale, x0_subset, out_subset,
               cfg: NormConfig):
    return FusedNormFunction.apply(x0, residual, x1, weight, bias, weight1, bias1, rowscale, colscale, x0_subset,
                                   out_subset, cfg)
