"""softmax over the last axis, and its companion gradient op."""
import numpy as np

from .registry import always, KERNEL, OpDef, register, shape_error


def softmax_reference(x):
    z = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def rows_and_cols(k, shape):
    """C expressions for the row count and row length of a tensor seen as a matrix."""
    dims = k.dims(shape)
    rows = " * ".join(str(d) for d in dims[:-1]) or "1"
    return rows, dims[-1]


def _last_axis_shape(node, shapes):
    if len(shapes[0]) < 1:
        shape_error(node, "softmax needs at least one axis", shapes[0])
    for s in shapes[1:]:
        if s != shapes[0]:
            shape_error(node, "inputs must have the same shape", shapes[0], s)
    return shapes[0]


def _softmax_call(k):
    rows, cols = rows_and_cols(k, k.out_shape)
    return f"nncc_softmax_rows({rows}, {cols}, {k.args[0]}, {k.out})"


def _softmax_grad_call(k):
    rows, cols = rows_and_cols(k, k.out_shape)
    return f"nncc_softmax_grad_rows({rows}, {cols}, {k.args[0]}, {k.args[1]}, {k.out})"


register(OpDef(
    name="softmax", arity=1, kind=KERNEL, shape=_last_axis_shape,
    reference=lambda ctx, node, x: softmax_reference(x),
    grad=lambda b, node, gy: [b.op("softmax_grad", node.name, gy)],
    c_call=_softmax_call, library="softmax",
    one_thread=always,
    samples=lambda rng: [([rng.normal(size=s) * 3], {}) for s in [(4, 5), (2, 3, 4), (7,)]],
    doc="exp(x) / sum(exp(x)) over the last axis, computed stably (max subtracted first).",
))

register(OpDef(
    name="softmax_grad", arity=2, kind=KERNEL, shape=_last_axis_shape,
    reference=lambda ctx, node, y, gy: y * (gy - np.sum(gy * y, axis=-1, keepdims=True)),
    c_call=_softmax_grad_call, library="softmax",
    one_thread=always,
    samples=lambda rng: [([softmax_reference(rng.normal(size=(4, 5))), rng.normal(size=(4, 5))], {})],
    doc="y * (gy - sum(gy * y)) over the last axis, with y = softmax(x).",
))
