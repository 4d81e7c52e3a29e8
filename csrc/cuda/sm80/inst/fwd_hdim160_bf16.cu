// Instantiation: Ampere-class forward, head-dim bucket 160, bf16.
#include "cuda/sm80/fwd_launch.cuh"

namespace flash::sm80 {
template void launch_fwd<cutlass::bfloat16_t, 160>(const FwdParams&, cudaStream_t);
}  // namespace flash::sm80
