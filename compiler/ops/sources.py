"""Ops without inputs: feeds, trainable params and constants."""
import numpy as np

from .registry import ELEMENTWISE, REQUIRED, SOURCE, OpDef, register


def _declared_shape(node, shapes):
    return tuple(node.attrs["shape"])


def _input_dtype(node, in_dtypes):
    return node.attrs["dtype"]


register(OpDef(
    name="input", arity=0, kind=SOURCE,
    attrs={"shape": REQUIRED, "dtype": "float32"},
    shape=_declared_shape, dtype=_input_dtype,
    reference=lambda ctx, node: ctx.feed(node.name),
    doc="A feed. `shape` has None for the batch dimension; dtype float32 or int32 (class labels).",
))

def _persistent(name, doc):
    """A tensor living in the trainer's state: its start value comes from compiler/init.py."""
    return register(OpDef(
        name=name, arity=0, kind=SOURCE,
        attrs={"shape": REQUIRED, "init": "zeros", "fan_in": None, "value": None, "std": None},
        shape=_declared_shape, reference=lambda ctx, node: ctx.param(node.name), doc=doc))


_persistent("param", "A trainable tensor; `init` names how it starts (see compiler/init.py).")
_persistent("state", "Persistent non-trainable tensor (optimizer moments, running stats), updated in place.")

register(OpDef(
    name="constant", arity=0, kind=ELEMENTWISE,
    attrs={"value": REQUIRED, "shape": ()},
    shape=_declared_shape,
    reference=lambda ctx, node: np.full(node.attrs["shape"], float(node.attrs["value"])),
    c_expr="{value}",
    doc="A tensor filled with one value (the seed of the backward pass is constant 1).",
))
