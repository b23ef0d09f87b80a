"""layer_norm and batch_norm (torch.nn.LayerNorm / BatchNorm1d), with hand-written backward
kernels as companion ops. gain and bias gradients need no kernel of their own: they are
gy * xhat and gy, summed back to (C,) by autodiff's generic broadcast undo, with xhat from
the `*_normalize` op (the norm without its affine part)."""
import numpy as np

from ..errors import FeedError
from .registry import ELEMENTWISE, KERNEL, OpDef, register, shape_error
from .softmax import rows_and_cols


def _affine_shape(node, shapes):
    x = shapes[0]
    if len(x) < (2 if node.op.startswith("batch") else 1):
        shape_error(node, "input has too few dimensions", x)
    if node.op.startswith("batch") and len(x) != 2:
        shape_error(node, "batch_norm (BatchNorm1d) takes 2-D input (rows, features)", x)
    for s in shapes[1:]:
        if tuple(s) != (x[-1],):
            shape_error(node, f"gain, bias and statistics must have shape ({x[-1]},)", x, s)
    return x


def _layer_stats(x, eps):
    mu = x.mean(axis=-1, keepdims=True)
    return mu, 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + eps)


def _batch_stats(x, eps):
    mu = x.mean(axis=0)
    return mu, 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=0) + eps)


def _norm_grad_reference(stats, axis):
    def reference(ctx, node, x, gain, gy):
        mu, rstd = stats(x, node.attrs["eps"])
        xhat, g = (x - mu) * rstd, gy * gain
        return rstd * (g - g.mean(axis=axis, keepdims=True) - xhat * (g * xhat).mean(axis=axis, keepdims=True))
    return reference


NORMALIZED = "/normalized"  # suffix of the normalised x's node in an expanded norm


def _affine_expand(normalize):
    """normalize(x) * gain + bias, the normalised x a node of its own: the backward reads it
    for the gain's gradient (`_affine_grad`), and CSE then shares the forward's instead of
    computing it again (W4: two [128, 512] passes of ~15-19 us each of a ~2.2 ms step). The
    arithmetic is the fused routine's, (x - mean) * rstd * gain + bias, rounded as written."""
    def expand(b, node, name):
        x, gain, bias = node.inputs
        xhat = b.op(normalize, x, name=f"{node.name}{NORMALIZED}", eps=node.attrs["eps"])
        return b.op("add", b.op("mul", xhat, gain, name=f"{node.name}/scaled"), bias, name=name)
    return expand


def _affine_grad(normalize, grad_op):
    def grad(b, node, gy):
        x, gain, _ = node.inputs
        xhat = b.op(normalize, x, eps=node.attrs["eps"])
        return [b.op(grad_op, x, gain, gy, eps=node.attrs["eps"]), b.op("mul", gy, xhat), gy]
    return grad


def _call(routine, without_affine=False):
    """routine(rows, cols, <the node's inputs>, eps, out); `without_affine`: gain and bias NULL."""
    def call(k):
        rows, cols = rows_and_cols(k, k.in_shapes[0])
        args = ", ".join(map(str, [*k.args, *(["NULL", "NULL"] if without_affine else [])]))
        return f"{routine}({rows}, {cols}, {args}, {k.attrs['eps']!r}f, {k.out})"
    return call


def _too_few_rows(graph, node, row, feeds):
    name = node.name.removesuffix(NORMALIZED)  # the user's batch_norm, when expanded
    return FeedError(f"batch_norm {name!r} needs at least 2 rows in train mode (as torch)",
                     feed=next(iter(graph.inputs), None))


def _norm_samples(rng, batch=False):
    x = rng.normal(size=(6, 4)) * 2 + 1
    return [([x, rng.uniform(0.5, 1.5, size=4), rng.normal(size=4)], {"eps": 1e-5})]


# -- layer norm ----------------------------------------------------------------------------

register(OpDef(
    name="layer_norm", arity=3, kind=KERNEL, attrs={"eps": 1e-5}, shape=_affine_shape,
    reference=lambda ctx, node, x, gain, bias: (x - (s := _layer_stats(x, node.attrs["eps"]))[0]) * s[1] * gain + bias,
    grad=_affine_grad("layer_normalize", "layer_norm_grad"), expand=_affine_expand("layer_normalize"),
    c_call=_call("nncc_layer_norm"), library="norm", samples=_norm_samples,
    doc="(x - mean) / sqrt(var + eps) * gain + bias over the last axis, as torch.nn.LayerNorm.",
))

register(OpDef(
    name="layer_normalize", arity=1, kind=KERNEL, attrs={"eps": 1e-5}, shape=_affine_shape,
    reference=lambda ctx, node, x: (x - (s := _layer_stats(x, node.attrs["eps"]))[0]) * s[1],
    c_call=_call("nncc_layer_norm", without_affine=True), library="norm",
    samples=lambda rng: [([rng.normal(size=(5, 4))], {"eps": 1e-5})],
    doc="layer_norm without gain and bias (xhat, for the gain's gradient).",
))

