"""Whole models: compiled training against the float64 reference interpreter.

Both start from the same float32 initial values (same graph, same seed); each step feeds
both the same batch; the loss of every step and every param after every step must agree.

Tolerances: the compiled step runs in float32 (unit roundoff 6e-8); the reference runs in
float64 from the same float32 start values. A dot product over K terms has a relative error
~sqrt(K) * 6e-8 typically (K * 6e-8 worst case); each SGD update adds only lr times the
gradient's error, so errors grow slowly over 10 steps. Measured over 10 steps: losses agree
to <= 7e-8 relative, params to <= 1.4e-7 absolute (W1, W2 and the shared-weight model).
rtol 2e-5 / atol 2e-6 leave a >10x margin over that (for other CPUs' FMA contraction and
OpenMP summation orders) while still catching any real error (a wrong factor, a missed
broadcast sum, a stale buffer, all O(1e-3) or more). atol matters for near-zero entries,
whose float32 error is absolute (~1e-7 of the O(1) terms that cancel), not relative.
"""
from __future__ import annotations

import numpy as np
import pytest

import nncc
from nncc.reference import Interpreter

RTOL, ATOL = 2e-5, 2e-6
STEPS = 10


# -- models ---------------------------------------------------------------------------------

def w1_graph(reduction="mean"):
    """MLP 1 -> 64 -> 64 -> 1, tanh, MSE: regress sin(2x)."""
    b = nncc.GraphBuilder()
    x = b.input("x", (None, 1))
    t = b.input("t", (None, 1))
    h = b.tanh(b.linear(x, 1, 64, name="fc1"), name="h1")
    h = b.tanh(b.linear(h, 64, 64, name="fc2"), name="h2")
    y = b.linear(h, 64, 1, name="fc3")
    b.mse_loss(y, t, name="loss", reduction=reduction)
    return b.graph


def w1_data(rng, rows):
    x = rng.uniform(-2.0, 2.0, size=(rows, 1)).astype(np.float32)
    return {"x": x, "t": np.sin(2.0 * x).astype(np.float32)}


def w2_graph(reduction="mean"):
    """MLP 784 -> 128 -> 10, relu, softmax cross-entropy on int32 labels."""
    b = nncc.GraphBuilder()
    x = b.input("x", (None, 784))
    y = b.input("y", (None,), dtype="int32")
    h = b.relu(b.linear(x, 784, 128, name="fc1"), name="h1")
    b.softmax_cross_entropy(b.linear(h, 128, 10, name="fc2"), y, name="loss", reduction=reduction)
    return b.graph


def w2_data(rng, rows):
    return {"x": rng.uniform(0.0, 1.0, size=(rows, 784)).astype(np.float32),
            "y": rng.integers(0, 10, size=rows).astype(np.int32)}


def shared_residual_graph():
    """A deeper MLP: one weight W feeds two matmuls (param fan-out), h1 feeds both the
    next layer and a residual add (activation fan-out), a sub-residual, a bias broadcast."""
    b = nncc.GraphBuilder()
    x = b.input("x", (None, 8))
    y = b.input("y", (None,), dtype="int32")
    h1 = b.tanh(b.linear(x, 8, 16, name="fc_in"), name="h1")
    w = b.param("W_shared", (16, 16))
    h2 = b.relu(b.add(b.matmul(h1, w, name="mm_a"), b.param("b_a", (16,), fan_in=16), name="z_a"), name="h2")
    h3 = b.tanh(b.matmul(h2, w, name="mm_b"), name="h3")
    r = b.add(h3, h1, name="residual")
    r2 = b.sub(b.sigmoid(b.linear(r, 16, 16, name="fc_mid"), name="gate"), r, name="residual2")
    logits = b.linear(r2, 16, 5, name="fc_out")
    b.softmax_cross_entropy(logits, y, name="loss")
    return b.graph


def shared_residual_data(rng, rows):
    return {"x": rng.normal(size=(rows, 8)).astype(np.float32),
            "y": rng.integers(0, 5, size=rows).astype(np.int32)}


# -- helpers --------------------------------------------------------------------------------

