"""Parity with PyTorch: the same model, start values, batch and optimizer as torch.

The graphs are declared by hand as plain nx.DiGraphs (the graph is the interface; no
builder), initialised from torch.nn.Linear layers (torch keeps weights as (out, in), nncc as
(in, out), so they are transposed), trained with torch.optim.SGD(lr=0.01) semantics for 10
steps on one fixed batch, comparing the loss and every param after every step.

Tolerances: both sides compute in float32 but with different summation orders (torch's
GEMM blocking vs nncc's kernels), so each result differs by a few float32 ulps
(6e-8 relative each; sums over up to 784 terms give ~sqrt(784) * 6e-8 ~ 2e-6 typically).
The loss is compared with rtol 1e-5. Params move by lr * grad ~1e-3 per step, so their
differences stay at the ulp level of the param itself (~1e-7 for O(1) weights); atol 1e-6
covers entries near zero (biases, small weights), where a relative test is meaningless.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import nncc  # noqa: E402
from nncc.reference import Interpreter  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
LR = 0.01
STEPS = 10


def lr_for(reduction, batch_size):
    """lr 0.01 for "mean"; for "sum" the gradient is batch_size times larger, and W1 at
    lr 0.01 with a summed loss diverges within 10 steps (losses 13 -> 4e11), where two
    float32 implementations legitimately drift apart without bound. lr / batch_size
    makes the summed loss take the same steps as the mean one (the division by a power
    of two is exact), so the comparison stays meaningful."""
    return LR if reduction == "mean" else LR / batch_size


def _node(g, name, op, *inputs, **attrs):
    g.add_node(name, op=op, **attrs)
    for slot, src in enumerate(inputs):
        g.add_edge(src, name, arg=slot)


def w2_graph(reduction):
    """784 -> 128 relu -> 10, softmax cross-entropy, written out node by node."""
    g = nx.DiGraph()
    _node(g, "x", "input", shape=(None, 784), dtype="float32")
    _node(g, "labels", "input", shape=(None,), dtype="int32")
    _node(g, "W1", "param", shape=(784, 128), init="uniform_fan_in")
    _node(g, "b1", "param", shape=(128,), init="uniform_fan_in", fan_in=784)
    _node(g, "W2", "param", shape=(128, 10), init="uniform_fan_in")
    _node(g, "b2", "param", shape=(10,), init="uniform_fan_in", fan_in=128)
    _node(g, "z1", "matmul", "x", "W1")
    _node(g, "a1", "add", "z1", "b1")
    _node(g, "h1", "relu", "a1")
    _node(g, "z2", "matmul", "h1", "W2")
    _node(g, "logits", "add", "z2", "b2")
    _node(g, "loss", "softmax_cross_entropy", "logits", "labels", reduction=reduction)
    return g


def w1_graph(reduction):
    """1 -> 64 tanh -> 64 tanh -> 1, MSE."""
    g = nx.DiGraph()
    _node(g, "x", "input", shape=(None, 1))
    _node(g, "target", "input", shape=(None, 1))
    prev = "x"
    for k, (fin, fout) in enumerate([(1, 64), (64, 64), (64, 1)], start=1):
        _node(g, f"W{k}", "param", shape=(fin, fout), init="uniform_fan_in")
        _node(g, f"b{k}", "param", shape=(fout,), init="uniform_fan_in", fan_in=fin)
        _node(g, f"z{k}", "matmul", prev, f"W{k}")
        _node(g, f"a{k}", "add", f"z{k}", f"b{k}")
        prev = f"a{k}"
        if k < 3:
            _node(g, f"h{k}", "tanh", prev)
            prev = f"h{k}"
    _node(g, "loss", "mse_loss", prev, "target", reduction=reduction)
    return g


def torch_w2(reduction):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)]
    return torch.nn.Sequential(*layers), torch.nn.CrossEntropyLoss(reduction=reduction), {"W1": 0, "W2": 2}


def torch_w1(reduction):
    torch.manual_seed(1)
    layers = [torch.nn.Linear(1, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
              torch.nn.Linear(64, 1)]
    return torch.nn.Sequential(*layers), torch.nn.MSELoss(reduction=reduction), {"W1": 0, "W2": 2, "W3": 4}


def w2_batch():
    rng = np.random.default_rng(0)
    return {"x": rng.uniform(0.0, 1.0, size=(64, 784)).astype(np.float32),
            "labels": rng.integers(0, 10, size=64).astype(np.int32)}


def w1_batch():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2.0, 2.0, size=(32, 1)).astype(np.float32)
    return {"x": x, "target": np.sin(2.0 * x).astype(np.float32)}


MODELS = {
    "w2": (w2_graph, torch_w2, w2_batch, 64, ("x", "labels")),
    "w1": (w1_graph, torch_w1, w1_batch, 32, ("x", "target")),
}


def torch_params(module, linears):
    """nncc name -> float32 ndarray from the torch module (weights transposed to (in, out))."""
    out = {}
    for k, (wname, index) in enumerate(sorted(linears.items()), start=1):
        layer = module[index]
        out[wname] = layer.weight.detach().numpy().T.copy()
        out[f"b{wname[1:]}"] = layer.bias.detach().numpy().copy()
    return out


def _torch_inputs(feeds, names, dtype):
    x = torch.from_numpy(feeds[names[0]]).to(dtype)
    y = torch.from_numpy(feeds[names[1]])
    y = y.long() if y.dtype == torch.int32 else y.to(dtype)
    return x, y


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("model", ["w2", "w1"])
def test_compiled_matches_torch(model, reduction):
    make_graph, make_torch, make_batch, batch_size, names = MODELS[model]
    module, criterion, linears = make_torch(reduction)
    lr = lr_for(reduction, batch_size)
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    trainer = nncc.compile(make_graph(reduction), loss="loss", optimizer=nncc.SGD(lr=lr),
                           batch_size=batch_size, seed=0)
    start = torch_params(module, linears)
    assert set(start) == set(trainer.params)
    for name, value in start.items():
        assert trainer.params[name].shape == value.shape, name
        trainer.params[name][...] = value
    feeds = make_batch()
    x, y = _torch_inputs(feeds, names, torch.float32)
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        loss = criterion(module(x), y)
        loss.backward()
        opt.step()
        got = trainer.step(**feeds)
        np.testing.assert_allclose(got, loss.item(), rtol=RTOL, atol=ATOL, err_msg=f"loss at step {step}")
        for name, value in torch_params(module, linears).items():
            np.testing.assert_allclose(trainer.params[name], value, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} after step {step}")
    # Eval outputs too (torch's module in eval mode, no grad).
    with torch.no_grad():
        want = module(x).numpy()
    out = trainer.predict(**{names[0]: feeds[names[0]]})
    (got,) = out.values()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("model", ["w2", "w1"])
def test_reference_matches_torch_float64(model, reduction):
    """The oracle itself: the float64 reference interpreter against torch in float64, from
    the same start values. Both are float64, so only summation order differs: agreement to
    ~1e-13; rtol 1e-9 (atol 1e-11) is far tighter than any float32 test and still safe."""
    make_graph, make_torch, make_batch, batch_size, names = MODELS[model]
    module, criterion, linears = make_torch(reduction)
    module = module.double()
    lr = lr_for(reduction, batch_size)
    # The run-time learning rate is a float32 (the C runtime's, mirrored by the reference:
    # compiler/schedules.runtime_lr), so torch gets the same float32-rounded rate here;
    # float64 torch with the exact 0.01 differs by 2e-8 relative in every update.
    opt = torch.optim.SGD(module.parameters(), lr=float(np.float32(lr)))
    ref = Interpreter(make_graph(reduction), loss="loss", optimizer=nncc.SGD(lr=lr), seed=0)
    for name, value in torch_params(module, linears).items():
        ref.state[name] = value.astype(np.float64)
    feeds = make_batch()
    x, y = _torch_inputs(feeds, names, torch.float64)
    for step in range(1, STEPS + 1):
        opt.zero_grad()
        loss = criterion(module(x), y)
        loss.backward()
        opt.step()
        np.testing.assert_allclose(ref.step(**feeds), loss.item(), rtol=1e-9, atol=1e-11,
                                   err_msg=f"loss at step {step}")
        for name, value in torch_params(module, linears).items():
            np.testing.assert_allclose(ref.state[name], value, rtol=1e-9, atol=1e-11,
                                       err_msg=f"{name} after step {step}")
