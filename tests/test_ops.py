"""Tests generated from the op registry: every op, every sample it declares.

For each non-source op and each of its `samples(rng)` cases we put the op into a small
graph, generically:

* gradient check (differentiable ops, i.e. with a `grad` rule): the reference
  interpreter's symbolic gradients against float64 central finite differences;
* compiled vs reference: `trainer.predict` of the op's output against
  `Interpreter.predict`, then train steps through `nncc.testing.run_both` (losses, every
  param after each update, eval outputs afterwards).

How a sample becomes a graph (`build_case`):

* int inputs (class labels) are always `input` nodes of shape (None, ...), int32;
* each float operand is either *static* (a `param` whose `value` is the sample array) or
  *batched* (its first dimension becomes the run-time batch dimension).  Which float
  operands get batched is searched over all subsets, letting nncc's own shape inference
  reject combinations that do not type-check (e.g. matmul with trans_a needs both operands
  batched, sum_to down to (4, 1) none).  The gradient check prefers the fewest batched
  operands (so every float operand is a param of its own); the compiled test prefers the
  most (so the run-time row count `n` reaches the op's kernel).
* a batched operand is `input + param` (the param, zeros of the trailing shape, gets the
  batch-summed gradient; x + 0 is exact) in the compiled test, and `eye(N) @ param` in the
  gradient check (exact too, and every element of the sample stays a param of its own).
* the head: a scalar op output is the loss itself; otherwise loss = mse_loss(op, target,
  "sum") with a random target (an `input` when the output is batched, else a `param`).
* ops without a gradient rule (relu_grad, softmax_grad, the update ops, ...) cannot sit
  between params and the loss, so they are an *output* only: their operands are plain
  `input`s (static ones params), and the loss is a separate term per param,
  mse_loss(param, random param), which is all that the train step then updates.

An op whose samples can't be put into a graph this way needs an explicit adapter in
ADAPTERS (not a skip): the generic builder fails loudly saying so.
"""
from __future__ import annotations

import itertools
import zlib

import networkx as nx
import numpy as np
import pytest

import nncc
from nncc.compiler.errors import NNCCError
from nncc.compiler.ir import BATCH
from nncc.compiler.load import infer_shapes, load
from nncc.compiler.ops import REGISTRY, SOURCE
from nncc.reference import Interpreter
from nncc.testing import run_both

LR = 0.01

# -- tolerances ---------------------------------------------------------------------------
# Gradient check, all float64: central differences f'(x) ~ (f(x+e) - f(x-e)) / 2e have
# truncation error e^2 |f'''| / 6 ~ 1e-13 and round-off error ~ 1e-16 |f| / e ~ 1e-10 |f|
# for e = 1e-6 (|f| is at most ~1e2 here), i.e. about 1e-9 relative.  rtol 1e-6 / atol 1e-7
# leave two to three orders of margin on that yet catch any real gradient error (a wrong
# factor, sign, transpose or a missed broadcast sum is O(1)).
FD_EPS = 1e-6
FD_RTOL, FD_ATOL = 1e-6, 1e-7

# Compiled (float32) vs reference (float64 from the same float32 start values): a single op
# rounds each result once or accumulates a short sum (<= 12 terms here), plus libm's expf /
# tanhf (<= 2 ulp), so results agree to a few float32 ulps (6e-8 each): ~1e-6 relative.
# After the SGD update p - lr * g the error is that of g scaled by lr, far below.  rtol 1e-5
# keeps a 10x margin; atol 1e-6 covers results that are small differences of O(1) values
# (e.g. softmax_grad's gy - sum(gy * y)), whose absolute error is ~1e-7 not relative.
RTOL, ATOL = 1e-5, 1e-6


# -- the generic case builder -------------------------------------------------------------

class Case:
    """A graph holding one op sample, plus its feeds and what to compile it with."""

    def __init__(self, graph, feeds, loss, outputs, predict_feeds, op_node="op"):
        self.graph, self.feeds, self.loss, self.outputs = graph, feeds, loss, outputs
        self.predict_feeds, self.op_node = predict_feeds, op_node

    def interpreter(self):
        return Interpreter(self.graph, loss=self.loss, outputs=self.outputs,
                           optimizer=nncc.SGD(lr=LR), seed=0)

    def compile(self, batch_size=None):
        rows = max(len(v) for v in self.feeds.values())
        return nncc.compile(self.graph, loss=self.loss, outputs=self.outputs,
                            optimizer=nncc.SGD(lr=LR), batch_size=batch_size or rows, seed=0)


