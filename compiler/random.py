"""The counter-based generator of templates/kernels/random.c.j2, in NumPy, bit for bit.

Used by the reference interpreter for dropout masks and by fit's shuffle.
"""
from __future__ import annotations

import zlib

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
KEY_MULT = np.uint64(0xD6E8FEB86659FD93)


def mix64(z):
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream(seed, step, key):
    with np.errstate(over="ignore"):
        base = np.uint64(seed) + GOLDEN * (np.uint64(step) + np.uint64(1))
        return mix64(base) ^ (np.uint64(key) * KEY_MULT)


def keep_mask(seed, step, key, count, p, first=0):
    """Booleans for elements first..first+count-1: True where the element survives dropout(p)."""
    index = np.arange(first, first + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(stream(seed, step, key) + GOLDEN * index) >> np.uint64(32)
    return bits >= np.uint64(dropout_threshold(p))


SHUFFLE_KEY = 0x5348_5546  # "SHUF": the stream of fit's shuffles


def shuffled_order(seed, epoch, rows):
    """The permutation nncc_fit_epoch uses for an epoch (Fisher-Yates, backwards)."""
    index = np.arange(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        draws = mix64(stream(seed, epoch, SHUFFLE_KEY) + GOLDEN * index)
    order = np.arange(rows, dtype=np.int64)
    for i in range(rows - 1, 0, -1):
        j = int(draws[i] % np.uint64(i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def dropout_threshold(p) -> int:
    return min(int(round(float(p) * 2**32)), 2**32)


def key_of(name: str) -> int:
    """The 32-bit key of a mask stream, from the dropout node's name."""
    return zlib.crc32(name.encode())
