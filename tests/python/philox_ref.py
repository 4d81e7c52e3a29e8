"""Python (numpy) replica of csrc/common/philox.h: Philox4x32-10 and the dropout keep-mask mapping.

Lets tests regenerate the exact mask a forward used, from its rng_state {seed, offset}.
"""

import numpy as np
import torch

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(x, y, z, w, key0, key1):
    """Vectorised Philox4x32-10 over uint32 arrays; key0/key1 are python ints (scalars)."""
    x, y, z, w = (np.asarray(a, dtype=np.uint64) for a in (x, y, z, w))
    k0, k1 = key0 & 0xFFFFFFFF, key1 & 0xFFFFFFFF
    for _ in range(10):
        p0 = _M0 * x  # < 2^64: exact in uint64
        p1 = _M1 * z
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK32
        x, y, z, w = hi1 ^ y ^ np.uint64(k0), lo1, hi0 ^ w ^ np.uint64(k1), lo0
        k0 = (k0 + _W0) & 0xFFFFFFFF
        k1 = (k1 + _W1) & 0xFFFFFFFF
    return x, y, z, w


def keep_threshold(p: float) -> int:
    t = (1.0 - float(np.float32(p))) * 4294967296.0  # the C++ takes p as float
    return 0xFFFFFFFF if t >= 4294967295.0 else int(t)


def split_rng_state(rng_state: torch.Tensor):
    """{seed, offset} as unsigned 64-bit python ints from the int64 rng_state tensor."""
    seed, offset = (int(x) & 0xFFFFFFFFFFFFFFFF for x in rng_state.cpu().tolist())
    return seed, offset


def keep_mask(seed: int, offset: int, bh: int, seqlen_q: int, seqlen_k: int, p: float) -> np.ndarray:
    """Boolean (seqlen_q, seqlen_k) keep mask of head bh = b * nheads + h (positions in-sequence)."""
    rows = np.arange(seqlen_q, dtype=np.uint64)[:, None]
    cols = np.arange(seqlen_k, dtype=np.uint64)[None, :]
    rows, cols = np.broadcast_arrays(rows, cols)
    cx = cols >> np.uint64(1)
    cy = (rows >> np.uint64(4)) * np.uint64(8) + (rows & np.uint64(7))
    cz = np.full_like(rows, bh)
    cw = np.full_like(rows, offset & 0xFFFFFFFF)
    key0 = seed & 0xFFFFFFFF
    key1 = ((seed >> 32) + (offset >> 32)) & 0xFFFFFFFF
    words = philox4x32_10(cx, cy, cz, cw, key0, key1)
    index = ((rows >> np.uint64(3)) & np.uint64(1)) * np.uint64(2) + (cols & np.uint64(1))
    word = np.choose(index.astype(np.int64), words)
    return word < np.uint64(keep_threshold(p))


def keep_mask_batch(rng_state, batch, nheads, seqlen_q, seqlen_k, p) -> torch.Tensor:
    """(batch, nheads, seqlen_q, seqlen_k) bool keep mask of a fixed-length forward."""
    seed, offset = split_rng_state(rng_state)
    out = np.empty((batch, nheads, seqlen_q, seqlen_k), dtype=bool)
    for b in range(batch):
        for h in range(nheads):
            out[b, h] = keep_mask(seed, offset, b * nheads + h, seqlen_q, seqlen_k, p)
    return torch.from_numpy(out)


def keep_mask_seq(rng_state, b, nheads, seqlen_q, seqlen_k, p) -> torch.Tensor:
    """(nheads, seqlen_q, seqlen_k) keep mask of sequence b of a varlen forward."""
    seed, offset = split_rng_state(rng_state)
    return torch.from_numpy(np.stack([keep_mask(seed, offset, b * nheads + h, seqlen_q, seqlen_k, p)
                                      for h in range(nheads)]))
