"""flash-attn 2.8 keeps these ops under flash_attn.ops.triton; here they are C++/CUDA kernels with the
same import paths (cross_entropy, layer_norm)."""
