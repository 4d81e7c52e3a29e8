// The few cuBLASLt entry points gemm_cublaslt.cu uses, resolved at run time with dlopen.
//
// Why not link libcublasLt: the CI and developer machines have nvcc but no cuBLAS, and on the GPU
// machine torch already carries (and has loaded) its own libcublasLt. So the build needs no cuBLAS
// at all, and at run time we reuse the process's copy. The declarations below restate the ABI of
// cublasLt.h (CUDA 12/13): opaque handles, the enum values we pass, the heuristic result layout.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace flash::ops::lt {

using Status = int;  // cublasStatus_t; 0 = CUBLAS_STATUS_SUCCESS
using Handle = void*;
using MatmulDesc = void*;
using MatrixLayout = void*;
using Preference = void*;

struct MatmulAlgo {
  uint64_t data[8];
};
struct HeuristicResult {
  MatmulAlgo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};

// Enum values of cublasLt.h / cublas_api.h / library_types.h.
constexpr int kComputeType32F = 68;  // CUBLAS_COMPUTE_32F
constexpr int kR32F = 0, kR16F = 2, kR16BF = 14;  // cudaDataType
constexpr int kOpN = 0, kOpT = 1;
constexpr int kDescTransA = 3, kDescTransB = 4, kDescEpilogue = 7, kDescBiasPointer = 8;
constexpr int kDescAuxPointer = 11, kDescAuxLd = 12;
constexpr int kPrefMaxWorkspaceBytes = 1;
constexpr int kPrefMinAlignA = 5, kPrefMinAlignB = 6, kPrefMinAlignC = 7, kPrefMinAlignD = 8;  // uint32_t bytes
constexpr int kEpiDefault = 1, kEpiReluBias = 6, kEpiBias = 4, kEpiReluAuxBias = 134, kEpiDReluBgrad = 152;
constexpr int kEpiGeluBias = 36, kEpiGeluAuxBias = 164, kEpiDGeluBgrad = 208, kEpiBgradB = 512;

struct Api {
  Status (*create)(Handle*);
  Status (*matmul_desc_create)(MatmulDesc*, int compute_type, int scale_type);
  Status (*matmul_desc_destroy)(MatmulDesc);
  Status (*matmul_desc_set)(MatmulDesc, int attr, const void* buf, size_t size);
  Status (*layout_create)(MatrixLayout*, int type, uint64_t rows, uint64_t cols, int64_t ld);
  Status (*layout_destroy)(MatrixLayout);
  Status (*pref_create)(Preference*);
  Status (*pref_destroy)(Preference);
  Status (*pref_set)(Preference, int attr, const void* buf, size_t size);
  Status (*heuristic)(Handle, MatmulDesc, MatrixLayout, MatrixLayout, MatrixLayout, MatrixLayout, Preference,
                      int requested, HeuristicResult* results, int* returned);
  Status (*matmul)(Handle, MatmulDesc, const void* alpha, const void* a, MatrixLayout, const void* b,
                   MatrixLayout, const void* beta, const void* c, MatrixLayout, void* d, MatrixLayout,
                   const MatmulAlgo*, void* workspace, size_t workspace_bytes, cudaStream_t);
};

// The resolved API, or nullptr when no libcublasLt could be loaded (the result is cached).
const Api* api();

}  // namespace flash::ops::lt
