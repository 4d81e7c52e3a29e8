// flash::gemm_epilogue on CUDA: one cublasLtMatmul with a fused epilogue (bias, GELU/ReLU with
// the pre-activation saved as aux, their backward with the bias gradient, or the bias gradient of
// a weight-gradient GEMM). cuBLASLt is loaded at run time (cublaslt_loader.h says why).
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

#include "flash/errors.h"
#include "ops/cuda/cublaslt_loader.h"
#include "ops/ops_backend.h"

namespace flash::ops {
namespace lt {
namespace {

template <typename F>
bool resolve(void* lib, const char* name, F*& fn) {
  fn = reinterpret_cast<F*>(dlsym(lib, name));
  return fn != nullptr;
}

const Api* load() {
  // The process's copy first (torch loads libcublasLt before any of our calls), then the loader path.
  const char* names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
  void* lib = nullptr;
  for (const char* n : names)
    if ((lib = dlopen(n, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD)) != nullptr) break;
  if (lib == nullptr)
    for (const char* n : names)
      if ((lib = dlopen(n, RTLD_NOW | RTLD_GLOBAL)) != nullptr) break;
  if (lib == nullptr) return nullptr;
  static Api a;
  bool ok = resolve(lib, "cublasLtCreate", a.create) && resolve(lib, "cublasLtMatmulDescCreate", a.matmul_desc_create) &&
            resolve(lib, "cublasLtMatmulDescDestroy", a.matmul_desc_destroy) &&
            resolve(lib, "cublasLtMatmulDescSetAttribute", a.matmul_desc_set) &&
            resolve(lib, "cublasLtMatrixLayoutCreate", a.layout_create) &&
            resolve(lib, "cublasLtMatrixLayoutDestroy", a.layout_destroy) &&
            resolve(lib, "cublasLtMatmulPreferenceCreate", a.pref_create) &&
            resolve(lib, "cublasLtMatmulPreferenceDestroy", a.pref_destroy) &&
            resolve(lib, "cublasLtMatmulPreferenceSetAttribute", a.pref_set) &&
            resolve(lib, "cublasLtMatmulAlgoGetHeuristic", a.heuristic) && resolve(lib, "cublasLtMatmul", a.matmul);
  return ok ? &a : nullptr;
}

}  // namespace

const Api* api() {
  static const Api* cached = load();
  return cached;
}

}  // namespace lt

namespace {

using lt::Status;

lt::Handle shared_handle(const lt::Api& a) {
  // One handle serves every device and stream (cuBLASLt handles carry no device state we use).
  static std::once_flag once;
  static lt::Handle h = nullptr;
  static Status st = 0;
  std::call_once(once, [&] { st = a.create(&h); });
  if (st != 0 || h == nullptr) throw DeviceError("gemm_epilogue: cublasLtCreate failed (status " + std::to_string(st) + ")");
  return h;
}

int lt_type(DType t) { return t == DType::kFloat32 ? lt::kR32F : t == DType::kFloat16 ? lt::kR16F : lt::kR16BF; }

int lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kBias: return lt::kEpiBias;
    case Epilogue::kGeluAuxBias: return lt::kEpiGeluAuxBias;
    case Epilogue::kReluAuxBias: return lt::kEpiReluAuxBias;
    case Epilogue::kDGeluBgrad: return lt::kEpiDGeluBgrad;
    case Epilogue::kDReluBgrad: return lt::kEpiDReluBgrad;
    case Epilogue::kBgradB: return lt::kEpiBgradB;
    case Epilogue::kGeluBias: return lt::kEpiGeluBias;
    case Epilogue::kReluBias: return lt::kEpiReluBias;
    default: return lt::kEpiDefault;
  }
}

// Owns the descriptors of one call so every exit path frees them.
struct Descriptors {
  const lt::Api& a;
  lt::MatmulDesc op = nullptr;
  lt::MatrixLayout la = nullptr, lb = nullptr, ld = nullptr;
  lt::Preference pref = nullptr;
  explicit Descriptors(const lt::Api& api) : a(api) {}
  ~Descriptors() {
    if (pref) a.pref_destroy(pref);
    if (ld) a.layout_destroy(ld);
    if (lb) a.layout_destroy(lb);
    if (la) a.layout_destroy(la);
    if (op) a.matmul_desc_destroy(op);
  }
};

// Largest power of two (<= 256) dividing the address.
uint32_t alignment(const void* ptr) {
  const auto v = reinterpret_cast<uintptr_t>(ptr);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

void check(Status st, const char* what) {
  if (st != 0) throw DeviceError(std::string("gemm_epilogue: ") + what + " failed (cuBLAS status " + std::to_string(st) + ")");
}

}  // namespace