def compare_state(trainer, ref, what, rtol=RTOL, atol=ATOL):
    assert set(trainer.params) == set(ref.params)
    for p, value in trainer.params.items():
        np.testing.assert_allclose(value, ref.state[p], rtol=rtol, atol=atol, err_msg=f"{p} {what}")


def train_both(trainer, ref, batches, rtol=RTOL, atol=ATOL):
    """Step both on each batch, comparing the loss and every param after each step."""
    losses = []
    for k, feeds in enumerate(batches):
        got, want = trainer.step(**feeds), ref.step(**feeds)
        assert np.isfinite(got)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"loss at step {k + 1}")
        compare_state(trainer, ref, f"after step {k + 1}", rtol, atol)
        losses.append(got)
    return losses


class Model:
    """A compiled trainer reused by the tests of a module, reset to its start state."""

    def __init__(self, graph, batch_size, lr, data, outputs=None):
        self.graph, self.batch_size, self.lr, self.data = graph, batch_size, lr, data
        self.outputs = outputs
        self.trainer = nncc.compile(graph, loss="loss", outputs=outputs, optimizer=nncc.SGD(lr=lr),
                                    batch_size=batch_size, seed=0)
        self.initial = self.trainer.state_dict()

    def fresh(self):
        self.trainer.load_state_dict(self.initial)
        assert self.trainer.lr == pytest.approx(self.lr)
        return self.trainer

    def reference(self):
        return Interpreter(self.graph, loss="loss", outputs=self.outputs, optimizer=nncc.SGD(lr=self.lr), seed=0)

    def batches(self, seed, steps=STEPS, rows=None):
        rng = np.random.default_rng(seed)
        return [self.data(rng, rows or self.batch_size) for _ in range(steps)]


@pytest.fixture(scope="module")
def w1():
    return Model(w1_graph(), batch_size=32, lr=0.05, data=w1_data)


@pytest.fixture(scope="module")
def w2():
    return Model(w2_graph(), batch_size=64, lr=0.01, data=w2_data)


@pytest.fixture(scope="module")
def deep():
    return Model(shared_residual_graph(), batch_size=16, lr=0.1, data=shared_residual_data)


# -- whole-model training -------------------------------------------------------------------

def test_same_initial_values_as_reference(w1, w2):
    for model in (w1, w2):
        trainer, ref = model.fresh(), model.reference()
        for p, value in trainer.params.items():
            np.testing.assert_array_equal(value, ref.state[p].astype(np.float32), err_msg=p)


def test_w1_tanh_mse_ten_steps(w1):
    losses = train_both(w1.fresh(), w1.reference(), w1.batches(seed=1))
    assert len(losses) == STEPS


def test_w1_learns(w1):
    """Sanity of the trajectory itself: training on one fixed batch lowers its loss."""
    trainer = w1.fresh()
    feeds = w1.batches(seed=2, steps=1)[0]
    losses = [trainer.step(**feeds) for _ in range(30)]
    assert losses[-1] < 0.9 * losses[0]


def test_w2_relu_cross_entropy_ten_steps(w2):
    train_both(w2.fresh(), w2.reference(), w2.batches(seed=3))


def test_shared_weight_and_residual_ten_steps(deep):
    trainer, ref = deep.fresh(), deep.reference()
    # The shared weight's gradient is the sum over both uses (and h1's over its two
    # consumers): spot-check the reference's symbolic gradient against float64 central
    # differences (error ~1e-9 relative at eps 1e-6, see test_ops.py).
    feeds = deep.batches(seed=4, steps=1)[0]
    grads = ref.gradients(**feeds)
    assert set(grads) == set(trainer.params)
    rng = np.random.default_rng(40)
    for p in ("W_shared", "fc_in.W", "b_a"):
        value = ref.state[p]
        for _ in range(4):
            idx = tuple(int(rng.integers(d)) for d in value.shape)
            saved = value[idx]
            value[idx] = saved + 1e-6
            up = ref.forward(**feeds)["loss"]
            value[idx] = saved - 1e-6
            down = ref.forward(**feeds)["loss"]
            value[idx] = saved
            np.testing.assert_allclose(grads[p][idx], (up - down) / 2e-6, rtol=1e-6, atol=1e-8,
                                       err_msg=f"d loss / d {p}{list(idx)}")
    train_both(trainer, ref, deep.batches(seed=5))


