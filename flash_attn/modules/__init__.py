"""nn.Module building blocks of the flash_attn package (attention modules)."""

from .mha import MHA, CrossAttention, FlashCrossAttention, FlashSelfAttention, SelfAttention

__all__ = ["MHA", "CrossAttention", "FlashCrossAttention", "FlashSelfAttention", "SelfAttention"]
