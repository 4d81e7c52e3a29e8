// Instantiation: Ampere-class forward, head-dim bucket 160, fp16.
#include "cuda/sm80/fwd_launch.cuh"

namespace flash::sm80 {
template void launch_fwd<cutlass::half_t, 160>(const FwdParams&, cudaStream_t);
}  // namespace flash::sm80