def _differentiable(opdef):
    return opdef.grad is not None


def _samples(opdef):
    """The op's samples, from a generator seeded by the op's name (stable across runs)."""
    return opdef.samples(np.random.default_rng(zlib.crc32(opdef.name.encode())))


def _float_slots(opdef, inputs):
    return [i for i in range(len(inputs)) if i not in opdef.int_inputs]


def _add(g, name, op, *srcs, **attrs):
    g.add_node(name, op=op, **attrs)
    for slot, src in enumerate(srcs):
        g.add_edge(src, name, arg=slot)
    return name


def _graph_for(opdef, inputs, attrs, batched, mode, rng):
    """Build the graph for one sample with float slots `batched` batched.

    mode: "grad" (gradient check), "compiled" (differentiable op in the compiled test) or
    "output" (op without a gradient rule: an output, not on the loss path).
    Returns (graph, feeds, loss, outputs, predict_feeds) or raises NNCCError when the
    graph does not type-check.
    """
    g = nx.DiGraph()
    feeds, params, batched_nodes = {}, [], []
    srcs = []
    for slot, value in enumerate(inputs):
        value = np.asarray(value)
        if slot in opdef.int_inputs:
            name = _add(g, f"feed{slot}", "input", shape=(None,) + value.shape[1:], dtype="int32")
            feeds[name] = value.astype(np.int32)
        elif slot in batched:
            rest = value.shape[1:]
            if mode == "output":
                name = _add(g, f"feed{slot}", "input", shape=(None,) + rest)
                feeds[name] = value.astype(np.float32)
            elif mode == "grad" and value.ndim == 2:
                eye = _add(g, f"identity{slot}", "input", shape=(None, value.shape[0]))
                feeds[eye] = np.eye(value.shape[0], dtype=np.float32)
                p = _add(g, f"weight{slot}", "param", shape=value.shape, value=value)
                params.append(p)
                name = _add(g, f"operand{slot}", "matmul", eye, p)
            else:
                x = _add(g, f"feed{slot}", "input", shape=(None,) + rest)
                feeds[x] = value.astype(np.float32)
                p = _add(g, f"offset{slot}", "param", shape=rest, value=np.zeros(rest))
                params.append(p)
                name = _add(g, f"operand{slot}", "add", x, p)
            batched_nodes.append(name)
        else:
            name = _add(g, f"weight{slot}", "param", shape=value.shape, value=value)
            params.append(name)
        srcs.append(name)
    op = _add(g, "op", opdef.name, *srcs, **attrs)

    shapes = infer_shapes(load(g))  # raises ShapeError if this batching does not fit
    out_shape = shapes["op"].shape
    out_batched = out_shape[:1] == (BATCH,)
    if BATCH in out_shape[1:]:
        # e.g. matmul(a, batched b, trans_b): the batch would be a column dimension, which
        # no feed or target can have; choose another batching.
        raise NNCCError(f"the op's output {out_shape} has the batch dimension after the first axis")
    rows = {len(v) for v in feeds.values()}
    if len(rows) > 1:
        raise NNCCError(f"batched feeds disagree on the row count: {sorted(rows)}")

    if mode == "output":
        terms = []
        for p in params or ["aux"]:
            value = np.asarray(g.nodes[p]["value"]) if p in g else np.array([0.5])
            if p not in g:
                _add(g, p, "param", shape=value.shape, value=value)
            t = _add(g, f"t_{p}", "param", shape=value.shape, value=rng.normal(size=value.shape))
            terms.append(_add(g, f"term_{p}", "mse_loss", p, t, reduction="sum"))
        loss = terms[0]
        for k, term in enumerate(terms[1:]):
            loss = _add(g, f"sum{k}", "add", loss, term)
    elif out_shape == ():
        loss = op
    else:
        if out_batched:
            n = len(next(iter(feeds.values())))
            target = _add(g, "target", "input", shape=(None,) + tuple(out_shape[1:]))
            feeds[target] = rng.normal(size=(n,) + tuple(out_shape[1:])).astype(np.float32)
        else:
            target = _add(g, "target", "param", shape=out_shape, value=rng.normal(size=out_shape))
        loss = _add(g, "loss", "mse_loss", op, target, reduction="sum")

    # What predict() returns: outputs must have a batch dimension.
    if out_batched:
        outputs = [op]
    elif batched_nodes:
        outputs = batched_nodes[:1]
    elif mode == "grad":
        outputs = []  # the reference needs no feed
    else:
        # Nothing batched (e.g. sum_to down to (4, 1)): a pass-through output gives the
        # call its row count, so step() and predict() have a feed.
        _add(g, "aux_x", "input", shape=(None, 2))
        feeds["aux_x"] = rng.normal(size=(3, 2)).astype(np.float32)
        outputs = [_add(g, "aux_out", "neg", "aux_x")]
    eval_ancestors = set().union(*(nx.ancestors(g, o) | {o} for o in outputs))
    predict_feeds = {k: v for k, v in feeds.items() if k in eval_ancestors}
    return g, feeds, loss, outputs, predict_feeds


