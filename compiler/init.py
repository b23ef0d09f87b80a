"""Initial values of params and state, reproducible from (seed, node name).

Each tensor draws from its own generator seeded by (seed, crc32(name)), so adding a node
to a graph does not change how the others start.
"""
from __future__ import annotations

import zlib

import numpy as np

from .errors import GraphError


def _fan_in(node):
    shape = node.attrs["shape"]
    fan_in = node.attrs.get("fan_in") or (shape[0] if shape else 1)
    return fan_in


def _uniform_fan_in(rng, node, shape):
    bound = 1.0 / np.sqrt(_fan_in(node))
    return rng.uniform(-bound, bound, size=shape)


def _kaiming_uniform(rng, node, shape):
    bound = np.sqrt(6.0 / _fan_in(node))
    return rng.uniform(-bound, bound, size=shape)


def _xavier_uniform(rng, node, shape):
    fan_out = shape[-1] if shape else 1
    bound = np.sqrt(6.0 / (_fan_in(node) + fan_out))
    return rng.uniform(-bound, bound, size=shape)


INITIALIZERS = {
    "zeros": lambda rng, node, shape: np.zeros(shape),
    "ones": lambda rng, node, shape: np.ones(shape),
    "uniform_fan_in": _uniform_fan_in,
    "kaiming_uniform": _kaiming_uniform,
    "kaiming_normal": lambda rng, node, shape: rng.normal(0.0, np.sqrt(2.0 / _fan_in(node)), size=shape),
    "xavier_uniform": _xavier_uniform,
    "normal": lambda rng, node, shape: rng.normal(0.0, node.attrs.get("std") or 1.0, size=shape),
}


def initial_value(node, seed) -> np.ndarray:
    """float32 start value of a param/state node (an explicit `value` wins over `init`)."""
    shape = tuple(node.attrs["shape"])
    if node.attrs.get("value") is not None:
        value = np.asarray(node.attrs["value"], dtype=np.float64)
        if value.shape != shape:
            raise GraphError(f"'value' has shape {value.shape}, but the node's shape is {shape}", node=node.name)
        return value.astype(np.float32)
    init = node.attrs.get("init", "zeros")
    if init not in INITIALIZERS:
        raise GraphError(f"unknown init {init!r} (known: {', '.join(sorted(INITIALIZERS))})", node=node.name)
    rng = np.random.default_rng([seed, zlib.crc32(node.name.encode())])
    return np.asarray(INITIALIZERS[init](rng, node, shape), dtype=np.float32)
