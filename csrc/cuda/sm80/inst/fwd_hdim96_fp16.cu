// Instantiation: Ampere-class forward, head-dim bucket 96, fp16.
#include "cuda/sm80/fwd_launch.cuh"

namespace flash::sm80 {
template void launch_fwd<cutlass::half_t, 96>(const FwdParams&, cudaStream_t);
}  // namespace flash::sm80
