// flash_attn._C ops: raw-pointer mirror of include/flash/ops.h (cross-entropy, fused norm, cuBLASLt
// GEMM with epilogue), in the style of module.cpp (pointers as Python ints, 0 == nullptr; the
// validation lives in C++). Registered from NB_MODULE in module.cpp through bind_ops(m).
#include <nanobind/nanobind.h>

#include <cstdint>

#include "flash/ops.h"

namespace nb = nanobind;

namespace {

#define FLASH_OPS_PTR_FIELD(cls, Struct, field)                                     \
  cls.def_prop_rw(                                                                  \
      #field, [](const Struct& p) { return reinterpret_cast<uintptr_t>(p.field); }, \
      [](Struct& p, uintptr_t addr) { p.field = reinterpret_cast<decltype(Struct::field)>(addr); })

void* as_stream(uintptr_t s) { return reinterpret_cast<void*>(s); }
using release = nb::call_guard<nb::gil_scoped_release>;

void bind_cross_entropy(nb::module_& m) {
  using P = flash::CrossEntropyParams;
  auto c = nb::class_<P>(m, "CrossEntropyParams");
  c.def(nb::init<>());
  c.def_rw("device", &P::device).def_rw("device_index", &P::device_index).def_rw("dtype", &P::dtype);
  FLASH_OPS_PTR_FIELD(c, P, logits);
  c.def_rw("logits_row_stride", &P::logits_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, labels);
  c.def_rw("rows", &P::rows).def_rw("vocab", &P::vocab).def_rw("vocab_start", &P::vocab_start)
      .def_rw("total_classes", &P::total_classes);
  c.def_rw("label_smoothing", &P::label_smoothing).def_rw("logit_scale", &P::logit_scale)
      .def_rw("lse_square_scale", &P::lse_square_scale).def_rw("ignore_index", &P::ignore_index);
  FLASH_OPS_PTR_FIELD(c, P, lse);
  FLASH_OPS_PTR_FIELD(c, P, target);
  FLASH_OPS_PTR_FIELD(c, P, sum_z);
  FLASH_OPS_PTR_FIELD(c, P, loss);
  FLASH_OPS_PTR_FIELD(c, P, z_loss);
  FLASH_OPS_PTR_FIELD(c, P, dloss);
  c.def_rw("dloss_stride", &P::dloss_stride);
  FLASH_OPS_PTR_FIELD(c, P, dlogits);
  c.def_rw("dlogits_row_stride", &P::dlogits_row_stride);
  m.def("cross_entropy_fwd", [](P& p, uintptr_t s) { flash::cross_entropy_fwd(p, as_stream(s)); },
        nb::arg("params"), nb::arg("stream") = 0, release());
  m.def("cross_entropy_bwd", [](P& p, uintptr_t s) { flash::cross_entropy_bwd(p, as_stream(s)); },
        nb::arg("params"), nb::arg("stream") = 0, release());
}

void bind_norm(nb::module_& m) {
  nb::enum_<flash::NormKind>(m, "NormKind")
      .value("layer_norm", flash::NormKind::kLayerNorm)
      .value("rms_norm", flash::NormKind::kRMSNorm);
  using P = flash::NormParams;
  auto c = nb::class_<P>(m, "NormParams");
  c.def(nb::init<>());
  c.def_rw("device", &P::device).def_rw("device_index", &P::device_index).def_rw("kind", &P::kind);
  c.def_rw("rows", &P::rows).def_rw("hidden", &P::hidden).def_rw("eps", &P::eps);
  c.def_rw("in_dtype", &P::in_dtype).def_rw("residual_dtype", &P::residual_dtype)
      .def_rw("out_dtype", &P::out_dtype).def_rw("weight_dtype", &P::weight_dtype);
  FLASH_OPS_PTR_FIELD(c, P, x0);
  c.def_rw("x0_row_stride", &P::x0_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, x1);
  c.def_rw("x1_row_stride", &P::x1_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, residual);
  c.def_rw("residual_row_stride", &P::residual_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, weight);
  FLASH_OPS_PTR_FIELD(c, P, bias);
  FLASH_OPS_PTR_FIELD(c, P, weight1);
  FLASH_OPS_PTR_FIELD(c, P, bias1);
  FLASH_OPS_PTR_FIELD(c, P, rowscale);
  c.def_rw("rowscale_const", &P::rowscale_const);
  FLASH_OPS_PTR_FIELD(c, P, colscale);
  FLASH_OPS_PTR_FIELD(c, P, x0_subset);
  FLASH_OPS_PTR_FIELD(c, P, out_subset);
  c.def_rw("dropout_p", &P::dropout_p).def_rw("seed", &P::seed).def_rw("offset", &P::offset);
  FLASH_OPS_PTR_FIELD(c, P, y);
  c.def_rw("y_row_stride", &P::y_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, y1);
  c.def_rw("y1_row_stride", &P::y1_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, residual_out);
  c.def_rw("residual_out_row_stride", &P::residual_out_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, mean);
  FLASH_OPS_PTR_FIELD(c, P, rstd);
  FLASH_OPS_PTR_FIELD(c, P, dmask);
  FLASH_OPS_PTR_FIELD(c, P, dmask1);
  FLASH_OPS_PTR_FIELD(c, P, dy);
  c.def_rw("dy_row_stride", &P::dy_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dy1);
  c.def_rw("dy1_row_stride", &P::dy1_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dresidual_out);
  c.def_rw("dresidual_out_row_stride", &P::dresidual_out_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dx0);
  c.def_rw("dx0_row_stride", &P::dx0_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dx1);
  c.def_rw("dx1_row_stride", &P::dx1_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dresidual);
  c.def_rw("dresidual_row_stride", &P::dresidual_row_stride);
  FLASH_OPS_PTR_FIELD(c, P, dweight);
  FLASH_OPS_PTR_FIELD(c, P, dbias);
  FLASH_OPS_PTR_FIELD(c, P, dweight1);
  FLASH_OPS_PTR_FIELD(c, P, dbias1);
  FLASH_OPS_PTR_FIELD(c, P, dcolscale);
  FLASH_OPS_PTR_FIELD(c, P, workspace);
  c.def_rw("workspace_bytes", &P::workspace_bytes);
  m.def("norm_fwd", [](P& p, uintptr_t s) { flash::norm_fwd(p, as_stream(s)); }, nb::arg("params"),
        nb::arg("stream") = 0, release());
  m.def("norm_bwd", [](P& p, uintptr_t s) { flash::norm_bwd(p, as_stream(s)); }, nb::arg("params"),
        nb::arg("stream") = 0, release());
  m.def("norm_bwd_workspace_size", &flash::norm_bwd_workspace_size, nb::arg("params"));
}

void bind_gemm(nb::module_& m) {
  nb::enum_<flash::Epilogue>(m, "Epilogue")
      .value("none", flash::Epilogue::kNone)
      .value("bias", flash::Epilogue::kBias)
      .value("gelu_aux_bias", flash::Epilogue::kGeluAuxBias)
      .value("relu_aux_bias", flash::Epilogue::kReluAuxBias)
      .value("dgelu_bgrad", flash::Epilogue::kDGeluBgrad)
      .value("drelu_bgrad", flash::Epilogue::kDReluBgrad)
      .value("bgradb", flash::Epilogue::kBgradB)
      .value("gelu_bias", flash::Epilogue::kGeluBias)
      .value("relu_bias", flash::Epilogue::kReluBias);
  using P = flash::GemmParams;
  auto c = nb::class_<P>(m, "GemmParams");
  c.def(nb::init<>());
  c.def_rw("device_index", &P::device_index).def_rw("dtype", &P::dtype);
  c.def_rw("trans_a", &P::trans_a).def_rw("trans_b", &P::trans_b);
  c.def_rw("m", &P::m).def_rw("n", &P::n).def_rw("k", &P::k);
  FLASH_OPS_PTR_FIELD(c, P, a);
  c.def_rw("lda", &P::lda);
  FLASH_OPS_PTR_FIELD(c, P, b);
  c.def_rw("ldb", &P::ldb);
  FLASH_OPS_PTR_FIELD(c, P, d);
  c.def_rw("ldd", &P::ldd);
  c.def_rw("alpha", &P::alpha).def_rw("beta", &P::beta).def_rw("epilogue", &P::epilogue);
  FLASH_OPS_PTR_FIELD(c, P, bias);
  FLASH_OPS_PTR_FIELD(c, P, aux);
  c.def_rw("aux_ld", &P::aux_ld);
  FLASH_OPS_PTR_FIELD(c, P, workspace);
  c.def_rw("workspace_bytes", &P::workspace_bytes);
  m.def("gemm_epilogue", [](const P& p, uintptr_t s) { return flash::gemm_epilogue(p, as_stream(s)); },
        nb::arg("params"), nb::arg("stream") = 0, release());
  m.def("gemm_epilogue_available", &flash::gemm_epilogue_available);
}

#undef FLASH_OPS_PTR_FIELD

}  // namespace

void bind_ops(nb::module_& m) {
  bind_cross_entropy(m);
  bind_norm(m);
  bind_gemm(m);
}
