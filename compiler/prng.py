"""The on-device PRNG, bit-identical to runtime_c/tt_prng.h (SPEC 7).

xorshift32 (Marsaglia 2003: shifts 13, 17, 5), seeded per stream through murmur3's fmix32 so
that nearby seeds give unrelated sequences and the state is never 0. Bounded integers use
rejection of the low `2^32 mod n` values (unbiased); uniform floats take the top 24 bits, so
they are exact float32 values in [0, 1).
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF
STREAM_SAMPLER = 1  # channel selection at epoch boundaries
STREAM_ROUNDING = 2  # stochastic rounding of weight updates
STREAM_SHUFFLE = 3  # data order (host tools only)


def fmix32(h: int) -> int:
    h &= MASK32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK32
    h ^= h >> 16
    return h


def seed_state(seed: int, stream: int) -> int:
    s = fmix32((seed & MASK32) ^ fmix32(stream * 0x9E3779B9))
    return s if s != 0 else 0x6D2B79F5


class XorShift32:
    def __init__(self, seed: int, stream: int):
        self.state = seed_state(seed, stream)

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & MASK32
        x ^= x >> 17
        x ^= (x << 5) & MASK32
        self.state = x
        return x

    def bounded(self, n: int) -> int:
        """Uniform integer in [0, n), unbiased (n >= 1)."""
        threshold = (1 << 32) % n
        while True:
            r = self.next()
            if r >= threshold:
                return r % n

    def uniform(self) -> np.float32:
        """Uniform float32 in [0, 1) with 24 random bits."""
        return np.float32((self.next() >> 8) * (1.0 / (1 << 24)))

    def uniforms(self, n: int) -> np.ndarray:
        """n uniforms, drawn in order."""
        out = np.empty(n, np.uint32)
        x = self.state
        for i in range(n):
            x ^= (x << 13) & MASK32
            x ^= x >> 17
            x ^= (x << 5) & MASK32
            out[i] = x
        self.state = x
        return (out >> 8).astype(np.float32) * np.float32(1.0 / (1 << 24))
