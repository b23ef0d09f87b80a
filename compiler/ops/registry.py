"""The op registry: one `OpDef` holds everything nncc knows about an op.

Nothing outside the op definitions branches on an op's name: passes ask the OpDef.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import GraphError, ShapeError
from ..ir import BATCH

REQUIRED = object()  # marks an attribute without a default

# Op kinds, which decide how an op is lowered and fused.
SOURCE = "source"            # input / param / constant: no computation of its own
ELEMENTWISE = "elementwise"  # one C expression per output element, NumPy broadcasting
KERNEL = "kernel"            # a hand-written C routine (matmul, softmax, losses)
REDUCE = "reduce"            # an elementwise loop accumulating into a smaller output (sum_to)


@dataclass(frozen=True)
class OpDef:
    """Everything about one op.

    shape(node, in_shapes) -> output shape; raise via `shape_error`.
    reference(ctx, node, *inputs) -> float64 (or int) ndarray: the NumPy oracle.
    grad(b, node, gy) -> one gradient node name (or None) per input, built from other
        registered ops through the autodiff builder `b`. None means "not differentiable".
    c_expr: for ELEMENTWISE ops, a C expression; `{0}`, `{1}` are the input values and
        `{attr}` an attribute formatted as a float literal. `n` is the batch size and
        names in `runtime` (e.g. `lr`) are run-time scalars.
    c_call(ctx) -> C statement(s) for KERNEL ops; see lower.KernelCall for ctx fields (none
        for an op that `expand` and `eval_mode` replace in every program: batch_norm).
    library: kernels/<library>.c.j2 holding the routine a KERNEL op calls (or a tuple of them).
    samples(rng) -> list of (inputs, attrs) used by the registry-generated tests.
    """

    name: str
    arity: int
    kind: str
    shape: Callable
    reference: Callable
    attrs: dict = field(default_factory=dict)
    dtype: Callable | str = "float32"
    grad: Callable | None = None
    c_expr: str | Callable | None = None  # or node -> str when attributes choose it
    c_fields: Callable | None = None       # node -> extra {fields} for c_expr (e.g. integer keys)
    c_call: Callable | None = None
    library: str | tuple | None = None
    takes_epilogue: bool = False  # a KERNEL whose routine can run a fused loop on its output blocks
    # ELEMENTWISE: node -> a C expression alpha when the node computes inputs[0] + alpha *
    # inputs[1], the product and the sum each rounded to float32 (as its c_expr), else None.
    scaled_add: Callable | None = None
    # KERNEL: (node, input shapes at the batch capacity) -> whether its routine can add
    # alpha times its result into the output buffer, rounding each element exactly as
    # storing the result and then applying a `scaled_add` would (c_call sees ctx.alpha).
    adds_scaled: Callable | None = None
    # KERNEL: (node, input shapes at the batch capacity) -> whether its routine runs on the
    # calling thread alone for any rows up to the capacity (never starts the OpenMP team):
    # fit then runs it on one thread while the others gather the next batch. None: it may.
    one_thread: Callable | None = None
    # KERNEL: c_call honours ctx.rows = (lo, hi), C expressions: it computes rows [lo, hi) of
    # its output alone, each value exactly as the whole call would, reading only rows [lo, hi)
    # of a batch-shaped first input. A team step then splits the call over its threads.
    splits_rows: bool = False
    int_inputs: tuple = ()  # input slots that take int32 (class labels); the rest take float32
    # The C routine returns 0, or 1 + the row of a bad value (labels out of range);
    # failure(graph, node, row, feeds) builds the exception the user sees.
    failure: Callable | None = None
    runtime: tuple = ()     # run-time scalars the C code reads (e.g. "lr")
    samples: Callable | None = None
    eval_mode: Callable | None = None  # (b, node) -> name computing the node in eval mode
    # (b, node, name) -> the train step's forward form of the node, built of other ops, its
    # last one named `name` (the node's own). Run after autodiff (the op's own backward
    # stays) and before CSE, which merges what the two share (a norm's normalised input).
    expand: Callable | None = None
    state: Callable | None = None      # (b, node) adds persistent state and its train-step updates
    doc: str = ""

    def expression(self, node) -> str:
        return self.c_expr(node) if callable(self.c_expr) else self.c_expr

    def output_dtype(self, node, in_dtypes):
        return self.dtype(node, in_dtypes) if callable(self.dtype) else self.dtype


REGISTRY: dict[str, OpDef] = {}


def always(node, shapes):
    """A `one_thread` for routines without any OpenMP in them."""
    return True


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"op {opdef.name!r} registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name, node=None) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(n for n in REGISTRY if not n.endswith("_grad")))
        raise GraphError(f"unknown op {name!r} (known ops: {known})", node=node) from None


def shape_error(node, message, *shapes):
    shown = " and ".join(format_shape(s) for s in shapes)
    raise ShapeError(f"{message}" + (f" (got {shown})" if shapes else ""), node=node.name)


def format_shape(shape):
    return "(" + ", ".join("batch" if d == BATCH else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def broadcast_shapes(node, *shapes):
    """NumPy broadcasting over static dims and the batch symbol."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            shape_error(node, "shapes do not broadcast", *shapes)
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def same_shape(node, shapes):
    return shapes[0]


def float_literal(value) -> str:
    """A C float literal that round-trips the float32 value exactly."""
    import numpy as np

    v = np.float32(value)
    if np.isnan(v):
        return "NAN"
    if np.isinf(v):
        return "INFINITY" if v > 0 else "(-INFINITY)"
    text = np.format_float_scientific(v, unique=True)  # shortest repr that round-trips
    return f"{text}f" if v >= 0 else f"({text}f)"