bool cublaslt_loaded() { return lt::api() != nullptr; }

bool gemm_epilogue_cuda(const GemmParams& p, void* stream) {
  const lt::Api* a = lt::api();
  if (a == nullptr) throw DeviceError("gemm_epilogue: libcublasLt could not be loaded");
  if (cudaSetDevice(p.device_index) != cudaSuccess) throw DeviceError("gemm_epilogue: cudaSetDevice failed");
  if (p.m == 0 || p.n == 0) return true;
  const lt::Handle h = shared_handle(*a);
  Descriptors d(*a);
  const int type = lt_type(p.dtype);
  check(a->matmul_desc_create(&d.op, lt::kComputeType32F, lt::kR32F), "cublasLtMatmulDescCreate");
  const int32_t ta = p.trans_a ? lt::kOpT : lt::kOpN, tb = p.trans_b ? lt::kOpT : lt::kOpN;
  check(a->matmul_desc_set(d.op, lt::kDescTransA, &ta, sizeof(ta)), "set TRANSA");
  check(a->matmul_desc_set(d.op, lt::kDescTransB, &tb, sizeof(tb)), "set TRANSB");
  const int32_t epi = lt_epilogue(p.epilogue);
  check(a->matmul_desc_set(d.op, lt::kDescEpilogue, &epi, sizeof(epi)), "set EPILOGUE");
  if (p.epilogue != Epilogue::kNone) {
    const void* bias = p.bias;
    check(a->matmul_desc_set(d.op, lt::kDescBiasPointer, &bias, sizeof(bias)), "set BIAS_POINTER");
  }
  if (p.aux != nullptr && (p.epilogue == Epilogue::kGeluAuxBias || p.epilogue == Epilogue::kReluAuxBias ||
                           p.epilogue == Epilogue::kDGeluBgrad || p.epilogue == Epilogue::kDReluBgrad)) {
    const void* aux = p.aux;
    const int64_t aux_ld = p.aux_ld;
    check(a->matmul_desc_set(d.op, lt::kDescAuxPointer, &aux, sizeof(aux)), "set EPILOGUE_AUX_POINTER");
    check(a->matmul_desc_set(d.op, lt::kDescAuxLd, &aux_ld, sizeof(aux_ld)), "set EPILOGUE_AUX_LD");
  }
  // Stored shapes: op(A) is m x k, so A itself is k x m when transposed; likewise B.
  check(a->layout_create(&d.la, type, p.trans_a ? p.k : p.m, p.trans_a ? p.m : p.k, p.lda), "layout A");
  check(a->layout_create(&d.lb, type, p.trans_b ? p.n : p.k, p.trans_b ? p.k : p.n, p.ldb), "layout B");
  check(a->layout_create(&d.ld, type, p.m, p.n, p.ldd), "layout D");
  check(a->pref_create(&d.pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = static_cast<uint64_t>(p.workspace != nullptr ? p.workspace_bytes : 0);
  check(a->pref_set(d.pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof(ws)), "set MAX_WORKSPACE_BYTES");
  // The heuristic assumes 256-byte aligned buffers unless told otherwise; views of torch tensors
  // may be less aligned, so state the real alignment (an unaligned pointer gets a slower kernel).
  const uint32_t align_a = alignment(p.a), align_b = alignment(p.b), align_d = alignment(p.d);
  check(a->pref_set(d.pref, lt::kPrefMinAlignA, &align_a, sizeof(align_a)), "set MIN_ALIGNMENT_A");
  check(a->pref_set(d.pref, lt::kPrefMinAlignB, &align_b, sizeof(align_b)), "set MIN_ALIGNMENT_B");
  check(a->pref_set(d.pref, lt::kPrefMinAlignC, &align_d, sizeof(align_d)), "set MIN_ALIGNMENT_C");
  check(a->pref_set(d.pref, lt::kPrefMinAlignD, &align_d, sizeof(align_d)), "set MIN_ALIGNMENT_D");
  lt::HeuristicResult result{};
  int found = 0;
  const Status hs = a->heuristic(h, d.op, d.la, d.lb, d.ld, d.ld, d.pref, 1, &result, &found);
  if (hs != 0 || found == 0) return false;  // no kernel for this epilogue / shape / alignment
  check(a->matmul(h, d.op, &p.alpha, p.a, d.la, p.b, d.lb, &p.beta, p.d, d.ld, p.d, d.ld, &result.algo,
                  p.workspace, ws, static_cast<cudaStream_t>(stream)),
        "cublasLtMatmul");
  return true;
}

}  // namespace flash::ops
