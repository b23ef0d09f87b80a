"""Every class of bad input raises a clear, named error (never a crash or a wrong answer)."""
import networkx as nx
import numpy as np
import pytest

import nncc
from nncc import FeedError, GraphError, ShapeError


def tiny(hidden=4, classes=3):
    g = nx.DiGraph()
    g.add_node("x", op="input", shape=(None, 5))
    g.add_node("y", op="input", shape=(None,), dtype="int32")
    g.add_node("W", op="param", shape=(5, classes), init="uniform_fan_in")
    g.add_node("logits", op="matmul")
    g.add_edge("x", "logits", arg=0)
    g.add_edge("W", "logits", arg=1)
    g.add_node("loss", op="softmax_cross_entropy")
    g.add_edge("logits", "loss", arg=0)
    g.add_edge("y", "loss", arg=1)
    return g


def build_error(graph, match, cls=GraphError, **kwargs):
    with pytest.raises(cls, match=match) as info:
        nncc.compile(graph, **kwargs)
    return info.value


def test_unknown_op_names_node():
    g = tiny()
    g.nodes["logits"]["op"] = "matmull"
    err = build_error(g, r"node 'logits'.*unknown op 'matmull'")
    assert err.node == "logits"


def test_missing_op_attribute():
    g = tiny()
    del g.nodes["W"]["op"]
    build_error(g, r"node 'W'.*no 'op'")


def test_wrong_arity_names_missing_slot():
    g = tiny()
    g.remove_edge("W", "logits")
    build_error(g, r"node 'logits'.*takes 2 input\(s\); input slot\(s\) \[1\] have no edge")


def test_missing_arg_names_edge():
    g = tiny()
    del g.edges["W", "logits"]["arg"]
    err = build_error(g, r"edge 'W' -> 'logits'.*no 'arg'")
    assert err.edge == ("W", "logits")


def test_duplicate_arg_names_both_sources():
    g = tiny()
    g.edges["W", "logits"]["arg"] = 0
    build_error(g, r"node 'logits'.*two edges feed input slot 0")


def test_arg_out_of_range():
    g = tiny()
    g.edges["W", "logits"]["arg"] = 2
    build_error(g, r"'arg'=2 is out of range")


def test_cycle_is_reported_with_its_path():
    g = tiny()
    g.add_node("h", op="relu")
    g.add_node("h2", op="relu")
    g.add_edge("h", "h2", arg=0)
    g.add_edge("h2", "h", arg=0)
    build_error(g, r"cycle: h2? -> h2? -> h")


def test_shape_mismatch_shows_both_shapes():
    g = tiny()
    g.nodes["W"]["shape"] = (6, 3)
    err = build_error(g, r"node 'logits'.*inner dimensions differ \(5 vs 6\).*\(batch, 5\) and \(6, 3\)", ShapeError)
    assert err.node == "logits"


def test_broadcast_mismatch_shows_both_shapes():
    g = tiny()
    g.add_node("b", op="param", shape=(4,))
    g.add_node("z", op="add")
    g.add_edge("logits", "z", arg=0)
    g.add_edge("b", "z", arg=1)
    g.remove_edge("logits", "loss")
    g.add_edge("z", "loss", arg=0)
    build_error(g, r"node 'z'.*do not broadcast.*\(batch, 3\) and \(4,\)", ShapeError)


def test_loss_not_scalar():
    g = tiny()
    build_error(g, r"node 'logits'.*loss must be a scalar", loss="logits")


def test_param_without_path_to_loss():
    g = tiny()
    g.add_node("orphan", op="param", shape=(3,))
    err = build_error(g, r"node 'orphan'.*no path to the loss")
    assert err.node == "orphan"


def test_labels_must_be_int32():
    g = tiny()
    g.nodes["y"]["dtype"] = "float32"
    build_error(g, r"node 'loss'.*input slot 1 of 'softmax_cross_entropy' takes int32")


