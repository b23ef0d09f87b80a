"""Property test: random MLP-like graphs train the same compiled and in the reference.

Hypothesis draws the architecture (depth 1-3, widths 1-9, activations, residual
add/sub/mul between same-width hidden layers, optional broadcast biases, inits), the loss
(MSE or softmax cross-entropy, mean or sum), the batch capacity and the rows actually fed
(a partial batch is allowed), fusion on or off, the team step (automatic, which never
picks it below 32 rows, or forced: the whole step in one parallel region, rows split in
units of 1) and the order in which the nodes are inserted into the nx.DiGraph (which must
not matter). Each example compiles one model
(~0.2 s), so the example count is kept small; derandomize makes the run reproducible.

Tolerances are nncc.testing's (rtol 1e-4, atol 1e-5): random inits and up to 3 layers of
float32 arithmetic over 3 steps, see the comment in nncc/testing.py.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import nncc
from nncc.testing import assert_matches_reference

ACTIVATIONS = ["relu", "tanh", "sigmoid", "leaky_relu"]
INITS = ["uniform_fan_in", "xavier_uniform", "kaiming_normal"]


@st.composite
def mlp_specs(draw):
    depth = draw(st.integers(1, 3))
    in_width = draw(st.integers(1, 9))
    layers = []
    widths = []
    for k in range(depth):
        # A residual joins this layer with an earlier one, so it takes that layer's width.
        residual_op = draw(st.sampled_from([None, "add", "sub", "mul"])) if k else None
        if residual_op is not None:
            j = draw(st.integers(0, k - 1))
            width, residual = widths[j], (j, residual_op)
        else:
            width, residual = draw(st.integers(1, 9)), None
        act = draw(st.sampled_from(ACTIVATIONS))
        alpha = draw(st.sampled_from([0.01, 0.2])) if act == "leaky_relu" else None
        layers.append(dict(width=width, act=act, alpha=alpha, residual=residual,
                           bias=draw(st.booleans()), init=draw(st.sampled_from(INITS))))
        widths.append(width)
    loss = draw(st.sampled_from(["mse_loss", "softmax_cross_entropy"]))
    out_width = draw(st.integers(1, 9))
    batch_size = draw(st.integers(1, 8))
    return dict(
        in_width=in_width, layers=layers, loss=loss, out_width=out_width,
        out_bias=draw(st.booleans()), reduction=draw(st.sampled_from(["mean", "sum"])),
        batch_size=batch_size, rows=draw(st.integers(1, batch_size)),
        lr=draw(st.sampled_from([0.01, 0.03])), fusion=draw(st.booleans()),
        order_seed=draw(st.integers(0, 2**16)), data_seed=draw(st.integers(0, 2**16)),
        team=draw(st.sampled_from([None, True])),
    )


def build(spec):
    """The spec as an nx.DiGraph, nodes inserted in a shuffled order, plus feeds."""
    nodes, edges = {}, []

    def node(name, op, *inputs, **attrs):
        nodes[name] = dict(op=op, **attrs)
        edges.extend((src, name, slot) for slot, src in enumerate(inputs))
        return name

    node("x", "input", shape=(None, spec["in_width"]))
    prev, prev_width, hidden = "x", spec["in_width"], []
    for k, layer in enumerate(spec["layers"], start=1):
        w = node(f"fc{k}.W", "param", shape=(prev_width, layer["width"]), init=layer["init"])
        h = node(f"fc{k}.mm", "matmul", prev, w)
        if layer["bias"]:
            b = node(f"fc{k}.b", "param", shape=(layer["width"],), init="uniform_fan_in", fan_in=prev_width)
            h = node(f"fc{k}", "add", h, b)
        attrs = {"alpha": layer["alpha"]} if layer["alpha"] is not None else {}
        h = node(f"act{k}", layer["act"], h, **attrs)
        if layer["residual"] is not None:
            j, op = layer["residual"]
            h = node(f"res{k}", op, h, hidden[j])
        hidden.append(h)
        prev, prev_width = h, layer["width"]
    w = node("out.W", "param", shape=(prev_width, spec["out_width"]), init="uniform_fan_in")
    out = node("out.mm", "matmul", prev, w)
    if spec["out_bias"]:
        b = node("out.b", "param", shape=(1, spec["out_width"]), init="uniform_fan_in", fan_in=prev_width)
        out = node("out", "add", out, b)

    rng = np.random.default_rng(spec["data_seed"])
    rows = spec["rows"]
    feeds = {"x": rng.normal(size=(rows, spec["in_width"])).astype(np.float32)}
    if spec["loss"] == "mse_loss":
        node("target", "input", shape=(None, spec["out_width"]))
        feeds["target"] = rng.normal(size=(rows, spec["out_width"])).astype(np.float32)
        node("loss", "mse_loss", out, "target", reduction=spec["reduction"])
    else:
        node("labels", "input", shape=(None,), dtype="int32")
        feeds["labels"] = rng.integers(0, spec["out_width"], size=rows).astype(np.int32)
        node("loss", "softmax_cross_entropy", out, "labels", reduction=spec["reduction"])

    g = nx.DiGraph()
    order = np.random.default_rng(spec["order_seed"]).permutation(len(nodes))
    names = list(nodes)
    for i in order:
        g.add_node(names[i], **nodes[names[i]])
    for src, dst, slot in edges:
        g.add_edge(src, dst, arg=slot)
    return g, feeds, out


# No shrink phase: every example costs a C build, and shrinking a failure took minutes;
# the failing spec is printed in full anyway and is small by construction.
@settings(derandomize=True, max_examples=15, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mlp_specs())
def test_random_mlp_compiled_matches_reference(spec):
    graph, feeds, out = build(spec)
    # Training must stay stable for 3 steps, or float32 and float64 trajectories part for
    # reasons that are not bugs (an early draft with lr 0.2 and summed losses blew up to
    # 1e41 and overflowed float32). A summed loss gets lr / rows: the same steps as mean.
    lr = spec["lr"] if spec["reduction"] == "mean" else spec["lr"] / spec["rows"]
    trainer = nncc.compile(graph, loss="loss", outputs=[out], optimizer=nncc.SGD(lr=lr),
                           batch_size=spec["batch_size"], seed=spec["data_seed"], fusion=spec["fusion"],
                           team=spec["team"], check_passes=True)
    assert_matches_reference(trainer, feeds, steps=3)
