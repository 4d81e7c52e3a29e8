// Fused transformer building blocks (flash-attn 2.8's ops): cross-entropy, (RMS/Layer)Norm with
// dropout + residual, and a cuBLASLt GEMM with fused epilogues. Torch-free: raw pointers, element
// strides and a stream, like api.h. Every entry point validates its params (flash::Error naming the
// argument) and runs on p.device; CUDA launches are asynchronous on `stream` (a cudaStream_t).
#pragma once

#include <cstdint>

#include "flash/errors.h"
#include "flash/types.h"

namespace flash {

// ---- cross-entropy ----------------------------------------------------------------------------
// logits (rows, vocab) with unit column stride; row r's label is labels[r] (int64, a class index of
// the FULL vocabulary). With a vocab-parallel split this call sees one shard: columns
// [vocab_start, vocab_start + vocab) of a total_classes-wide vocabulary.
// z = logit_scale * logits. Per row (fp32): lse = logsumexp(z over the shard),
//   target = z[label] if the label is in the shard else 0, sum_z = sum of z over the shard.
// Unsplit (vocab_start == 0, vocab == total_classes) the forward also writes
//   loss = lse - (1 - eps) * target - eps / total_classes * sum_z + lse_square_scale * lse^2
//   z_loss = lse_square_scale * lse^2     (both 0 for a row whose label == ignore_index).
// A split caller combines the shards' lse / target / sum_z itself and passes the global lse to the
// backward, which writes (rows with label == ignore_index get 0)
//   dlogits = dloss * logit_scale * (softmax_j * (1 + 2 * lse_square_scale * lse)
//                                     - (1 - eps) * [j == label] - eps / total_classes).
struct CrossEntropyParams {
  Device device = Device::kCPU;
  int device_index = 0;
  DType dtype = DType::kFloat32;  // of logits and dlogits

  const void* logits = nullptr;
  int64_t logits_row_stride = 0;
  const int64_t* labels = nullptr;  // (rows,), contiguous
  int64_t rows = 0;
  int64_t vocab = 0;          // columns in this shard
  int64_t vocab_start = 0;    // class index of column 0
  int64_t total_classes = 0;  // 0 = vocab (no split)

  float label_smoothing = 0.f;
  float logit_scale = 1.f;
  float lse_square_scale = 0.f;
  int64_t ignore_index = -100;

  // Forward outputs, fp32 (rows,), contiguous. lse is required; the others may be null.
  float* lse = nullptr;
  float* target = nullptr;
  float* sum_z = nullptr;
  float* loss = nullptr;    // unsplit only
  float* z_loss = nullptr;  // unsplit only

  // Backward: dloss fp32 (rows,) with element stride dloss_stride (0 broadcasts one value);
  // lse = the global lse (input); dlogits may equal logits (in place, same row stride).
  const float* dloss = nullptr;
  int64_t dloss_stride = 1;
  void* dlogits = nullptr;
  int64_t dlogits_row_stride = 0;
};

void cross_entropy_fwd(CrossEntropyParams& p, void* stream = nullptr);
void cross_entropy_bwd(CrossEntropyParams& p, void* stream = nullptr);

// ---- dropout + add + LayerNorm / RMSNorm ------------------------------------------------------
// Per row r of `rows` (every tensor (rows, hidden) with unit column stride, its own row stride):
//   a  = dropout(x0[r'] * rowscale[r] * colscale)        r' = x0_subset[r] - 1 with a subset, else r
//                                                        (a = 0 when r' < 0)
//   a += dropout(x1[r])                                   (optional second input, own mask)
//   a += residual[r]                                      (optional)
//   residual_out[r] = a                                   (optional; dtype residual_dtype)
//   mean = mean(a) (0 for RMSNorm), rstd = 1 / sqrt(mean((a - mean)^2) + eps)   (fp32, saved)
//   y[r''] = (a - mean) * rstd * weight + bias,  y1 likewise with weight1 / bias1 (optional)
//                                                        r'' = out_subset[r] - 1 (skipped if < 0)
// Dropout keeps with probability 1 - p and scales by 1 / (1 - p); the mask comes from Philox
// (norm_dropout_keep in csrc/ops/norm_dropout.h) so CPU and GPU agree for one (seed, offset), and
// the backward regenerates it instead of storing it. dmask / dmask1 (uint8, rows x hidden) are
// written when non-null.
enum class NormKind : int32_t { kLayerNorm = 0, kRMSNorm = 1 };

struct NormParams {
  Device device = Device::kCPU;
  int device_index = 0;
  NormKind kind = NormKind::kLayerNorm;
  int64_t rows = 0;
  int64_t hidden = 0;
  float eps = 1e-5f;

  // Dtypes: x0/x1/dx0/dx1 use in_dtype, residual/residual_out/dresidual residual_dtype, y/y1/dy/dy1
  // out_dtype, weight/bias/colscale and their grads weight_dtype.
  DType in_dtype = DType::kFloat32, residual_dtype = DType::kFloat32;
  DType out_dtype = DType::kFloat32, weight_dtype = DType::kFloat32;

