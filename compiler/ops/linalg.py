"""matmul (with optional transposes, which its own gradient uses) and sum_to."""
import numpy as np

from ..ir import BATCH
from .registry import ELEMENTWISE, KERNEL, REDUCE, REQUIRED, OpDef, broadcast_shapes, register, shape_error




def _mat(x, transposed):
    return x.T if transposed else x


def _matmul_shape(node, shapes):
    a, b = shapes
    if len(a) != 2 or len(b) != 2:
        shape_error(node, "matmul takes two 2-D operands", a, b)
    ta, tb = node.attrs["trans_a"], node.attrs["trans_b"]
    m, k = (a[1], a[0]) if ta else a
    k2, n = (b[1], b[0]) if tb else b
    if k != k2:
        shape_error(node, f"inner dimensions differ ({'batch' if k == BATCH else k} vs "
                          f"{'batch' if k2 == BATCH else k2})", a, b)
    return (m, n)


def _matmul_grad(b, node, gy):
    """Gradients of C = op(A) @ op(B) for each transposition of the operands."""
    a, w = node.inputs
    ta, tb = node.attrs["trans_a"], node.attrs["trans_b"]
    if not ta and not tb:
        return [b.op("matmul", gy, w, trans_b=True), b.op("matmul", a, gy, trans_a=True)]
    if ta and not tb:
        return [b.op("matmul", w, gy, trans_b=True), b.op("matmul", a, gy)]
    if not ta and tb:
        return [b.op("matmul", gy, w), b.op("matmul", gy, a, trans_a=True)]
    return [b.op("matmul", w, gy, trans_a=True, trans_b=True),
            b.op("matmul", gy, a, trans_a=True, trans_b=True)]


# nncc_sgemm_update rounds C + alpha * product as an SGD step applied to the stored gradient
# would while K fits one K block of the GEMM: NNCC_GEMM_KC in templates/kernels/gemm.c.j2 (a test
# checks that they agree).
GEMM_K_BLOCK = 512


# Below this many flops (2*M*N*K) a GEMM runs on the calling thread:
# NNCC_GEMM_PAR_MIN_FLOPS in templates/kernels/gemm.c.j2 (a test checks that they agree).
GEMM_PARALLEL_MIN_FLOPS = 1_000_000


def matmul_flops(node, shapes):
    """2 * M * N * K of a matmul with concrete input shapes."""
    (m, n), inner = _matmul_shape(node, shapes), _inner(node, shapes)
    return 2 * m * n * inner


def _one_thread(node, shapes):
    return matmul_flops(node, shapes) < GEMM_PARALLEL_MIN_FLOPS


def _inner(node, shapes):
    return shapes[0][0] if node.attrs["trans_a"] else shapes[0][1]


def _matmul_call(k):
    (a, b), (sa, sb) = k.args, k.in_shapes
    m, n = k.dims(k.out_shape)
    lda, out = k.dims(sa)[1], k.out
    inner = k.dims(sa)[0] if k.attrs["trans_a"] else lda
    if k.rows:  # rows [lo, hi) of C: rows of A, or its columns when transposed
        lo, hi = k.rows
        m, a, out = f"{hi} - {lo}", f"{a} + {lo}" if k.attrs["trans_a"] else f"{a} + {lo} * {lda}", f"{out} + {lo} * {n}"
    operands = (f"{int(k.attrs['trans_a'])}, {int(k.attrs['trans_b'])}, {m}, {n}, {inner}, "
                f"{a}, {lda}, {b}, {k.dims(sb)[1]}")
    if k.alpha:
        return f"nncc_sgemm_update({operands}, {k.alpha}, {out}, {n})"
    if k.epilogue:
        return f"nncc_sgemm_epilogue({operands}, {out}, {n}, {k.epilogue}, &epilogue)"
    return f"nncc_sgemm({operands}, 0.0f, {out}, {n})"


def _matmul_samples(rng):
    cases = []
    for ta in (False, True):
        for tb in (False, True):
            a = rng.normal(size=(3, 4) if ta else (4, 3))
            b = rng.normal(size=(5, 3) if tb else (3, 5))
            cases.append(([a, b], {"trans_a": ta, "trans_b": tb}))
    return cases


register(OpDef(
    name="matmul", arity=2, kind=KERNEL, attrs={"trans_a": False, "trans_b": False},
    shape=_matmul_shape,
    reference=lambda ctx, node, a, b: _mat(a, node.attrs["trans_a"]) @ _mat(b, node.attrs["trans_b"]),
    grad=_matmul_grad, c_call=_matmul_call, library="gemm", samples=_matmul_samples, takes_epilogue=True,
    adds_scaled=lambda node, shapes: _inner(node, shapes) <= GEMM_K_BLOCK,
    one_thread=_one_thread, splits_rows=True,
    doc="a @ b for 2-D operands; a weight is (in, out). trans_a/trans_b transpose an operand.",
))


def _sum_to_shape(node, shapes):
    (x,), target = shapes, tuple(node.attrs["shape"])
    padded = (1,) * (len(x) - len(target)) + target
    if len(target) > len(x) or any(t not in (1, d) for t, d in zip(padded, x)):
        shape_error(node, f"cannot sum {x} down to {target}", x)
    return target


def _sum_to_reference(ctx, node, x):
    target = ctx.concrete(node.attrs["shape"])
    lead = x.ndim - len(target)
    axes = tuple(range(lead)) + tuple(lead + i for i, t in enumerate(target) if t == 1 and x.shape[lead + i] != 1)
    return np.sum(x, axis=axes, keepdims=True).reshape(target)


register(OpDef(
    name="sum_to", arity=1, kind=REDUCE, attrs={"shape": REQUIRED},
    shape=_sum_to_shape, reference=_sum_to_reference, c_expr="{0}",
    grad=lambda b, node, gy: [b.op("broadcast_to", gy, shape=b.shape(node.inputs[0]))],
    samples=lambda rng: [([rng.normal(size=(4, 3))], {"shape": s}) for s in [(3,), (1, 3), (4, 1), (), (4, 3)]],
    doc="Sums x over its broadcast dimensions down to `shape`: how autodiff undoes broadcasting.",
))

def _broadcast_to_shape(node, shapes):
    target = tuple(node.attrs["shape"])
    if broadcast_shapes(node, shapes[0], target) != target:
        shape_error(node, f"cannot broadcast to {target}", shapes[0])
    return target


register(OpDef(
    name="broadcast_to", arity=1, kind=ELEMENTWISE, attrs={"shape": REQUIRED},
    shape=_broadcast_to_shape,
    reference=lambda ctx, node, x: np.broadcast_to(x, ctx.concrete(node.attrs["shape"])).copy(),
    c_expr="{0}",
    grad=lambda b, node, gy: [b.op("sum_to", gy, shape=b.shape(node.inputs[0]))],
    samples=lambda rng: [([rng.normal(size=(3,))], {"shape": (4, 3)}), ([rng.normal(size=(4, 1))], {"shape": (4, 3)})],
    doc="Repeats x along broadcast dimensions (the gradient of sum_to).",
))