register(OpDef(
    name="layer_norm_grad", arity=3, kind=KERNEL, attrs={"eps": 1e-5},
    shape=lambda node, shapes: _affine_shape(node, [shapes[0], shapes[1]]),
    reference=_norm_grad_reference(_layer_stats, axis=-1),
    c_call=_call("nncc_layer_norm_grad"), library="norm",
    samples=lambda rng: [([rng.normal(size=(5, 4)), rng.uniform(0.5, 1.5, 4), rng.normal(size=(5, 4))], {"eps": 1e-5})],
    doc="d layer_norm / d x, inputs (x, gain, gy).",
))

# -- batch norm ----------------------------------------------------------------------------


def _batch_norm_state(b, node):
    """Running statistics: state buffers updated by the train step (never dropped by DCE,
    since every in-place write is a root)."""
    x, momentum = node.inputs[0], node.attrs["momentum"]
    channels = (b.shape(x)[-1],)
    for stat, init, op in (("running_mean", "zeros", "running_mean_update"),
                           ("running_var", "ones", "running_var_update")):
        state = b.op("state", name=f"{node.name}.{stat}", shape=channels, init=init)
        b.op(op, state, x, name=f"update({state})", momentum=momentum, writes=state)


def _batch_norm_eval(b, node):
    x, gain, bias = node.inputs
    channels = b.shape(x)[-1:]
    stats = [b.op("state", name=f"{node.name}.{s}", shape=channels, init=i)
             for s, i in (("running_mean", "zeros"), ("running_var", "ones"))]
    return b.op("batch_norm_eval", x, gain, bias, *stats, name=f"{node.name}(eval)", eps=node.attrs["eps"])


def _batch_norm_reference(ctx, node, x, gain, bias):
    if len(x) < 2:
        raise _too_few_rows(ctx.interp.train_graph, node, 0, {})
    mu, rstd = _batch_stats(x, node.attrs["eps"])
    return (x - mu) * rstd * gain + bias


register(OpDef(
    name="batch_norm", arity=3, kind=KERNEL, attrs={"eps": 1e-5, "momentum": 0.1}, shape=_affine_shape,
    reference=_batch_norm_reference, grad=_affine_grad("batch_normalize", "batch_norm_grad"),
    expand=_affine_expand("batch_normalize"),
    state=_batch_norm_state, eval_mode=_batch_norm_eval, failure=_too_few_rows,
    samples=_norm_samples,
    doc="torch.nn.BatchNorm1d: batch statistics in train (running stats updated), running stats in eval.",
))

register(OpDef(
    name="batch_normalize", arity=1, kind=KERNEL, attrs={"eps": 1e-5}, shape=_affine_shape,
    reference=lambda ctx, node, x: (x - (s := _batch_stats(x, node.attrs["eps"]))[0]) * s[1],
    c_call=_call("nncc_batch_normalize"), library="norm", failure=_too_few_rows,
    samples=lambda rng: [([rng.normal(size=(5, 4))], {"eps": 1e-5})],
    doc="batch_norm without gain and bias (xhat, for the gain's gradient).",
))

register(OpDef(
    name="batch_norm_grad", arity=3, kind=KERNEL, attrs={"eps": 1e-5},
    shape=lambda node, shapes: _affine_shape(node, [shapes[0], shapes[1]]),
    reference=_norm_grad_reference(_batch_stats, axis=0),
    c_call=_call("nncc_batch_norm_grad"), library="norm",
    samples=lambda rng: [([rng.normal(size=(5, 4)), rng.uniform(0.5, 1.5, 4), rng.normal(size=(5, 4))], {"eps": 1e-5})],
    doc="d batch_norm / d x (train mode), inputs (x, gain, gy).",
))

register(OpDef(
    name="batch_norm_eval", arity=5, kind=ELEMENTWISE, attrs={"eps": 1e-5}, shape=_affine_shape,
    reference=lambda ctx, node, x, gain, bias, mean, var: (x - mean) / np.sqrt(var + node.attrs["eps"]) * gain + bias,
    c_expr="({0} - {3}) / sqrtf({4} + {eps}) * {1} + {2}",
    samples=lambda rng: [([rng.normal(size=(5, 4)), rng.uniform(0.5, 1.5, 4), rng.normal(size=4),
                           rng.normal(size=4), rng.uniform(0.5, 2, 4)], {"eps": 1e-5})],
    doc="batch_norm in eval mode, inputs (x, gain, bias, running_mean, running_var).",
))


def _running_call(variance):
    def call(k):
        rows, cols = rows_and_cols(k, k.in_shapes[1])
        return (f"nncc_running_stat({rows}, {cols}, {k.args[1]}, {k.attrs['momentum']!r}f, {int(variance)}, "
                f"{k.out})")
    return call


def _running_reference(variance):
    def reference(ctx, node, stat, x):
        batch = x.var(axis=0, ddof=1) if variance else x.mean(axis=0)
        return (1 - node.attrs["momentum"]) * stat + node.attrs["momentum"] * batch
    return reference


for _name, _variance in (("running_mean_update", False), ("running_var_update", True)):
    register(OpDef(
        name=_name, arity=2, kind=KERNEL, attrs={"momentum": 0.1},
        shape=lambda node, shapes: tuple(shapes[0]), reference=_running_reference(_variance),
        c_call=_running_call(_variance), library="norm",
        samples=lambda rng: [([rng.uniform(0.5, 1.5, 4), rng.normal(size=(6, 4))], {"momentum": 0.1})],
        doc="running statistic <- (1 - momentum) * stat + momentum * batch value (in place, inputs (stat, x)).",
    ))
