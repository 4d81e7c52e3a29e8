// Entry points of include/flash/ops.h: argument validation, defaults, dispatch to CPU or CUDA.
#include <string>

#include "flash/errors.h"
#include "flash/ops.h"
#include "ops/ops_backend.h"

namespace flash {
namespace {

std::string str(int64_t v) { return std::to_string(v); }

void check_device(Device d) {
  check_arg(d == Device::kCPU || d == Device::kCUDA, "device", "must be cpu or cuda");
}

[[noreturn]] void no_cuda(const char* what) {
  throw DeviceError(std::string(what) + ": the tensors are on CUDA but flash_attn was built without CUDA");
}

void validate(CrossEntropyParams& p, bool backward) {
  check_device(p.device);
  check_arg(p.rows >= 0, "logits", "rows must be >= 0, got " + str(p.rows));
  check_arg(p.vocab > 0, "logits", "must have at least one column, got " + str(p.vocab));
  if (p.total_classes == 0) p.total_classes = p.vocab;
  check_arg(p.vocab_start >= 0 && p.vocab_start + p.vocab <= p.total_classes, "vocab_start",
            "the shard [" + str(p.vocab_start) + ", " + str(p.vocab_start + p.vocab) +
                ") must lie inside total_classes (" + str(p.total_classes) + ")");
  check_arg(p.label_smoothing >= 0.f && p.label_smoothing <= 1.f, "label_smoothing", "must be in [0, 1]");
  if (p.rows == 0) return;
  check_arg(p.logits != nullptr, "logits", "must not be null");
  check_arg(p.logits_row_stride >= p.vocab || p.rows == 1, "logits",
            "row stride (" + str(p.logits_row_stride) + ") must be >= vocab (" + str(p.vocab) + ")");
  check_arg(p.labels != nullptr, "labels", "must not be null");
  check_arg(p.lse != nullptr, "lse", "must not be null");
  if (!backward) {
    const bool split = p.vocab != p.total_classes;
    check_arg(!split || (p.loss == nullptr && p.z_loss == nullptr), "loss",
              "is only computed without a vocab split (combine the shards' lse/target/sum_z instead)");
    return;
  }
  check_arg(p.dloss != nullptr, "dloss", "must not be null");
  check_arg(p.dloss_stride >= 0, "dloss", "stride must be >= 0");
  check_arg(p.dlogits != nullptr, "dlogits", "must not be null");
  if (p.dlogits_row_stride == 0) p.dlogits_row_stride = p.vocab;
  check_arg(p.dlogits_row_stride >= p.vocab || p.rows == 1, "dlogits", "row stride must be >= vocab");
  check_arg(p.dlogits != p.logits || p.dlogits_row_stride == p.logits_row_stride, "dlogits",
            "in place (dlogits == logits) needs equal row strides");
}

void validate(NormParams& p, bool backward) {
  check_device(p.device);
  check_arg(p.rows >= 0, "x", "rows must be >= 0, got " + str(p.rows));
  check_arg(p.hidden > 0, "x", "hidden size must be > 0, got " + str(p.hidden));
  check_arg(p.hidden <= 65536, "x", "hidden size must be <= 65536, got " + str(p.hidden));
  check_arg(p.eps >= 0.f, "eps", "must be >= 0");
  check_arg(p.dropout_p >= 0.f && p.dropout_p < 1.f, "dropout_p", "must be in [0, 1)");
  check_arg(p.weight != nullptr, "weight", "must not be null");
  check_arg(p.bias1 == nullptr || p.weight1 != nullptr, "bias1", "needs weight1");
  check_arg(p.x0_subset == nullptr || p.rowscale == nullptr, "rowscale",
            "cannot be combined with x0_subset (use rowscale_const)");
  check_arg(p.rstd != nullptr, "rstd", "must not be null");
  check_arg(p.kind == NormKind::kRMSNorm || p.mean != nullptr, "mean", "must not be null for LayerNorm");
  if (p.rows == 0) return;
  check_arg(p.x0 != nullptr, "x0", "must not be null");
  if (!backward) {
    check_arg(p.y != nullptr, "y", "must not be null");
    check_arg(p.weight1 == nullptr || p.y1 != nullptr, "y1", "must not be null when weight1 is given");
    return;
  }
  check_arg(p.residual_out != nullptr, "residual_out", "(the saved pre-norm sum) must not be null");
  check_arg(p.dy != nullptr, "dy", "must not be null");
  check_arg(p.weight1 == nullptr || p.dy1 != nullptr, "dy1", "must not be null when weight1 is given");
  check_arg(p.dx0 != nullptr, "dx0", "must not be null");
  check_arg(p.dweight != nullptr, "dweight", "must not be null");
  check_arg(p.bias == nullptr || p.dbias != nullptr, "dbias", "must not be null when bias is given");
  check_arg(p.weight1 == nullptr || p.dweight1 != nullptr, "dweight1", "must not be null");
  check_arg(p.bias1 == nullptr || p.dbias1 != nullptr, "dbias1", "must not be null");
  check_arg(p.colscale == nullptr || p.dcolscale != nullptr, "dcolscale", "must not be null");
  check_arg(p.colscale == nullptr || p.x0_subset == nullptr, "colscale",
            "gradient with x0_subset is not supported");
}

}  // namespace

void cross_entropy_fwd(CrossEntropyParams& p, void* stream) {
  validate(p, false);
  if (p.rows == 0) return;
  if (p.device == Device::kCPU) return ops::cross_entropy_fwd_cpu(p);
#if defined(FLASH_ATTN_WITH_CUDA)
  ops::cross_entropy_fwd_cuda(p, stream);
#else
  (void)stream;
  no_cuda("cross_entropy_fwd");
#endif
}

void cross_entropy_bwd(CrossEntropyParams& p, void* stream) {
  validate(p, true);
  if (p.rows == 0) return;
  if (p.device == Device::kCPU) return ops::cross_entropy_bwd_cpu(p);
#if defined(FLASH_ATTN_WITH_CUDA)
  ops::cross_entropy_bwd_cuda(p, stream);
#else
  (void)stream;
  no_cuda("cross_entropy_bwd");
#endif
}

void norm_fwd(NormParams& p, void* stream) {
  validate(p, false);
  if (p.rows == 0) return;
  if (p.device == Device::kCPU) return ops::norm_fwd_cpu(p);
#if defined(FLASH_ATTN_WITH_CUDA)
  ops::norm_fwd_cuda(p, stream);
#else
  (void)stream;
  no_cuda("norm_fwd");
#endif
}

int64_t norm_bwd_workspace_size(const NormParams& p) {
  if (p.device == Device::kCPU || p.rows == 0) return 0;
#if defined(FLASH_ATTN_WITH_CUDA)
  return ops::norm_bwd_workspace_size_cuda(p);
#else
  return 0;
#endif
}

void norm_bwd(NormParams& p, void* stream) {
  validate(p, true);
  if (p.device == Device::kCPU) return ops::norm_bwd_cpu(p);
#if defined(FLASH_ATTN_WITH_CUDA)
  check_arg(p.rows == 0 || p.workspace_bytes >= ops::norm_bwd_workspace_size_cuda(p), "workspace",
            "needs norm_bwd_workspace_size(params) bytes");
  ops::norm_bwd_cuda(p, stream);
#else
  (void)stream;
  no_cuda("norm_bwd");
#endif
}

bool gemm_epilogue(const GemmParams& p, void* stream) {
  check_arg(p.m >= 0 && p.n >= 0 && p.k >= 0, "m/n/k", "must be >= 0");
  check_arg(p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16 || p.dtype == DType::kFloat32,
            "dtype", "must be float16, bfloat16 or float32");
  check_arg(p.a != nullptr && p.b != nullptr && p.d != nullptr, "a/b/d", "must not be null");
  const bool needs_bias = p.epilogue != Epilogue::kNone;
  check_arg(!needs_bias || p.bias != nullptr, "bias", "must not be null for this epilogue");
  const bool needs_aux = p.epilogue == Epilogue::kGeluAuxBias || p.epilogue == Epilogue::kReluAuxBias ||
                         p.epilogue == Epilogue::kDGeluBgrad || p.epilogue == Epilogue::kDReluBgrad;
  check_arg(!needs_aux || (p.aux != nullptr && p.aux_ld > 0), "aux", "must be given for this epilogue");
#if defined(FLASH_ATTN_WITH_CUDA)
  return ops::gemm_epilogue_cuda(p, stream);
#else
  (void)stream;
  no_cuda("gemm_epilogue");
#endif
}

bool gemm_epilogue_available() {
#if defined(FLASH_ATTN_WITH_CUDA)
  return ops::cublaslt_loaded();
#else
  return false;
#endif
}

}  // namespace flash
