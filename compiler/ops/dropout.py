"""Inverted dropout: in train, y = x * mask / (1 - p); in eval, the identity.

The mask is drawn from the counter-based generator (compiler/random.py) at (seed, step,
key, element), so the compiled step and the reference draw the same mask, and the
gradient (the same op applied to gy, same key) re-derives it instead of storing it.
"""
import numpy as np

from ..ir import BATCH, numel
from ..random import dropout_threshold, keep_mask, key_of
from .registry import ELEMENTWISE, OpDef, register, same_shape, shape_error


def _key(node):
    return node.attrs["key"] or node.name


def _shape(node, shapes):
    if not 0.0 <= float(node.attrs["p"]) <= 1.0:
        shape_error(node, f"dropout p must be in [0, 1], got {node.attrs['p']}")
    return same_shape(node, shapes)


def _scale(p):
    return 0.0 if p >= 1 else 1.0 / (1.0 - p)


def _reference(ctx, node, x):
    p = float(node.attrs["p"])
    first = ctx.row_offset * int(np.prod(x.shape[1:])) if node.shape[:1] == (BATCH,) else 0
    mask = keep_mask(ctx.seed, ctx.step, key_of(_key(node)), x.size, p, first=first).reshape(x.shape)
    return np.where(mask, x * _scale(p), 0.0)


def _fields(node):
    """Integer literals for the C expression. Per-row tensors number their elements from
    row `row_offset` (the rows accumulated before this micro-batch), so k accumulated
    micro-batches draw the masks of one batch of all their rows."""
    p = float(node.attrs["p"])
    per_row = node.shape[:1] == (BATCH,)
    return {"key": f"{key_of(_key(node))}u", "threshold": f"{dropout_threshold(p)}ull",
            "scale": repr(float(np.float32(_scale(p)))) + "f",
            "first": f"row_offset * {numel(node.shape[1:])} + " if per_row else ""}


register(OpDef(
    name="dropout", arity=1, kind=ELEMENTWISE, attrs={"p": 0.5, "key": None},
    shape=_shape, reference=_reference, runtime=("seed", "step", "row_offset"), c_fields=_fields,
    c_expr="(nncc_keep(nncc_stream(seed, step, {key}), {first}{index}, {threshold}) ? {0} * {scale} : 0.0f)",
    grad=lambda b, node, gy: [b.op("dropout", gy, p=node.attrs["p"], key=_key(node))],
    eval_mode=lambda b, node: node.inputs[0],
    samples=lambda rng: [([rng.normal(size=(6, 5))], {"p": p}) for p in (0.0, 0.3, 1.0)],
    doc="inverted dropout with probability p (identity in eval mode).",
))
