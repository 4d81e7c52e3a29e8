// flash_attn._C.RotaryParams / flash_attn._C.apply_rotary: raw-pointer mirror of include/flash/rotary.h,
// in the style of module.cpp (pointers as Python ints, 0 == nullptr; validation in C++).
// Registered from NB_MODULE in module.cpp through bind_rotary(m), after the enums it uses.
#include <nanobind/nanobind.h>

#include <cstdint>

#include "flash/rotary.h"

namespace nb = nanobind;

namespace {

#define FLASH_ROTARY_PTR_FIELD(cls, Struct, field)                                 \
  cls.def_prop_rw(                                                                 \
      #field, [](const Struct& p) { return reinterpret_cast<uintptr_t>(p.field); }, \
      [](Struct& p, uintptr_t addr) { p.field = reinterpret_cast<decltype(Struct::field)>(addr); })

void bind_rotary_params(nb::module_& m) {
  using P = flash::RotaryParams;
  auto c = nb::class_<P>(m, "RotaryParams");
  c.def(nb::init<>());
  c.def_rw("device", &P::device).def_rw("device_index", &P::device_index).def_rw("dtype", &P::dtype);
  FLASH_ROTARY_PTR_FIELD(c, P, x);
  c.def_rw("x_batch_stride", &P::x_batch_stride)
      .def_rw("x_row_stride", &P::x_row_stride)
      .def_rw("x_head_stride", &P::x_head_stride);
  FLASH_ROTARY_PTR_FIELD(c, P, out);
  c.def_rw("out_batch_stride", &P::out_batch_stride)
      .def_rw("out_row_stride", &P::out_row_stride)
      .def_rw("out_head_stride", &P::out_head_stride);
  c.def_rw("batch", &P::batch)
      .def_rw("seqlen", &P::seqlen)
      .def_rw("nheads", &P::nheads)
      .def_rw("headdim", &P::headdim);
  FLASH_ROTARY_PTR_FIELD(c, P, cu_seqlens);
  FLASH_ROTARY_PTR_FIELD(c, P, cos);
  FLASH_ROTARY_PTR_FIELD(c, P, sin);
  c.def_rw("cos_dtype", &P::cos_dtype)
      .def_rw("cos_row_stride", &P::cos_row_stride)
      .def_rw("sin_row_stride", &P::sin_row_stride)
      .def_rw("seqlen_ro", &P::seqlen_ro)
      .def_rw("rotary_dim", &P::rotary_dim)
      .def_rw("interleaved", &P::interleaved)
      .def_rw("conjugate", &P::conjugate)
      .def_rw("seqlen_offset", &P::seqlen_offset);
  FLASH_ROTARY_PTR_FIELD(c, P, seqlen_offsets);
}

#undef FLASH_ROTARY_PTR_FIELD

}  // namespace

void bind_rotary(nb::module_& m) {
  bind_rotary_params(m);
  m.def(
      "apply_rotary",
      [](flash::RotaryParams& p, uintptr_t stream) { flash::apply_rotary(p, reinterpret_cast<void*>(stream)); },
      nb::arg("params"), nb::arg("stream") = 0, nb::call_guard<nb::gil_scoped_release>());
}
