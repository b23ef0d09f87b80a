"""Elementwise ops: one C expression each, NumPy broadcasting, fused by the same loops."""
import numpy as np

from .registry import ELEMENTWISE, OpDef, broadcast_shapes, register


def _broadcast(node, shapes):
    return broadcast_shapes(node, *shapes)


def _unary(name, expr, reference, grad=None, attrs=None, doc="", samples=None):
    return register(OpDef(name=name, arity=1, kind=ELEMENTWISE, shape=_broadcast, c_expr=expr,
                          reference=reference, grad=grad, attrs=attrs or {}, doc=doc,
                          samples=samples or _unary_samples))


def _binary(name, expr, reference, grad=None, attrs=None, doc="", samples=None):
    return register(OpDef(name=name, arity=2, kind=ELEMENTWISE, shape=_broadcast, c_expr=expr,
                          reference=reference, grad=grad, attrs=attrs or {}, doc=doc,
                          samples=samples or _binary_samples))


def _away_from_zero(rng, shape):
    """Values kept clear of the kink at 0, so finite differences are meaningful."""
    x = rng.uniform(0.2, 2.0, size=shape)
    return x * rng.choice([-1.0, 1.0], size=shape)


def _unary_samples(rng):
    return [([_away_from_zero(rng, s)], {}) for s in [(5,), (4, 3), (2, 3, 4)]]


def _binary_samples(rng):
    pairs = [((4, 3), (4, 3)), ((4, 3), (3,)), ((4, 1), (1, 3)), ((4, 3), ()), ((3,), (2, 3))]
    return [([rng.normal(size=a), rng.normal(size=b)], {}) for a, b in pairs]


def _grad_unary_samples(rng):
    return [([rng.normal(size=s), _away_from_zero(rng, s)], {}) for s in [(5,), (4, 3)]]


def _act_grad_samples(rng):
    """(gy, y) with y in the op's range (0, 1) or (-1, 1)."""
    return [([rng.normal(size=s), rng.uniform(-0.9, 0.9, size=s)], {}) for s in [(5,), (4, 3)]]


# -- arithmetic ---------------------------------------------------------------------------

_binary("add", "{0} + {1}", lambda ctx, n, a, b: a + b,
        grad=lambda b, node, gy: [gy, gy])
_binary("sub", "{0} - {1}", lambda ctx, n, a, b: a - b,
        grad=lambda b, node, gy: [gy, b.op("neg", gy)])
_binary("mul", "{0} * {1}", lambda ctx, n, a, b: a * b,
        grad=lambda b, node, gy: [b.op("mul", gy, node.inputs[1]), b.op("mul", gy, node.inputs[0])])
_unary("identity", "{0}", lambda ctx, n, x: x, grad=lambda b, node, gy: [gy])
_unary("neg", "-{0}", lambda ctx, n, x: -x, grad=lambda b, node, gy: [b.op("neg", gy)])

# -- activations: forward and the companion gradient op -----------------------------------
# relu(x) = 0 where x < 0, else x (NaN passes through, as in torch). Its gradient reads the
# output y (y > 0 exactly where x > 0), so x need not be kept for the backward pass and the
# op producing x fuses with relu. The gradient at x == 0 is 0, as in torch.

_unary("relu", "({0} < 0.0f ? 0.0f : {0})", lambda ctx, n, x: np.where(x < 0, 0.0, x),
       grad=lambda b, node, gy: [b.op("relu_grad", gy, node.name)])
_binary("relu_grad", "({1} > 0.0f ? {0} : 0.0f)", lambda ctx, n, gy, y: np.where(y > 0, gy, 0.0),
        doc="gy where y = relu(x) > 0, else 0", samples=_grad_unary_samples)

_unary("leaky_relu", "({0} > 0.0f ? {0} : {alpha} * {0})",
       lambda ctx, n, x: np.where(x > 0, x, n.attrs["alpha"] * x),
       attrs={"alpha": 0.01},
       grad=lambda b, node, gy: [b.op("leaky_relu_grad", gy, node.inputs[0], alpha=node.attrs["alpha"])])
_binary("leaky_relu_grad", "({1} > 0.0f ? {0} : {alpha} * {0})",
        lambda ctx, n, gy, x: np.where(x > 0, gy, n.attrs["alpha"] * gy),
        attrs={"alpha": 0.01}, samples=_grad_unary_samples)

_unary("sigmoid", "nncc_sigmoidf({0})", lambda ctx, n, x: 1.0 / (1.0 + np.exp(-x)),
       grad=lambda b, node, gy: [b.op("sigmoid_grad", gy, node.name)])
_binary("sigmoid_grad", "{0} * {1} * (1.0f - {1})", lambda ctx, n, gy, y: gy * y * (1.0 - y),
        doc="gy * y * (1 - y) with y = sigmoid(x)", samples=_act_grad_samples)

_unary("tanh", "nncc_tanhf({0})", lambda ctx, n, x: np.tanh(x),
       grad=lambda b, node, gy: [b.op("tanh_grad", gy, node.name)])
_binary("tanh_grad", "{0} * (1.0f - {1} * {1})", lambda ctx, n, gy, y: gy * (1.0 - y * y),
        doc="gy * (1 - y^2) with y = tanh(x)", samples=_act_grad_samples)