def build_case(opdef, inputs, attrs, mode, rng):
    """The sample as a graph, choosing which float operands are batched (see module doc)."""
    if opdef.name in ADAPTERS:
        return ADAPTERS[opdef.name](opdef, inputs, attrs, mode, rng)
    candidates = [i for i in _float_slots(opdef, inputs) if np.ndim(inputs[i]) >= 1]
    subsets = [set(c) for r in range(len(candidates) + 1) for c in itertools.combinations(candidates, r)]
    if mode != "grad":
        subsets.reverse()  # most batched first
    errors = []
    for batched in subsets:
        try:
            g, feeds, loss, outputs, predict_feeds = _graph_for(opdef, inputs, attrs, batched, mode, rng)
        except NNCCError as e:
            errors.append(f"batched {sorted(batched)}: {e}")
            continue
        return Case(g, feeds, loss, outputs, predict_feeds)
    raise AssertionError(f"op {opdef.name!r}: no generic graph fits this sample; add an adapter to "
                         f"ADAPTERS in tests/test_ops.py.\n" + "\n".join(errors))


# Ops that need a hand-written graph: name -> f(opdef, inputs, attrs, mode, rng) -> Case.
ADAPTERS = {}


# -- parametrisation from the registry ----------------------------------------------------

COMPUTE_OPS = sorted(name for name, op in REGISTRY.items() if op.kind != SOURCE)
# Ops without samples, each with an explicit test below instead.
EXPLICITLY_TESTED = {"constant": "test_constant_op"}


def _params(predicate):
    out = []
    for name in COMPUTE_OPS:
        opdef = REGISTRY[name]
        if opdef.samples is None or not predicate(opdef):
            continue
        for k in range(len(_samples(opdef))):
            out.append(pytest.param(name, k, id=f"{name}-{k}"))
    return out


GRAD_CASES = _params(_differentiable)
ALL_CASES = _params(lambda op: True)


def _sample_case(name, k, mode):
    opdef = REGISTRY[name]
    inputs, attrs = _samples(opdef)[k]
    rng = np.random.default_rng([zlib.crc32(name.encode()), k])
    if mode != "grad" and not _differentiable(opdef):
        mode = "output"
    return opdef, build_case(opdef, inputs, attrs, mode, rng)


def test_every_op_is_covered():
    """Every compute op has samples (so the generated tests reach it) or its own test."""
    missing = [n for n in COMPUTE_OPS if REGISTRY[n].samples is None and n not in EXPLICITLY_TESTED]
    assert not missing, f"ops with neither samples nor an explicit test: {missing}"
    for name in COMPUTE_OPS:
        if REGISTRY[name].samples is not None:
            assert len(_samples(REGISTRY[name])) >= 1, name


# -- gradient check -----------------------------------------------------------------------

