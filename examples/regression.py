"""Universal approximation: an MLP 1 -> 64 -> 64 -> 1 with tanh learns sin(2x) on [-2, 2].

    nncc build examples/regression.py --train      # compile, train, print loss per epoch
    python examples/regression.py                  # the same from Python, plus the fit
"""
import networkx as nx
import numpy as np

import nncc

batch_size = 32
epochs = 60
optimizer = nncc.SGD(lr=0.05, momentum=0.9)


def model(hidden=64):
    """Declared by hand as a plain nx.DiGraph: the graph is the interface."""
    g = nx.DiGraph()
    g.add_node("x", op="input", shape=(None, 1))
    g.add_node("target", op="input", shape=(None, 1))
    prev, width = "x", 1
    for i, out in enumerate([hidden, hidden, 1], start=1):
        g.add_node(f"W{i}", op="param", shape=(width, out), init="uniform_fan_in")
        g.add_node(f"b{i}", op="param", shape=(out,), init="uniform_fan_in", fan_in=width)
        g.add_node(f"mm{i}", op="matmul")
        g.add_edge(prev, f"mm{i}", arg=0)
        g.add_edge(f"W{i}", f"mm{i}", arg=1)
        g.add_node(f"z{i}", op="add")
        g.add_edge(f"mm{i}", f"z{i}", arg=0)
        g.add_edge(f"b{i}", f"z{i}", arg=1)
        prev, width = f"z{i}", out
        if i < 3:
            g.add_node(f"h{i}", op="tanh")
            g.add_edge(prev, f"h{i}", arg=0)
            prev = f"h{i}"
    g.add_node("loss", op="mse_loss", reduction="mean")
    g.add_edge(prev, "loss", arg=0)
    g.add_edge("target", "loss", arg=1)
    return g


outputs = ["z3"]


def data(rows=2048, seed=0):
    x = np.random.default_rng(seed).uniform(-2, 2, size=(rows, 1)).astype(np.float32)
    return {"x": x, "target": np.sin(2 * x)}


if __name__ == "__main__":
    trainer = nncc.compile(model(), outputs=outputs, optimizer=optimizer, batch_size=batch_size)
    nncc.testing.assert_matches_reference(trainer, {k: v[:batch_size] for k, v in data().items()}, steps=3)
    print("compiled step matches the NumPy reference over 3 steps")
    feeds, rng = data(), np.random.default_rng(1)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(feeds["x"]))
        losses = [trainer.step(**{k: v[order[i:i + batch_size]] for k, v in feeds.items()})
                  for i in range(0, len(order), batch_size)]
        if epoch % 10 == 0:
            print(f"epoch {epoch:>3}  mean loss {np.mean(losses):.5f}")
    grid = np.linspace(-2, 2, 401, dtype=np.float32)[:, None]
    error = np.abs(trainer.predict(x=grid)["z3"] - np.sin(2 * grid)).max()
    print(f"max |f(x) - sin(2x)| on [-2, 2]: {error:.4f}")
