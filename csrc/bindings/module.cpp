// nanobind module flash_attn._C: a thin, logic-free mirror of include/flash/api.h.
//
// Deliberately torch-independent: tensors cross as raw addresses (Python ints) plus strides, so one
// build of this extension works with every torch version. All validation lives in the C++ API
// (flash::Error -> ValueError, flash::DeviceError -> RuntimeError via nanobind's standard
// std::invalid_argument / std::runtime_error translation).
#include <nanobind/nanobind.h>

#include <cstdint>

#include "flash/api.h"

namespace nb = nanobind;

#ifdef FLASH_ATTN_WITH_ROTARY
// Defined in bind_rotary.cpp. Needs flash::apply_rotary (csrc/rotary/) linked into the core library,
// so the build enables it explicitly; without it the Python layer falls back to plain PyTorch.
void bind_rotary(nb::module_& m);
#endif

// Defined in bind_ops.cpp: the fused ops of include/flash/ops.h (cross-entropy, norms, GEMM).
void bind_ops(nb::module_& m);

namespace {

// Pointer fields are exposed as Python ints (0 == nullptr). A macro keeps the 30-odd pointer
// properties one line each; the cast through uintptr_t is the whole job.
#define FLASH_PTR_FIELD(cls, Struct, field)                                                   \
  cls.def_prop_rw(                                                                            \
      #field, [](const Struct& p) { return reinterpret_cast<uintptr_t>(p.field); },           \
      [](Struct& p, uintptr_t addr) {                                                         \
        p.field = reinterpret_cast<decltype(Struct::field)>(addr);                            \
      })

void bind_enums(nb::module_& m) {
  nb::enum_<flash::DType>(m, "DType")
      .value("float32", flash::DType::kFloat32)
      .value("float16", flash::DType::kFloat16)
      .value("bfloat16", flash::DType::kBFloat16);
  nb::enum_<flash::Device>(m, "Device")
      .value("cpu", flash::Device::kCPU)
      .value("cuda", flash::Device::kCUDA);
  nb::enum_<flash::Impl>(m, "Impl")
      .value("cpu", flash::Impl::kCpu)
      .value("sm80", flash::Impl::kSm80)
      .value("sm90", flash::Impl::kSm90);
  nb::enum_<flash::CudaPath>(m, "CudaPath")
      .value("auto", flash::CudaPath::kAuto)
      .value("sm80", flash::CudaPath::kSm80)
      .value("sm90", flash::CudaPath::kSm90);
}

void bind_fwd_params(nb::module_& m) {
  using P = flash::FwdParams;
  auto c = nb::class_<P>(m, "FwdParams");
  c.def(nb::init<>());
  c.def_rw("device", &P::device).def_rw("device_index", &P::device_index).def_rw("dtype", &P::dtype);

  FLASH_PTR_FIELD(c, P, q);
  c.def_rw("q_batch_stride", &P::q_batch_stride)
      .def_rw("q_row_stride", &P::q_row_stride)
      .def_rw("q_head_stride", &P::q_head_stride);
  FLASH_PTR_FIELD(c, P, k);
  c.def_rw("k_batch_stride", &P::k_batch_stride)
      .def_rw("k_row_stride", &P::k_row_stride)
      .def_rw("k_head_stride", &P::k_head_stride);
  FLASH_PTR_FIELD(c, P, v);
  c.def_rw("v_batch_stride", &P::v_batch_stride)
      .def_rw("v_row_stride", &P::v_row_stride)
      .def_rw("v_head_stride", &P::v_head_stride);
  FLASH_PTR_FIELD(c, P, out);
  c.def_rw("out_batch_stride", &P::out_batch_stride)
      .def_rw("out_row_stride", &P::out_row_stride)
      .def_rw("out_head_stride", &P::out_head_stride);
  FLASH_PTR_FIELD(c, P, softmax_lse);
  c.def_rw("lse_batch_stride", &P::lse_batch_stride).def_rw("lse_head_stride", &P::lse_head_stride);

  c.def_rw("batch", &P::batch)
      .def_rw("seqlen_q", &P::seqlen_q)
      .def_rw("seqlen_k", &P::seqlen_k)
      .def_rw("nheads", &P::nheads)
      .def_rw("nheads_k", &P::nheads_k)
      .def_rw("head_dim", &P::head_dim)
      .def_rw("total_q", &P::total_q)
      .def_rw("total_k", &P::total_k);

  FLASH_PTR_FIELD(c, P, cu_seqlens_q);
  FLASH_PTR_FIELD(c, P, cu_seqlens_k);
  FLASH_PTR_FIELD(c, P, seqused_k);
  FLASH_PTR_FIELD(c, P, block_table);
  c.def_rw("block_table_batch_stride", &P::block_table_batch_stride)
      .def_rw("page_size", &P::page_size)
      .def_rw("num_pages", &P::num_pages);

  c.def_rw("softmax_scale", &P::softmax_scale)
      .def_rw("causal", &P::causal)
      .def_rw("window_left", &P::window_left)
      .def_rw("window_right", &P::window_right)
      .def_rw("softcap", &P::softcap);
  FLASH_PTR_FIELD(c, P, alibi_slopes);
  c.def_rw("alibi_batch_stride", &P::alibi_batch_stride);

  c.def_rw("dropout_p", &P::dropout_p);
  FLASH_PTR_FIELD(c, P, rng_state);
  FLASH_PTR_FIELD(c, P, attn_probs);
  c.def_rw("probs_batch_stride", &P::probs_batch_stride)
      .def_rw("probs_head_stride", &P::probs_head_stride)
      .def_rw("probs_row_stride", &P::probs_row_stride);

  FLASH_PTR_FIELD(c, P, workspace);
  c.def_rw("workspace_bytes", &P::workspace_bytes);
  c.def_rw("cuda_path", &P::cuda_path);
}

void bind_bwd_params(nb::module_& m) {
  using P = flash::BwdParams;
  auto c = nb::class_<P, flash::FwdParams>(m, "BwdParams");
  c.def(nb::init<>());
  FLASH_PTR_FIELD(c, P, dout);
  c.def_rw("dout_batch_stride", &P::dout_batch_stride)
      .def_rw("dout_row_stride", &P::dout_row_stride)
      .def_rw("dout_head_stride", &P::dout_head_stride);
  FLASH_PTR_FIELD(c, P, dq);
  c.def_rw("dq_batch_stride", &P::dq_batch_stride)
      .def_rw("dq_row_stride", &P::dq_row_stride)
      .def_rw("dq_head_stride", &P::dq_head_stride);
  FLASH_PTR_FIELD(c, P, dk);
  c.def_rw("dk_batch_stride", &P::dk_batch_stride)
      .def_rw("dk_row_stride", &P::dk_row_stride)
      .def_rw("dk_head_stride", &P::dk_head_stride);
  FLASH_PTR_FIELD(c, P, dv);
  c.def_rw("dv_batch_stride", &P::dv_batch_stride)
      .def_rw("dv_row_stride", &P::dv_row_stride)
      .def_rw("dv_head_stride", &P::dv_head_stride);
  c.def_rw("deterministic", &P::deterministic);
}

void bind_kvcache_params(nb::module_& m) {
  using P = flash::KvcacheParams;
  auto c = nb::class_<P, flash::FwdParams>(m, "KvcacheParams");
  c.def(nb::init<>());
  c.def_rw("batch_cache", &P::batch_cache);
  FLASH_PTR_FIELD(c, P, cache_seqlens);
  c.def_rw("cache_seqlen_const", &P::cache_seqlen_const);
  FLASH_PTR_FIELD(c, P, cache_batch_idx);
  FLASH_PTR_FIELD(c, P, cache_leftpad);
  FLASH_PTR_FIELD(c, P, k_new);
  c.def_rw("knew_batch_stride", &P::knew_batch_stride)
      .def_rw("knew_row_stride", &P::knew_row_stride)
      .def_rw("knew_head_stride", &P::knew_head_stride);
  FLASH_PTR_FIELD(c, P, v_new);
  c.def_rw("vnew_batch_stride", &P::vnew_batch_stride)
      .def_rw("vnew_row_stride", &P::vnew_row_stride)
      .def_rw("vnew_head_stride", &P::vnew_head_stride);
  c.def_rw("seqlen_new", &P::seqlen_new);
  FLASH_PTR_FIELD(c, P, rotary_cos);
  FLASH_PTR_FIELD(c, P, rotary_sin);
  c.def_rw("rotary_dim", &P::rotary_dim)
      .def_rw("seqlen_rotary", &P::seqlen_rotary)
      .def_rw("rotary_interleaved", &P::rotary_interleaved)
      .def_rw("num_splits", &P::num_splits);
}

#undef FLASH_PTR_FIELD

void* as_stream(uintptr_t stream) { return reinterpret_cast<void*>(stream); }

void bind_functions(nb::module_& m) {
  // The GIL is released while a call runs: CPU kernels take real time, and CUDA launches must not
  // block other Python threads.
  using release = nb::call_guard<nb::gil_scoped_release>;
  m.def(
      "fwd", [](flash::FwdParams& p, uintptr_t stream) { return flash::fwd(p, as_stream(stream)); },
      nb::arg("params"), nb::arg("stream") = 0, release());
  m.def(
      "bwd", [](flash::BwdParams& p, uintptr_t stream) { return flash::bwd(p, as_stream(stream)); },
      nb::arg("params"), nb::arg("stream") = 0, release());
  m.def(
      "fwd_kvcache",
      [](flash::KvcacheParams& p, uintptr_t stream) {
        return flash::fwd_kvcache(p, as_stream(stream));
      },
      nb::arg("params"), nb::arg("stream") = 0, release());

  m.def("fwd_workspace_size", &flash::fwd_workspace_size, nb::arg("params"));
  m.def("bwd_workspace_size", &flash::bwd_workspace_size, nb::arg("params"));
  m.def("kvcache_workspace_size", &flash::kvcache_workspace_size, nb::arg("params"));
  m.def("select_fwd_impl", &flash::select_fwd_impl, nb::arg("params"));
  m.def("select_bwd_impl", &flash::select_bwd_impl, nb::arg("params"));
  m.def("built_with_cuda", &flash::built_with_cuda);
}

}  // namespace

NB_MODULE(_C, m) {
  m.doc() = "flash_attn._C: raw-pointer binding of the flash C++ API (see include/flash/api.h)";
  bind_enums(m);
  bind_fwd_params(m);
  bind_bwd_params(m);
  bind_kvcache_params(m);
  bind_functions(m);
#ifdef FLASH_ATTN_WITH_ROTARY
  bind_rotary(m);
#endif
  bind_ops(m);
}