def test_predict_more_rows_than_batch_size(w2, w1):
    for model in (w2, w1):
        trainer, ref = model.fresh(), model.reference()
        train_both(trainer, ref, model.batches(seed=6, steps=2))
        rows = 3 * model.batch_size + 5
        feeds = model.data(np.random.default_rng(7), rows)
        x = {"x": feeds["x"]}
        got, want = trainer.predict(**x), ref.predict(**x)
        assert set(got) == set(want) and got
        for name in got:
            assert got[name].shape == want[name].shape and got[name].shape[0] == rows
            np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, err_msg=name)
        # Rows are independent in eval mode: the first rows alone give the same outputs.
        few = trainer.predict(x=feeds["x"][:3])
        for name in got:
            np.testing.assert_allclose(few[name], got[name][:3], rtol=RTOL, atol=ATOL)


def test_predict_on_fewer_rows_than_batch_size(w1):
    trainer, ref = w1.fresh(), w1.reference()
    x = w1.data(np.random.default_rng(8), 1)["x"]
    np.testing.assert_allclose(trainer.predict(x=x)["fc3"], ref.predict(x=x)["fc3"], rtol=RTOL, atol=ATOL)


# -- partial last batch -----------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_partial_last_batch(reduction):
    """A batch of fewer rows than batch_size runs without a rebuild; `mean` divides by the
    rows of this call, not by the capacity."""
    graph = w1_graph(reduction)
    trainer = nncc.compile(graph, optimizer=nncc.SGD(lr=0.01), batch_size=16, seed=0)
    ref = Interpreter(graph, optimizer=nncc.SGD(lr=0.01), seed=0)
    rng = np.random.default_rng(9)
    batches = [w1_data(rng, rows) for rows in (16, 16, 5, 1, 16, 11)]
    for k, feeds in enumerate(batches):
        # Independent of the reference: the loss of n rows from the eval outputs.
        pred = trainer.predict(x=feeds["x"])["fc3"].astype(np.float64)
        sq = np.sum((pred - feeds["t"]) ** 2)
        expected = sq / pred.size if reduction == "mean" else sq
        got, want = trainer.step(**feeds), ref.step(**feeds)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=f"step {k}: loss vs predict")
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"step {k}: loss")
        compare_state(trainer, ref, f"after step {k} ({len(feeds['x'])} rows)")


def test_step_rejects_more_rows_than_batch_size(w1):
    trainer = w1.fresh()
    feeds = w1.data(np.random.default_rng(10), w1.batch_size + 1)
    with pytest.raises(nncc.FeedError, match="x"):
        trainer.step(**feeds)
    # Nothing changed.
    for p, value in trainer.params.items():
        np.testing.assert_array_equal(value, w1.initial[p])


# -- run-time state: lr, state_dict, live params ---------------------------------------------

def test_lr_change_takes_effect_on_next_step(w1):
    trainer, ref = w1.fresh(), w1.reference()
    batches = w1.batches(seed=11, steps=6)
    train_both(trainer, ref, batches[:2])
    trainer.lr = 0.2
    ref.lr = 0.2
    assert trainer.lr == pytest.approx(0.2)
    # The very next step uses the new rate: p_after - p_before == -0.2 * grad.
    grads = ref.gradients(**batches[2])
    before = {p: v.copy() for p, v in trainer.params.items()}
    train_both(trainer, ref, batches[2:3])
    for p, g in grads.items():
        np.testing.assert_allclose(trainer.params[p] - before[p], -0.2 * g, rtol=1e-3, atol=1e-6, err_msg=p)
    trainer.lr = 0.0
    ref.lr = 0.0
    frozen = {p: v.copy() for p, v in trainer.params.items()}
    train_both(trainer, ref, batches[3:4])
    for p in frozen:
        np.testing.assert_array_equal(trainer.params[p], frozen[p], err_msg=f"{p} moved with lr=0")
    trainer.lr = 0.05
    ref.lr = 0.05
    train_both(trainer, ref, batches[4:])


