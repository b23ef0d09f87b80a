"""Losses (scalar outputs) and their companion gradient ops.

`reduction` is an attribute of the loss node: "mean" divides by the run-time batch (for
cross-entropy: the rows; for MSE: all elements), "sum" does not.
"""
import numpy as np

from ..errors import FeedError
from .registry import always, ELEMENTWISE, KERNEL, OpDef, register, shape_error
from .softmax import rows_and_cols, softmax_reference

REDUCTIONS = ("mean", "sum")


def _check_reduction(node):
    if node.attrs["reduction"] not in REDUCTIONS:
        shape_error(node, f"reduction must be one of {REDUCTIONS}, not {node.attrs['reduction']!r}")


def _mse_shape(node, shapes):
    _check_reduction(node)
    pred, target = shapes[0], shapes[1]
    if pred != target:
        shape_error(node, "prediction and target must have the same shape "
                          "(broadcasting them is almost always a bug)", pred, target)
    return ()


def _mse_grad_shape(node, shapes):
    _mse_shape(node, shapes[:2])
    return shapes[0]


def _mean_or_sum(node, total, count):
    return total / count if node.attrs["reduction"] == "mean" else total


def _mse_call(k):
    mean = int(k.attrs["reduction"] == "mean")
    return f"nncc_mse_loss({k.numel(k.in_shapes[0])}, {k.args[0]}, {k.args[1]}, {mean}, {k.out})"


def _mse_grad(b, node, gy):
    d_pred = b.op("mse_loss_grad", *node.inputs, gy, reduction=node.attrs["reduction"])
    return [d_pred, b.op("neg", d_pred)]


register(OpDef(
    name="mse_loss", arity=2, kind=KERNEL, attrs={"reduction": "mean"},
    shape=_mse_shape,
    reference=lambda ctx, node, p, t: _mean_or_sum(node, np.sum((p - t) ** 2), p.size),
    grad=_mse_grad,
    c_call=_mse_call, library="losses",
    one_thread=always,
    samples=lambda rng: [([rng.normal(size=(4, 3)), rng.normal(size=(4, 3))], {"reduction": r}) for r in REDUCTIONS],
    doc="mean (or sum) of squared differences, as torch.nn.MSELoss.",
))

register(OpDef(
    name="mse_loss_grad", arity=3, kind=ELEMENTWISE, attrs={"reduction": "mean"},
    shape=_mse_grad_shape,
    reference=lambda ctx, node, p, t, gy: _mean_or_sum(node, 2.0 * (p - t) * gy, p.size),
    c_expr=lambda node: {"mean": "(2.0f / (float)({numel0})) * ({0} - {1}) * {2}",
                         "sum": "2.0f * ({0} - {1}) * {2}"}[node.attrs["reduction"]],
    samples=lambda rng: [([rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=())],
                          {"reduction": r}) for r in REDUCTIONS],
    doc="d mse_loss / d pred, scaled by the incoming scalar gradient.",
))


def _xent_shape(node, shapes):
    _check_reduction(node)
    logits, labels = shapes[0], shapes[1]
    if len(logits) != 2:
        shape_error(node, "logits must be 2-D (rows, classes)", logits)
    if tuple(labels) != tuple(logits[:1]):
        shape_error(node, "labels must hold one class id per row of logits", logits, labels)
    return () if node.op == "softmax_cross_entropy" else logits


def _xent_reference(ctx, node, logits, labels):
    ctx.check_labels(node, labels, logits.shape[1])
    z = logits - np.max(logits, axis=1, keepdims=True)
    logsumexp = np.log(np.sum(np.exp(z), axis=1))
    losses = logsumexp - z[np.arange(len(labels)), labels]
    return _mean_or_sum(node, np.sum(losses), len(labels))


def _xent_grad_reference(ctx, node, logits, labels, gy):
    ctx.check_labels(node, labels, logits.shape[1])
    g = softmax_reference(logits)
    g[np.arange(len(labels)), labels] -= 1.0
    return _mean_or_sum(node, g * gy, len(labels))


def _bad_label(graph, node, row, feeds):
    labels, classes = node.inputs[1], graph[node.inputs[0]].shape[-1]
    value = feeds[labels][row] if labels in feeds and row < len(feeds[labels]) else "?"
    return FeedError(f"label {value} at row {row} is outside [0, {classes}) (node {node.name!r})", feed=labels)


def _xent_call(k):
    rows, classes = rows_and_cols(k, k.in_shapes[0])
    mean = int(k.attrs["reduction"] == "mean")
    return f"nncc_xent_loss({rows}, {classes}, {k.args[0]}, {k.args[1]}, {mean}, {k.out})"


def _xent_grad_call(k):
    rows, classes = rows_and_cols(k, k.in_shapes[0])
    mean = int(k.attrs["reduction"] == "mean")
    return f"nncc_xent_grad({rows}, {classes}, {k.args[0]}, {k.args[1]}, {k.args[2]}, {mean}, {k.out})"


def _xent_samples(rng):
    logits = rng.normal(size=(5, 4)) * 2
    labels = np.array([0, 3, 1, 3, 2], dtype=np.int32)
    return [([logits, labels], {"reduction": r}) for r in REDUCTIONS]


register(OpDef(
    name="softmax_cross_entropy", arity=2, kind=KERNEL, attrs={"reduction": "mean"},
    shape=_xent_shape, int_inputs=(1,), reference=_xent_reference,
    grad=lambda b, node, gy: [b.op("softmax_cross_entropy_grad", *node.inputs, gy,
                                   reduction=node.attrs["reduction"]), None],
    c_call=_xent_call, library=("softmax", "cross_entropy"), failure=_bad_label, samples=_xent_samples,
    one_thread=always,
    doc="cross-entropy of softmax(logits) against int32 class ids, as torch.nn.CrossEntropyLoss.",
))

register(OpDef(
    name="softmax_cross_entropy_grad", arity=3, kind=KERNEL, attrs={"reduction": "mean"},
    shape=_xent_shape, int_inputs=(1,), reference=_xent_grad_reference,
    c_call=_xent_grad_call, library=("softmax", "cross_entropy"), failure=_bad_label,
    one_thread=always,
    samples=lambda rng: [(case[0] + [rng.normal(size=())], case[1]) for case in _xent_samples(rng)],
    doc="(softmax(logits) - onehot(labels)) * gy, divided by the rows for mean.",
))
