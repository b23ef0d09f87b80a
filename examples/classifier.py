"""A 784 -> 128 -> 10 relu classifier (the W2 benchmark model) on synthetic data whose
labels come from a fixed random linear teacher, built with nncc.GraphBuilder.

    nncc build examples/classifier.py --check      # compile, compare with the reference
    nncc build examples/classifier.py --train
    python examples/classifier.py
"""
import numpy as np

import nncc

batch_size = 64
epochs = 3
optimizer = nncc.SGD(lr=0.1)
outputs = ["logits"]


def model():
    b = nncc.GraphBuilder()
    x = b.input("x", (None, 784))
    y = b.input("y", (None,), dtype="int32")
    h = b.relu(b.linear(x, 784, 128, name="fc1"), name="h")
    logits = b.linear(h, 128, 10, name="logits")
    b.softmax_cross_entropy(logits, y, name="loss", reduction="mean")
    return b.graph


def data(rows=6000, seed=0):
    """Inputs N(0, 1); labels from one fixed teacher, whatever the seed of the inputs."""
    x = np.random.default_rng(seed).normal(size=(rows, 784)).astype(np.float32)
    teacher = np.random.default_rng(1234).normal(size=(784, 10))
    return {"x": x, "y": np.argmax(x @ teacher, axis=1).astype(np.int32)}


if __name__ == "__main__":
    trainer = nncc.compile(model(), outputs=outputs, optimizer=optimizer, batch_size=batch_size)
    train = data()
    nncc.testing.assert_matches_reference(trainer, {k: v[:batch_size] for k, v in train.items()}, steps=3)
    print("compiled step matches the NumPy reference over 3 steps")
    test = data(rows=2000, seed=1)
    rng = np.random.default_rng(1)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train["y"]))
        losses = [trainer.step(**{k: v[order[i:i + batch_size]] for k, v in train.items()})
                  for i in range(0, len(order), batch_size)]
        accuracy = np.mean(trainer.predict(x=test["x"])["logits"].argmax(axis=1) == test["y"])
        print(f"epoch {epoch}  train loss {np.mean(losses):.4f}  test accuracy {accuracy:.3f}")
