"""One call of each kernel family at a training shape, for profiling under Nsight Compute:

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \
        python3 benchmarks/profile_cases.py sm80 128

Arguments: cuda path (sm80|sm90|auto), head dim, [causal 0|1]. Runs a warm-up, then one forward and one
backward at 16K tokens x 2048 model dim (bf16)."""

import sys

import torch

import flash_attn
from flash_attn import flash_attn_func

path, hdim = sys.argv[1], int(sys.argv[2])
causal = len(sys.argv) > 3 and sys.argv[3] == "1"
flash_attn.set_cuda_path(path)
seqlen, nheads = 4096, 2048 // hdim
shape = (16384 // seqlen, seqlen, nheads, hdim)
q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
for _ in range(2):
    out = flash_attn_func(q, k, v, causal=causal)
    out.backward(torch.randn_like(out))
torch.cuda.synchronize()
print("profiled", path, hdim, "causal" if causal else "", flash_attn.last_impl())