  const void* x0 = nullptr;
  int64_t x0_row_stride = 0;
  const void* x1 = nullptr;
  int64_t x1_row_stride = 0;
  const void* residual = nullptr;
  int64_t residual_row_stride = 0;
  const void* weight = nullptr;  // (hidden,); required
  const void* bias = nullptr;    // optional
  const void* weight1 = nullptr; // optional second output
  const void* bias1 = nullptr;
  const float* rowscale = nullptr;  // fp32 (rows,), optional
  float rowscale_const = 1.f;       // multiplies x0 as well (dropout_add_layer_norm_subset)
  const void* colscale = nullptr;   // (hidden,), optional
  const int32_t* x0_subset = nullptr;   // (rows,), 1-based rows of x0, 0 = none
  const int32_t* out_subset = nullptr;  // (rows,), 1-based rows of y / y1, 0 = not written

  float dropout_p = 0.f;
  uint64_t seed = 0, offset = 0;

  // Forward outputs.
  void* y = nullptr;
  int64_t y_row_stride = 0;
  void* y1 = nullptr;
  int64_t y1_row_stride = 0;
  void* residual_out = nullptr;
  int64_t residual_out_row_stride = 0;
  float* mean = nullptr;  // (rows,) fp32, LayerNorm only
  float* rstd = nullptr;  // (rows,) fp32, required
  uint8_t* dmask = nullptr;   // optional
  uint8_t* dmask1 = nullptr;  // optional

  // Backward. Inputs: a (the saved residual_out: the pre-norm sum, residual_dtype, in
  // residual_out / residual_out_row_stride), mean, rstd, dy (rows of y: with out_subset only the
  // rows r'' exist), optional dy1, optional dresidual_out (grad flowing into residual_out, prenorm).
  const void* dy = nullptr;
  int64_t dy_row_stride = 0;
  const void* dy1 = nullptr;
  int64_t dy1_row_stride = 0;
  const void* dresidual_out = nullptr;
  int64_t dresidual_out_row_stride = 0;
  // Outputs: dx0 (x0's rows: zero-filled by the caller first when x0_subset is set), dx1 (given
  // iff the forward had x1; x1 itself is not read),
  // dresidual (optional), dweight / dbias / dweight1 / dbias1 / dcolscale ((hidden,), fp32).
  void* dx0 = nullptr;
  int64_t dx0_row_stride = 0;
  void* dx1 = nullptr;
  int64_t dx1_row_stride = 0;
  void* dresidual = nullptr;
  int64_t dresidual_row_stride = 0;
  float* dweight = nullptr;
  float* dbias = nullptr;
  float* dweight1 = nullptr;
  float* dbias1 = nullptr;
  float* dcolscale = nullptr;
  // Scratch for the per-block partial column sums (norm_bwd_workspace_size bytes).
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
};

void norm_fwd(NormParams& p, void* stream = nullptr);
int64_t norm_bwd_workspace_size(const NormParams& p);
void norm_bwd(NormParams& p, void* stream = nullptr);

// ---- GEMM with a fused epilogue (cuBLASLt; CUDA only) -----------------------------------------
// Column-major, cuBLAS conventions: D (m x n, ldd) = alpha * op(A) (m x k) * op(B) (k x n)
// + beta * D, then the epilogue. Row-major torch callers pass the transposed problem
// (see flash_attn/ops/fused_dense.py). A, B, D share dtype (fp16 / bf16 / fp32); bias and aux too.
enum class Epilogue : int32_t {
  kNone = 0,
  kBias = 1,          // D += bias[row]                          (bias: m)
  kGeluAuxBias = 2,   // aux = D + bias; D = gelu_tanh(aux)      (aux: m x n, ld aux_ld)
  kReluAuxBias = 3,   // aux = relu bit mask of D + bias; D = relu(D + bias)
  kDGeluBgrad = 4,    // D = AB * gelu'(aux); bias = sum over columns of D  (bias: m, output)
  kDReluBgrad = 5,    // D = AB * relu'(aux bit mask); bias = column sum
  kBgradB = 6,        // bias = sum over k of op(B) (bias: n, output)
  kGeluBias = 7,      // D = gelu_tanh(D + bias), no aux
  kReluBias = 8,      // D = relu(D + bias), no aux
};

struct GemmParams {
  int device_index = 0;
  DType dtype = DType::kBFloat16;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;
  int64_t ldd = 0;
  float alpha = 1.f, beta = 0.f;
  Epilogue epilogue = Epilogue::kNone;
  void* bias = nullptr;  // input (kBias, k*AuxBias, k*Bias) or output (k*Bgrad*)
  void* aux = nullptr;
  int64_t aux_ld = 0;
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
};

// Returns false (running nothing) when cuBLASLt has no algorithm for this epilogue/shape, so the
// caller can fall back to a plain GEMM plus separate ops. Throws DeviceError on runtime failures or
// when built without CUDA.
bool gemm_epilogue(const GemmParams& p, void* stream = nullptr);

// Whether gemm_epilogue can run: built with CUDA and libcublasLt (loaded at run time, the copy the
// process already has, e.g. torch's, is preferred) was found.
bool gemm_epilogue_available();

}  // namespace flash
