"""Optimizer update ops. Each returns the new value of the buffer named by its `writes`
attribute (set by the optimizer pass), which the memory plan aliases so the update is
done in place. `lr` is run-time state, read in C from the runtime struct.
"""
import numpy as np

from .registry import ELEMENTWISE, OpDef, broadcast_shapes, register


def _same(node, shapes):
    return broadcast_shapes(node, *shapes)


def _momentum_samples(rng):
    return [([rng.normal(size=(4, 3)) for _ in range(3)], {"weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov})
            for nesterov in (False, True)]


register(OpDef(
    name="sgd_update", arity=2, kind=ELEMENTWISE, attrs={"weight_decay": 0.0},
    shape=_same, runtime=("lr",),
    reference=lambda ctx, node, p, g: p - ctx.lr * (g + node.attrs["weight_decay"] * p),
    c_expr=lambda node: ("{0} - lr * ({1} + {weight_decay} * {0})" if node.attrs["weight_decay"]
                         else "{0} - lr * {1}"),
    scaled_add=lambda node: None if node.attrs["weight_decay"] else "-lr",
    samples=lambda rng: [([rng.normal(size=(4, 3)), rng.normal(size=(4, 3))], {"weight_decay": wd})
                         for wd in (0.0, 0.1)],
    doc="p - lr * (g + weight_decay * p): plain SGD on param p with gradient g.",
))

register(OpDef(
    name="momentum_update", arity=3, kind=ELEMENTWISE,
    attrs={"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    shape=_same,
    reference=lambda ctx, node, v, g, p: node.attrs["momentum"] * v + g + node.attrs["weight_decay"] * p,
    c_expr="{momentum} * {0} + ({1} + {weight_decay} * {2})",
    samples=_momentum_samples,
    doc="The momentum buffer v <- momentum * v + (g + weight_decay * p), as torch.optim.SGD.",
))


def _momentum_step_reference(ctx, node, p, g, v):
    a = node.attrs
    direction = (g + a["weight_decay"] * p) + a["momentum"] * v if a["nesterov"] else v
    return p - ctx.lr * direction


register(OpDef(
    name="sgd_momentum_update", arity=3, kind=ELEMENTWISE,
    attrs={"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    shape=_same, runtime=("lr",), reference=_momentum_step_reference,
    c_expr=lambda node: ("{0} - lr * (({1} + {weight_decay} * {0}) + {momentum} * {2})"
                         if node.attrs["nesterov"] else "{0} - lr * {2}"),
    samples=_momentum_samples,
    doc="p - lr * v (or the Nesterov direction) given the updated momentum buffer v.",
))


# -- Adam / AdamW (torch.optim semantics). `t` is the 1-based number of the step being
# taken, a run-time value; the bias corrections 1 - beta^t are computed in double as torch
# does in Python.

def _decayed_grad(node, g, p):
    """Adam's L2 penalty enters the gradient; AdamW's decoupled decay does not."""
    return g + node.attrs["weight_decay"] * p if not node.attrs["decoupled"] else g


ADAM_ATTRS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "decoupled": False}
_ADAM_GRAD = "({1} + {weight_decay} * {2})"


def _adam_grad_expr(node):
    return "{1}" if node.attrs["decoupled"] or not node.attrs["weight_decay"] else _ADAM_GRAD


def _adam_samples(rng):
    """(p or moment, g or m, p or v): the last is a second moment for adam_update, so positive."""
    return [([rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.uniform(0.1, 1.0, size=(4, 3))],
             {"weight_decay": 0.1, "decoupled": decoupled}) for decoupled in (False, True)]


register(OpDef(
    name="adam_m_update", arity=3, kind=ELEMENTWISE, attrs=dict(ADAM_ATTRS), shape=_same,
    reference=lambda ctx, node, m, g, p: m + (1 - node.attrs["beta1"]) * (_decayed_grad(node, g, p) - m),
    c_expr=lambda node: "{0} + (float)(1.0 - {beta1_double}) * (" + _adam_grad_expr(node) + " - {0})",
    samples=_adam_samples,
    doc="First moment m <- lerp(m, g, 1 - beta1), inputs (m, g, p).",
))

register(OpDef(
    name="adam_v_update", arity=3, kind=ELEMENTWISE, attrs=dict(ADAM_ATTRS), shape=_same,
    reference=lambda ctx, node, v, g, p: (node.attrs["beta2"] * v
                                          + (1 - node.attrs["beta2"]) * _decayed_grad(node, g, p) ** 2),
    c_expr=lambda node: ("{beta2} * {0} + (float)(1.0 - {beta2_double}) * " + _adam_grad_expr(node) + " * "
                         + _adam_grad_expr(node)),
    samples=_adam_samples,
    doc="Second moment v <- beta2 * v + (1 - beta2) * g^2, inputs (v, g, p).",
))


def _adam_step_reference(ctx, node, p, m, v):
    a = node.attrs
    bc1, bc2 = 1 - a["beta1"] ** ctx.t, 1 - a["beta2"] ** ctx.t
    if a["decoupled"]:
        p = p * (1 - ctx.lr * a["weight_decay"])
    return p - (ctx.lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + a["eps"])


register(OpDef(
    name="adam_update", arity=3, kind=ELEMENTWISE, attrs=dict(ADAM_ATTRS), shape=_same,
    runtime=("lr", "t"), reference=_adam_step_reference,
    c_expr=lambda node: (("{0} * (1.0f - lr * {weight_decay})" if node.attrs["decoupled"] else "{0}")
                         + " - (lr / (float)(1.0 - pow({beta1_double}, t))) * {1}"
                         " / (sqrtf({2}) / (float)sqrt(1.0 - pow({beta2_double}, t)) + {eps})"),
    samples=_adam_samples,
    doc="p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps), inputs (p, m, v).",
))


# -- gradient accumulation: micro-batch gradients summed into `<param>.grad_sum`, then
# averaged over all the rows seen (for a mean loss) when the update is applied, so k
# micro-batches give the update of one batch of all their rows.

register(OpDef(
    name="grad_accumulate", arity=2, kind=ELEMENTWISE, attrs={"per_row": True}, shape=_same,
    reference=lambda ctx, node, s, g: s + (ctx.n * g if node.attrs["per_row"] else g),
    c_expr=lambda node: "{0} + (float)n * {1}" if node.attrs["per_row"] else "{0} + {1}",
    samples=lambda rng: [([rng.normal(size=(4, 3)), rng.normal(size=(4, 3))], {"per_row": r}) for r in (True, False)],
    doc="grad_sum + n * g for a mean loss (g is a mean over n rows), else grad_sum + g.",
))

register(OpDef(
    name="grad_average", arity=1, kind=ELEMENTWISE, shape=_same, runtime=("inv_rows",),
    reference=lambda ctx, node, s: s * ctx.inv_rows, c_expr="{0} * inv_rows",
    samples=lambda rng: [([rng.normal(size=(4, 3))], {})],
    doc="grad_sum / rows accumulated: the mean-loss gradient of all accumulated rows.",
))

register(OpDef(
    name="fill_zero", arity=1, kind=ELEMENTWISE, shape=_same,
    reference=lambda ctx, node, x: np.zeros_like(x), c_expr="0.0f",
    samples=lambda rng: [([rng.normal(size=(4, 3))], {})],
    doc="zeros (resets an accumulator in place; its input orders it after the last read).",
))
