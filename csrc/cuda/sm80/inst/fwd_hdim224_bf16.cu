// Instantiation: Ampere-class forward, head-dim bucket 224, bf16.
#include "cuda/sm80/fwd_launch.cuh"

namespace flash::sm80 {
template void launch_fwd<cutlass::bfloat16_t, 224>(const FwdParams&, cudaStream_t);
}  // namespace flash::sm80
