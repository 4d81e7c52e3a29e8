"""Utilities that accompany the modules (generation state for incremental decoding)."""
