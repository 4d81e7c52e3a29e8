"""Fused transformer building blocks (flash-attn 2.8's flash_attn.ops): layer_norm / rms_norm
(dropout + add + norm), fused_dense (cuBLASLt GEMM with bias / GELU epilogues), and under
flash_attn.ops.triton the functional layer_norm_fn / rms_norm_fn and cross_entropy_loss. The
kernels are C++/CUDA (csrc/ops); flash-attn uses Triton for some of them."""