def test_state_dict_round_trip(w2):
    trainer = w2.fresh()
    batches = w2.batches(seed=12, steps=6)
    for feeds in batches[:2]:
        trainer.step(**feeds)
    saved = trainer.state_dict()
    assert set(saved) >= set(trainer.params)
    first = [trainer.step(**feeds) for feeds in batches[2:]]
    after_first = trainer.state_dict()
    # state_dict returns copies: training did not change `saved`.
    assert not np.array_equal(saved["fc1.W"], after_first["fc1.W"])
    trainer.load_state_dict(saved)
    for p, value in trainer.params.items():
        np.testing.assert_array_equal(value, saved[p], err_msg=p)
    again = [trainer.step(**feeds) for feeds in batches[2:]]
    # Same state, same batches, same code: the same trajectory, bit for bit.
    assert again == first
    for p, value in trainer.params.items():
        np.testing.assert_array_equal(value, after_first[p], err_msg=p)


def test_state_dict_into_another_trainer(w1):
    """A state loaded into a second trainer of the same graph (different seed) continues
    exactly as the first, and as the reference loaded with the same state."""
    trainer = w1.fresh()
    batches = w1.batches(seed=13, steps=5)
    for feeds in batches[:2]:
        trainer.step(**feeds)
    saved = trainer.state_dict()
    other = nncc.compile(w1.graph, optimizer=nncc.SGD(lr=w1.lr), batch_size=w1.batch_size, seed=123)
    assert not np.array_equal(other.params["fc1.W"], saved["fc1.W"])
    other.load_state_dict(saved)
    ref = w1.reference()
    ref.load_state_dict({p: saved[p] for p in trainer.params})
    got = [other.step(**feeds) for feeds in batches[2:]]
    want = [trainer.step(**feeds) for feeds in batches[2:]]
    assert got == want
    for feeds, loss in zip(batches[2:], got):
        np.testing.assert_allclose(loss, ref.step(**feeds), rtol=RTOL, atol=ATOL)
    compare_state(other, ref, "after loading and training")


def test_load_state_dict_rejects_a_wrong_shape(w1):
    trainer = w1.fresh()
    bad = dict(w1.initial)
    bad["fc2.W"] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(nncc.CheckpointError, match="fc2.W"):
        trainer.load_state_dict(bad)
    for p, value in trainer.params.items():  # all or nothing
        np.testing.assert_array_equal(value, w1.initial[p], err_msg=p)


def test_params_are_live_views(w1):
    trainer, ref = w1.fresh(), w1.reference()
    batches = w1.batches(seed=14, steps=4)
    view = trainer.params["fc2.W"]
    before = view.copy()
    train_both(trainer, ref, batches[:1])
    # The view taken before the step sees the update.
    assert not np.array_equal(view, before)
    np.testing.assert_allclose(view, ref.state["fc2.W"], rtol=RTOL, atol=ATOL)
    # Writing through the views changes what the next step computes.
    rng = np.random.default_rng(15)
    new_w = rng.normal(scale=0.2, size=view.shape).astype(np.float32)
    trainer.params["fc2.W"][...] = new_w
    trainer.params["fc3.b"][...] = 0.5
    ref.state["fc2.W"] = new_w.astype(np.float64)
    ref.state["fc3.b"] = np.full(ref.state["fc3.b"].shape, 0.5)
    np.testing.assert_array_equal(trainer.state_dict()["fc2.W"], new_w)
    out = trainer.predict(x=batches[1]["x"])["fc3"]
    np.testing.assert_allclose(out, ref.predict(x=batches[1]["x"])["fc3"], rtol=RTOL, atol=ATOL)
    train_both(trainer, ref, batches[1:])


# -- node names are names, not C identifiers or reserved keys ---------------------------------

NAME_CASES = {
    # An elementwise node named like the emitted kernels' local temporaries.
    "c-local-x0": dict(h2="x0"),
    "c-local-x1-param": dict(b="x1"),
    # C keywords.
    "c-keyword-input": dict(x="return"),
    "c-keyword-param": dict(b="const"),
    # Param names that state_dict also uses for its counters.
    "param-named-lr": dict(b="lr"),
    "param-named-step": dict(b="step"),
    # Names that are not C identifiers at all.
    "punctuation": dict(x="x.in", h1="h-1", w="W 1"),
}