def test_input_needs_leading_batch_dim():
    g = tiny()
    g.nodes["x"]["shape"] = (5, None)
    build_error(g, r"node 'x'.*None as its first \(batch\) dimension")


def test_missing_required_attribute():
    g = tiny()
    del g.nodes["W"]["shape"]
    build_error(g, r"node 'W'.*needs the attribute 'shape'")


def test_unknown_loss_node():
    build_error(tiny(), r"no node named 'nope'", loss="nope")


def test_mse_rejects_silent_broadcast():
    g = nx.DiGraph()
    g.add_node("x", op="input", shape=(None, 1))
    g.add_node("t", op="input", shape=(None,))
    g.add_node("W", op="param", shape=(1, 1))
    g.add_node("p", op="matmul")
    g.add_edge("x", "p", arg=0)
    g.add_edge("W", "p", arg=1)
    g.add_node("loss", op="mse_loss")
    g.add_edge("p", "loss", arg=0)
    g.add_edge("t", "loss", arg=1)
    build_error(g, r"node 'loss'.*same shape.*\(batch, 1\) and \(batch,\)", ShapeError)


def test_unknown_attribute_warns():
    g = tiny()
    g.nodes["logits"]["tranz_a"] = True
    with pytest.warns(UserWarning, match=r"node 'logits'.*\['tranz_a'\]"):
        nncc.compile(g, batch_size=4)


# -- call time -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer():
    return nncc.compile(tiny(), batch_size=4)


X = np.ones((4, 5), np.float32)
Y = np.array([0, 1, 2, 0], np.int32)


def test_missing_feed(trainer):
    with pytest.raises(FeedError, match=r"feed 'y': missing") as info:
        trainer.step(x=X)
    assert info.value.feed == "y"


def test_unknown_feed(trainer):
    with pytest.raises(FeedError, match=r"feed 'z'.*unknown"):
        trainer.step(x=X, y=Y, z=X)


def test_wrong_shape(trainer):
    with pytest.raises(FeedError, match=r"feed 'x': expected shape \(n, 5\), got \(4, 6\)"):
        trainer.step(x=np.ones((4, 6), np.float32), y=Y)


def test_wrong_dtype(trainer):
    with pytest.raises(FeedError, match=r"feed 'y': class labels must be integers"):
        trainer.step(x=X, y=Y.astype(np.float32))
    with pytest.raises(FeedError, match=r"feed 'x': expected float32"):
        trainer.step(x=X.astype(str), y=Y)


def test_rows_disagree(trainer):
    with pytest.raises(FeedError, match=r"feed 'y': has 3 rows but 'x' has 4"):
        trainer.step(x=X, y=Y[:3])


def test_too_many_rows_names_capacity(trainer):
    with pytest.raises(FeedError, match=r"1\.\.4 rows.*got 5"):
        trainer.step(x=np.ones((5, 5), np.float32), y=np.zeros(5, np.int32))


@pytest.mark.parametrize("bad", [3, -1, 2**31 - 1])
def test_labels_out_of_range_checked_in_c(trainer, bad):
    before = trainer.params["W"].copy()
    labels = Y.copy()
    labels[2] = bad
    with pytest.raises(FeedError, match=rf"feed 'y': label {bad} at row 2 is outside \[0, 3\)"):
        trainer.step(x=X, y=labels)
    np.testing.assert_array_equal(trainer.params["W"], before)  # nothing was updated


def test_int64_labels_are_converted_when_they_fit(trainer):
    trainer.step(x=X, y=Y.astype(np.int64))
    with pytest.raises(FeedError, match="do not fit in int32"):
        trainer.step(x=X, y=np.array([0, 1, 2, 2**40]))


def test_reference_checks_labels_too():
    ref = nncc.reference.Interpreter(tiny())
    with pytest.raises(FeedError, match=r"feed 'y': label 7 at row 0"):
        ref.step(x=X, y=np.array([7, 0, 0, 0]))
