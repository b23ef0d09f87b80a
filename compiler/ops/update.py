"""Optimizer update ops. Each returns the new value of the buffer named by its `writes`
attribute (set by the optimizer pass), which the memory plan aliases so the update is
done in place. `lr` is run-time state, read in C from the runtime struct.
"""
from .registry import ELEMENTWISE, OpDef, broadcast_shapes, register


def _same(node, shapes):
    return broadcast_shapes(node, *shapes)


def _samples(arity):
    return lambda rng: [([rng.normal(size=(4, 3)) for _ in range(arity)],
                         {"weight_decay": 0.1, "momentum": 0.9, "nesterov": nesterov})
                        for nesterov in (False, True)]


register(OpDef(
    name="sgd_update", arity=2, kind=ELEMENTWISE, attrs={"weight_decay": 0.0},
    shape=_same, runtime=("lr",),
    reference=lambda ctx, node, p, g: p - ctx.lr * (g + node.attrs["weight_decay"] * p),
    c_expr=lambda node: ("{0} - lr * ({1} + {weight_decay} * {0})" if node.attrs["weight_decay"]
                         else "{0} - lr * {1}"),
    samples=_samples(2),
    doc="p - lr * (g + weight_decay * p): plain SGD on param p with gradient g.",
))

register(OpDef(
    name="momentum_update", arity=3, kind=ELEMENTWISE,
    attrs={"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    shape=_same,
    reference=lambda ctx, node, v, g, p: node.attrs["momentum"] * v + g + node.attrs["weight_decay"] * p,
    c_expr="{momentum} * {0} + ({1} + {weight_decay} * {2})",
    samples=_samples(3),
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
    samples=_samples(3),
    doc="p - lr * v (or the Nesterov direction) given the updated momentum buffer v.",
))
