"""The W4 benchmark model: 784 -> 512 -> LayerNorm -> relu -> dropout(0.2) -> 512 ->
BatchNorm1d -> relu -> 10, softmax cross-entropy, trained with Adam and a warm-up +
cosine schedule, whole epochs in C (`fit`).

    nncc build examples/norm_dropout.py --check
    nncc build examples/norm_dropout.py --train
    python examples/norm_dropout.py
"""
import numpy as np

import nncc
from nncc.schedules import CosineAnnealingLR, LinearWarmup

batch_size = 128
epochs = 4
optimizer = nncc.Adam(lr=1e-3, schedule=LinearWarmup(50, after=CosineAnnealingLR(T_max=200)))
outputs = ["logits"]


def model(features=784, hidden=512, classes=10, p=0.2):
    b = nncc.GraphBuilder()
    x = b.input("x", (None, features))
    y = b.input("y", (None,), dtype="int32")
    h = b.linear(x, features, hidden, name="fc1")
    h = b.layer_norm(h, b.param("ln.gain", (hidden,), init="ones"), b.param("ln.bias", (hidden,), init="zeros"),
                     name="ln")
    h = b.dropout(b.relu(h, name="relu1"), p=p, name="drop")
    # No bias before BatchNorm: its mean subtraction cancels a bias exactly, so the bias's
    # gradient is pure rounding noise, which Adam would normalise into steps of size lr.
    h = b.linear(h, hidden, hidden, name="fc2", bias=False)
    h = b.batch_norm(h, b.param("bn.gain", (hidden,), init="ones"), b.param("bn.bias", (hidden,), init="zeros"),
                     name="bn")
    logits = b.linear(b.relu(h, name="relu2"), hidden, classes, name="logits")
    b.softmax_cross_entropy(logits, y, name="loss")
    return b.graph


def data(rows=6000, seed=0, features=784, classes=10):
    """Inputs N(0, 1); labels from one fixed random linear teacher."""
    x = np.random.default_rng(seed).normal(size=(rows, features)).astype(np.float32)
    teacher = np.random.default_rng(1234).normal(size=(features, classes))
    return {"x": x, "y": np.argmax(x @ teacher, axis=1).astype(np.int32)}


if __name__ == "__main__":
    trainer = nncc.compile(model(), outputs=outputs, optimizer=optimizer, batch_size=batch_size)
    nncc.testing.assert_matches_reference(trainer, {k: v[:batch_size] for k, v in data().items()}, steps=3)
    print("compiled step matches the NumPy reference over 3 steps (dropout masks included)")
    history = trainer.fit(epochs=epochs, batch_size=batch_size, validation_data=data(rows=2000, seed=1),
                          verbose=True, **data())
    print(f"running stats of bn: mean {trainer.buffers['bn.running_mean'][:3]}, "
          f"var {trainer.buffers['bn.running_var'][:3]}")
