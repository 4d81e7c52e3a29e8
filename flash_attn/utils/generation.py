"""State of incremental decoding, as flash-attn 2.8's flash_attn.utils.generation defines it.

MHA reads and updates these attributes: each layer keeps its kv cache in key_value_memory_dict under
its layer_idx; seqlen_offset is the number of tokens already in the cache (the same for every
sequence unless lengths_per_sample, an int32 tensor of per-sequence lengths, is given)."""

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class InferenceParams:
    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    batch_size_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)
    lengths_per_sample: Optional[torch.Tensor] = None

    def reset(self, max_seqlen: int, max_batch_size: int) -> None:
        """Starts a new generation: same caches, lengths back to zero."""
        self.max_seqlen = max_seqlen
        self.max_batch_size = max_batch_size
        self.seqlen_offset = 0
        if self.lengths_per_sample is not None:
            self.lengths_per_sample.zero_()