@pytest.mark.parametrize("names", list(NAME_CASES.values()), ids=list(NAME_CASES))
def test_node_names_are_only_names(names):
    """Users name nodes freely (DESIGN: any graph a user writes must work): nncc must mangle
    names in the C it emits and keep them apart from its own keys."""
    n = dict(x="x", y="y", w="W", b="b", h1="h1", h2="h2") | names
    b = nncc.GraphBuilder()
    b.input(n["x"], (None, 3))
    b.input(n["y"], (None, 2))
    b.param(n["w"], (3, 2))
    b.param(n["b"], (2,), fan_in=3)
    b.op("add", b.op("matmul", n["x"], n["w"], name="mm"), n["b"], name=n["h1"])
    b.op("tanh", n["h1"], name=n["h2"])
    b.op("mse_loss", n["h2"], n["y"], name="loss")
    trainer = nncc.compile(b.graph, optimizer=nncc.SGD(lr=0.1), batch_size=4, seed=0)
    ref = Interpreter(b.graph, optimizer=nncc.SGD(lr=0.1), seed=0)
    rng = np.random.default_rng(16)
    batches = [{n["x"]: rng.normal(size=(4, 3)).astype(np.float32),
                n["y"]: rng.normal(size=(4, 2)).astype(np.float32)} for _ in range(3)]
    train_both(trainer, ref, batches)
    saved = trainer.state_dict()
    for p in (n["w"], n["b"]):
        np.testing.assert_array_equal(saved[p], trainer.params[p], err_msg=p)
    trainer.load_state_dict(saved)
    compare_state(trainer, ref, "after a state_dict round trip")


def test_step_reuses_arguments_only_for_unconverted_arrays():
    """A float64 feed is converted each call: editing it in place must be seen next step."""
    import nncc as _nncc

    b = _nncc.GraphBuilder()
    x = b.input("x", (None, 2))
    t = b.input("t", (None, 1))
    b.mse_loss(b.linear(x, 2, 1, name="fc"), t, name="loss")
    trainer = _nncc.compile(b.graph, optimizer=_nncc.SGD(lr=0.0), batch_size=4)
    xs = np.ones((4, 2))            # float64: converted on every call
    ts = np.zeros((4, 1), np.float32)
    first = trainer.step(x=xs, t=ts)
    xs[...] = 2.0
    assert trainer.step(x=xs, t=ts) != first
    x32 = np.ones((4, 2), np.float32)  # float32: reused, and in-place edits are seen too
    first = trainer.step(x=x32, t=ts)
    x32[...] = 2.0
    assert trainer.step(x=x32, t=ts) != first
    x32.shape = (2, 4)  # the same array object, reshaped in place: checked again, not reused
    with pytest.raises(nncc.FeedError, match="x"):
        trainer.step(x=x32, t=ts)


@pytest.mark.parametrize("rows,classes", [(3, 2100), (600, 5)], ids=["wider than a block", "many blocks"])
def test_cross_entropy_over_many_classes_or_rows_matches_the_reference(rows, classes):
    """The loss exponentiates whole blocks of rows at a time (2048 floats on the stack), or a
    row wider than that in chunks: both follow the reference, loss and gradient."""
    b = nncc.GraphBuilder()
    x = b.input("x", (None, classes))
    y = b.input("y", (None,), dtype="int32")
    bias = b.param("bias", (classes,), init="zeros")
    b.softmax_cross_entropy(b.add(x, bias, name="logits"), y, name="loss")
    trainer = nncc.compile(b.graph, optimizer=nncc.SGD(lr=0.5), batch_size=rows)
    rng = np.random.default_rng(rows)
    feeds = {"x": rng.normal(size=(rows, classes)).astype(np.float32) * 3,
             "y": rng.integers(0, classes, size=rows).astype(np.int32)}
    nncc.testing.assert_matches_reference(trainer, feeds, steps=2)