def finite_difference_gradients(ref, loss, feeds, eps=FD_EPS):
    """Central differences of the reference forward loss w.r.t. every element of every param."""
    out = {}
    for p in ref.train_graph.params:
        value = ref.state[p]
        grad = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            saved = value[idx]
            value[idx] = saved + eps
            up = ref.forward(**feeds)[loss]
            value[idx] = saved - eps
            down = ref.forward(**feeds)[loss]
            value[idx] = saved
            grad[idx] = (up - down) / (2 * eps)
        out[p] = grad
    return out


@pytest.mark.parametrize("name,k", GRAD_CASES)
def test_gradient_matches_finite_differences(name, k):
    opdef, case = _sample_case(name, k, "grad")
    ref = case.interpreter()
    symbolic = ref.gradients(**case.feeds)
    numeric = finite_difference_gradients(ref, case.loss, case.feeds)
    assert set(symbolic) == set(numeric) == set(ref.train_graph.params)
    for p in numeric:
        assert symbolic[p].shape == numeric[p].shape, p
        np.testing.assert_allclose(symbolic[p], numeric[p], rtol=FD_RTOL, atol=FD_ATOL,
                                   err_msg=f"d {case.loss} / d {p} for {name} sample {k}")


# -- compiled vs reference ----------------------------------------------------------------

@pytest.mark.parametrize("name,k", ALL_CASES)
def test_compiled_matches_reference(name, k):
    opdef, case = _sample_case(name, k, "compiled")
    trainer = case.compile()
    ref = case.interpreter()
    # Same float32 start values in both.
    for p, value in trainer.params.items():
        np.testing.assert_array_equal(value, ref.state[p].astype(np.float32), err_msg=p)
    # Eval-mode forward before any update.
    got, want = trainer.predict(**case.predict_feeds), ref.predict(**case.predict_feeds)
    assert set(got) == set(want) == set(case.outputs)
    for o in case.outputs:
        assert got[o].shape == want[o].shape, o
        _assert_finite(want[o], f"{name} sample {k}: predict {o}")
        np.testing.assert_allclose(got[o], want[o], rtol=RTOL, atol=ATOL, err_msg=f"predict {o}")
    # Train steps (forward + backward + SGD update), then every param and the outputs.
    for what, got, want in run_both(trainer, case.feeds, steps=2):
        _assert_finite(want, f"{name} sample {k}: {what}")
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"{name} sample {k}: {what}")


def _assert_finite(reference_value, what):
    """assert_allclose passes NaN == NaN: a sample whose reference value is NaN or inf
    would compare nothing, so it is a broken sample (fix the op's `samples`)."""
    assert np.all(np.isfinite(reference_value)), (
        f"{what}: the reference value is not finite, so the comparison would prove nothing; "
        f"the op's samples must give finite values")


# -- ops without samples: explicit tests ----------------------------------------------------

def _constant_graph():
    g = nx.DiGraph()
    _add(g, "x", "input", shape=(None, 3))
    _add(g, "b", "param", shape=(3,), init="uniform_fan_in", fan_in=3)
    _add(g, "h", "add", "x", "b")
    _add(g, "c", "constant", value=-1.5, shape=(3,))
    _add(g, "m", "mul", "h", "c")
    _add(g, "y", "input", shape=(None, 3))
    _add(g, "loss", "mse_loss", "m", "y", reduction="mean")
    rng = np.random.default_rng(7)
    feeds = {"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=(4, 3)).astype(np.float32)}
    return g, feeds


def test_constant_op():
    """`constant` (the seed of every backward pass) as a user-graph node: gradient check,
    and compiled vs reference."""
    g, feeds = _constant_graph()
    ref = Interpreter(g, loss="loss", outputs=["m"], optimizer=nncc.SGD(lr=LR))
    np.testing.assert_allclose(ref.forward(**feeds)["c"], np.full(3, -1.5))
    symbolic = ref.gradients(**feeds)
    numeric = finite_difference_gradients(ref, "loss", feeds)
    np.testing.assert_allclose(symbolic["b"], numeric["b"], rtol=FD_RTOL, atol=FD_ATOL)

    trainer = nncc.compile(g, loss="loss", outputs=["m"], optimizer=nncc.SGD(lr=LR), batch_size=4)
    for what, got, want in run_both(trainer, feeds, steps=2):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)
