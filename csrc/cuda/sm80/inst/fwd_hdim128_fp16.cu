// Instantiation: Ampere-class forward, head-dim bucket 128, fp16.
#include "cuda/sm80/fwd_launch.cuh"

namespace flash::sm80 {
template void launch_fwd<cutlass::half_t, 128>(const FwdParams&, cudaStream_t);
}  // namespace flash::sm80
