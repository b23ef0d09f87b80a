#!/usr/bin/env python3
"""The benchmark workloads (see WORKLOADS.md) for nncc, NumPy by hand and torch eager.

One measurement per process: `benchmarks/run.py` starts this file once per
(framework, workload, mode) and reads the one JSON line it prints last.

    python benchmarks/workloads.py nncc W2 --mode speed
    python benchmarks/workloads.py numpy W4 --mode check
    python benchmarks/workloads.py torch E1 --mode epoch --quick
    NNCC_CACHE_DIR=/tmp/c python benchmarks/workloads.py nncc W2 --mode ttfs
    python benchmarks/workloads.py numpy gemm --mode gemm       # 2048^3 float32 matmul
    python benchmarks/workloads.py numpy W3 --mode matmul8      # W3's 8 matmuls alone

Everyone starts from the same weights (numpy, fixed seed, U(+-1/sqrt(fan_in)) for weights
and biases as torch.nn.Linear, weights stored (in, out)) and trains on the same fixed-seed
float32 data already in memory with plain SGD, lr = 0.01, losses averaged over the batch.
Every step function returns the loss of the batch as a Python float.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import math
import os
import statistics
import sys
import time
import traceback

import numpy as np

LR = 0.01
EPS = 1e-5
P_DROP = 0.2
E1_ROWS, E1_BATCH = 60_000, 64


def run_epoch(step, order, X, Y):
    """One E1 epoch by hand: full batches of E1_BATCH in `order`; the mean step loss."""
    steps = len(X) // E1_BATCH
    total = 0.0
    for k in range(steps):
        idx = order[k * E1_BATCH:(k + 1) * E1_BATCH]
        total += step(X[idx], Y[idx])
    return total / steps
INIT_SEED, DATA_SEED, TEACHER_SEED, CHECK_SEED = 0, 1, 1234, 2

# id -> layer sizes, activation, loss, batch
SPECS = {
    "W1": dict(sizes=(1, 64, 64, 1), act="tanh", loss="mse", batch=32),
    "W2": dict(sizes=(784, 128, 10), act="relu", loss="ce", batch=64),
    "W3": dict(sizes=(784, 1024, 1024, 10), act="relu", loss="ce", batch=256),
    "W4": dict(sizes=(784, 512, 512, 10), act="norm", loss="ce", batch=128),
    "E1": dict(sizes=(784, 128, 10), act="relu", loss="ce", batch=E1_BATCH),
}


def w3_matmul_flops(batch=256, sizes=SPECS["W3"]["sizes"]):
    """FLOPs of the matmuls of one W3 step: forward x@W for the 3 layers, dW for the 3
    layers, dX for layers 2 and 3 (the input's gradient is not computed)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    dw = fwd
    dx = sum(2 * batch * i * o for i, o in pairs[1:])
    return fwd + dw + dx


# --------------------------------------------------------------------------------------
# Shared initial weights and data
# --------------------------------------------------------------------------------------
def init_params(wl, seed=INIT_SEED):
    """name -> float32 array; linear layers fc1.., W (in, out), torch.nn.Linear's init."""
    sizes = SPECS[wl]["sizes"]
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = 1.0 / math.sqrt(fi)
        params[f"fc{i}.W"] = rng.uniform(-bound, bound, size=(fi, fo)).astype(np.float32)
        params[f"fc{i}.b"] = rng.uniform(-bound, bound, size=(fo,)).astype(np.float32)
    if wl == "W4":
        params["ln.gain"] = np.ones(sizes[1], np.float32)
        params["ln.bias"] = np.zeros(sizes[1], np.float32)
        params["bn.gain"] = np.ones(sizes[2], np.float32)
        params["bn.bias"] = np.zeros(sizes[2], np.float32)
    return params


def _teacher(features, classes):
    return np.random.default_rng(TEACHER_SEED).normal(size=(features, classes)).astype(np.float32)


def make_data(wl, rows=None, seed=DATA_SEED):
    """(x float32, y) with `rows` rows (default: one batch). W1: x ~ U(-2, 2), y = sin(2x)
    (float32, (n, 1)); others: x ~ N(0, 1), y int32 class ids from a fixed linear teacher."""
    spec = SPECS[wl]
    rows = rows or spec["batch"]
    rng = np.random.default_rng(seed)
    if wl == "W1":
        x = rng.uniform(-2, 2, size=(rows, 1)).astype(np.float32)
        return x, np.sin(2 * x).astype(np.float32)
    x = rng.standard_normal(size=(rows, spec["sizes"][0]), dtype=np.float32)
    y = np.argmax(x @ _teacher(spec["sizes"][0], spec["sizes"][-1]), axis=1).astype(np.int32)
    return x, y


# --------------------------------------------------------------------------------------
# nncc
# --------------------------------------------------------------------------------------
def nncc_graph(wl, p_drop=P_DROP):
    import networkx as nx

    import nncc

    spec = SPECS[wl]
    sizes = spec["sizes"]
    if wl == "W1":  # a plain nx.DiGraph written by hand
        g = nx.DiGraph()
        g.add_node("x", op="input", shape=(None, 1))
        g.add_node("y", op="input", shape=(None, 1))
        prev = "x"
        for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            g.add_node(f"fc{i}.W", op="param", shape=(fi, fo), init="uniform_fan_in")
            g.add_node(f"fc{i}.b", op="param", shape=(fo,), init="uniform_fan_in", fan_in=fi)
            g.add_node(f"fc{i}.matmul", op="matmul")
            g.add_edge(prev, f"fc{i}.matmul", arg=0)
            g.add_edge(f"fc{i}.W", f"fc{i}.matmul", arg=1)
            g.add_node(f"fc{i}", op="add")
            g.add_edge(f"fc{i}.matmul", f"fc{i}", arg=0)
            g.add_edge(f"fc{i}.b", f"fc{i}", arg=1)
            prev = f"fc{i}"
            if i < len(sizes) - 1:
                g.add_node(f"h{i}", op="tanh")
                g.add_edge(prev, f"h{i}", arg=0)
                prev = f"h{i}"
        g.add_node("loss", op="mse_loss", reduction="mean")
        g.add_edge(prev, "loss", arg=0)
        g.add_edge("y", "loss", arg=1)
        return g, prev

    b = nncc.GraphBuilder()
    x = b.input("x", (None, sizes[0]))
    y = b.input("y", (None,), dtype="int32")
    if wl == "W4":
        h = b.linear(x, sizes[0], sizes[1], name="fc1")
        h = b.layer_norm(h, b.param("ln.gain", (sizes[1],), init="ones"),
                         b.param("ln.bias", (sizes[1],), init="zeros"), name="ln", eps=EPS)
        h = b.dropout(b.relu(h, name="relu1"), p=p_drop, name="drop")
        h = b.linear(h, sizes[1], sizes[2], name="fc2")  # with a bias, as torch.nn.Linear
        h = b.batch_norm(h, b.param("bn.gain", (sizes[2],), init="ones"),
                         b.param("bn.bias", (sizes[2],), init="zeros"), name="bn", eps=EPS, momentum=0.1)
        logits = b.linear(b.relu(h, name="relu2"), sizes[2], sizes[3], name="fc3")
    else:
        h = x
        n = len(sizes) - 1
        for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            h = b.linear(h, fi, fo, name=f"fc{i}")
            if i < n:
                h = b.relu(h, name=f"relu{i}")
        logits = h
    b.softmax_cross_entropy(logits, y, name="loss", reduction="mean")
    return b.graph, logits


class NnccModel:
    def __init__(self, wl, params, p_drop=P_DROP):
        import nncc

        graph, out = nncc_graph(wl, p_drop)
        start = time.perf_counter()
        self.trainer = nncc.compile(graph, loss="loss", outputs=[out], optimizer=nncc.SGD(lr=LR),
                                    batch_size=SPECS[wl]["batch"])
        self.compile_s = time.perf_counter() - start
        for name, value in params.items():
            self.trainer.params[name][...] = value
        missing = set(self.trainer.params) - set(params)
        if missing:
            raise RuntimeError(f"nncc params without an initial value: {sorted(missing)}")

    def feeds(self, x, y):
        return x, y

    def step(self, x, y):
        return self.trainer.step(x=x, y=y)

    def epoch(self, X, Y, rng=None):
        hist = self.trainer.fit(x=X, y=Y, epochs=1, batch_size=E1_BATCH, shuffle=True, drop_last=True)
        return hist["loss"][-1]

    def two_steps_fit(self, X, Y):
        """E1's check: fit over 2 batches, no shuffle, the per-step losses."""
        hist = self.trainer.fit(x=X, y=Y, epochs=1, batch_size=E1_BATCH, shuffle=False, drop_last=True,
                                step_losses=True)
        return [float(v) for v in hist["step_loss"][0]]


# --------------------------------------------------------------------------------------
# NumPy by hand
# --------------------------------------------------------------------------------------
class NumpyMLP:
    """W1/W2/W3/E1: linear layers with tanh or relu between, MSE or softmax CE, SGD.
    Buffers preallocated for the batch, matmuls and elementwise ops written in place."""

    def __init__(self, wl, params, dtype=np.float32):
        spec = SPECS[wl]
        self.act, self.loss_kind, self.dt = spec["act"], spec["loss"], dtype
        B = spec["batch"]
        sizes = spec["sizes"]
        self.L = len(sizes) - 1
        self.W = [params[f"fc{i}.W"].astype(dtype) for i in range(1, self.L + 1)]
        self.b = [params[f"fc{i}.b"].astype(dtype) for i in range(1, self.L + 1)]
        self.z = [np.empty((B, o), dtype) for o in sizes[1:]]         # activations (in place)
        self.dh = [np.empty((B, o), dtype) for o in sizes[1:-1]]      # grads of hidden activations
        self.tmp = [np.empty((B, o), dtype) for o in sizes[1:-1]]
        self.dW = [np.empty_like(w) for w in self.W]
        self.db = [np.empty_like(b) for b in self.b]
        self.dout = np.empty((B, sizes[-1]), dtype)
        self.rows = np.arange(B)

    def feeds(self, x, y):
        return x.astype(self.dt, copy=False), y

    def step(self, x, y):
        n = x.shape[0]
        W, b, z, L = self.W, self.b, self.z, self.L
        a = x
        for i in range(L):
            np.matmul(a, W[i], out=z[i])
            z[i] += b[i]
            if i < L - 1:
                if self.act == "relu":
                    np.maximum(z[i], 0, out=z[i])
                else:
                    np.tanh(z[i], out=z[i])
            a = z[i]
        d = self.dout
        if self.loss_kind == "mse":
            np.subtract(a, y, out=d)
            loss = float(np.vdot(d, d)) / d.size
            d *= 2.0 / d.size
        else:
            m = a.max(axis=1, keepdims=True)
            np.subtract(a, m, out=d)
            np.exp(d, out=d)
            s = d.sum(axis=1, keepdims=True)
            r = self.rows[:n]
            loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - a[r, y]))
            d /= s
            d[r, y] -= 1
            d *= 1.0 / n
        for i in range(L - 1, -1, -1):
            prev = x if i == 0 else z[i - 1]
            np.matmul(prev.T, d, out=self.dW[i])
            np.sum(d, axis=0, out=self.db[i])
            if i > 0:
                dh = self.dh[i - 1]
                np.matmul(d, W[i].T, out=dh)
                if self.act == "relu":
                    np.multiply(dh, prev > 0, out=dh)
                else:  # tanh' = 1 - h^2
                    t = self.tmp[i - 1]
                    np.multiply(prev, prev, out=t)
                    np.subtract(1, t, out=t)
                    dh *= t
                d = dh
        for p, g in zip(W + b, self.dW + self.db):
            g *= LR
            p -= g
        return loss

    def epoch(self, X, Y, rng):
        return run_epoch(self.step, rng.permutation(len(X)), X, Y)


class NumpyW4:
    """784 -> 512 -> LayerNorm -> relu -> dropout -> 512 -> BatchNorm1d (train) -> relu -> 10,
    softmax CE, SGD; forward and backward by hand."""

    def __init__(self, wl, params, dtype=np.float32, p_drop=P_DROP, seed=3):
        self.dt, self.p = dtype, p_drop
        B = SPECS[wl]["batch"]
        d0, d1, d2, d3 = SPECS[wl]["sizes"]
        self.P = {k: v.astype(dtype) for k, v in params.items()}
        self.G = {k: np.empty_like(v) for k, v in self.P.items()}
        self.running_mean = np.zeros(d2, dtype)
        self.running_var = np.ones(d2, dtype)
        self.rng = np.random.default_rng(seed)
        e = lambda *s: np.empty(s, dtype)
        self.z1, self.xhat1, self.h1, self.u = e(B, d1), e(B, d1), e(B, d1), np.empty((B, d1), np.float32)
        self.keep = np.empty((B, d1), bool)
        self.z2, self.xhat2, self.h2 = e(B, d2), e(B, d2), e(B, d2)
        self.out, self.dh2, self.dh1 = e(B, d3), e(B, d2), e(B, d1)
        self.rows = np.arange(B)

    def feeds(self, x, y):
        return x.astype(self.dt, copy=False), y

    def step(self, x, y):
        P, G, n = self.P, self.G, x.shape[0]
        # fc1 + LayerNorm (over features)
        z1 = np.matmul(x, P["fc1.W"], out=self.z1)
        z1 += P["fc1.b"]
        z1 -= z1.mean(axis=1, keepdims=True)
        xhat1 = self.xhat1
        np.multiply(z1, z1, out=xhat1)
        rstd1 = 1.0 / np.sqrt(xhat1.mean(axis=1, keepdims=True) + EPS)
        np.multiply(z1, rstd1, out=xhat1)
        h1 = np.multiply(xhat1, P["ln.gain"], out=self.h1)
        h1 += P["ln.bias"]
        np.maximum(h1, 0, out=h1)                       # relu; h1 > 0 is its mask
        # inverted dropout
        scale = 1.0 / (1.0 - self.p)
        if self.p > 0:
            self.rng.random(out=self.u, dtype=np.float32)
            np.greater_equal(self.u, self.p, out=self.keep)
            np.multiply(h1, self.keep, out=h1)
            h1 *= scale
        # fc2 + BatchNorm (batch statistics, running stats updated)
        z2 = np.matmul(h1, P["fc2.W"], out=self.z2)
        z2 += P["fc2.b"]
        mu2 = z2.mean(axis=0)
        z2 -= mu2
        xhat2 = self.xhat2
        np.multiply(z2, z2, out=xhat2)
        var2 = xhat2.mean(axis=0)
        rstd2 = 1.0 / np.sqrt(var2 + EPS)
        np.multiply(z2, rstd2, out=xhat2)
        self.running_mean *= 0.9
        self.running_mean += 0.1 * mu2
        self.running_var *= 0.9
        self.running_var += (0.1 * n / (n - 1)) * var2
        h2 = np.multiply(xhat2, P["bn.gain"], out=self.h2)
        h2 += P["bn.bias"]
        np.maximum(h2, 0, out=h2)
        # fc3 + softmax cross-entropy
        logits = np.matmul(h2, P["fc3.W"], out=self.out)
        logits += P["fc3.b"]
        m = logits.max(axis=1, keepdims=True)
        r = self.rows[:n]
        picked = logits[r, y] - m[:, 0]
        logits -= m
        np.exp(logits, out=logits)
        s = logits.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - picked))
        d = logits
        d /= s
        d[r, y] -= 1
        d *= 1.0 / n
        # backward: fc3
        np.matmul(h2.T, d, out=G["fc3.W"])
        np.sum(d, axis=0, out=G["fc3.b"])
        dy2 = np.matmul(d, P["fc3.W"].T, out=self.dh2)
        np.multiply(dy2, h2 > 0, out=dy2)
        # BatchNorm
        np.sum(dy2, axis=0, out=G["bn.bias"])
        np.sum(dy2 * xhat2, axis=0, out=G["bn.gain"])
        xhat2 *= G["bn.gain"] / n
        dy2 -= G["bn.bias"] / n
        dy2 -= xhat2
        dy2 *= P["bn.gain"] * rstd2                  # dz2
        # fc2
        np.matmul(h1.T, dy2, out=G["fc2.W"])
        np.sum(dy2, axis=0, out=G["fc2.b"])
        dh1 = np.matmul(dy2, P["fc2.W"].T, out=self.dh1)
        # dropout and relu: h1 (after dropout) > 0 exactly where both kept the value
        np.multiply(dh1, h1 > 0, out=dh1)
        if self.p > 0:
            dh1 *= scale
        # LayerNorm
        np.sum(dh1, axis=0, out=G["ln.bias"])
        np.sum(dh1 * xhat1, axis=0, out=G["ln.gain"])
        dh1 *= P["ln.gain"]                          # dxhat
        mean_dx = dh1.mean(axis=1, keepdims=True)
        mean_dxx = np.einsum("ij,ij->i", dh1, xhat1)[:, None] / xhat1.shape[1]
        xhat1 *= mean_dxx
        dh1 -= mean_dx
        dh1 -= xhat1
        dh1 *= rstd1                                 # dz1
        np.matmul(x.T, dh1, out=G["fc1.W"])
        np.sum(dh1, axis=0, out=G["fc1.b"])
        for k, p in P.items():
            g = G[k]
            g *= LR
            p -= g
        return loss


def numpy_model(wl, params, dtype=np.float32, p_drop=P_DROP):
    return NumpyW4(wl, params, dtype, p_drop) if wl == "W4" else NumpyMLP(wl, params, dtype)


# --------------------------------------------------------------------------------------
# torch eager
# --------------------------------------------------------------------------------------
class TorchModel:
    def __init__(self, wl, params, p_drop=P_DROP):
        import torch
        from torch import nn

        self.torch = torch
        torch.manual_seed(0)
        sizes = SPECS[wl]["sizes"]
        lin = [nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:])]
        with torch.no_grad():
            for k, layer in enumerate(lin, start=1):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(params[f"fc{k}.W"].T)))
                layer.bias.copy_(torch.from_numpy(params[f"fc{k}.b"]))
        if wl == "W4":
            ln, bn = nn.LayerNorm(sizes[1], eps=EPS), nn.BatchNorm1d(sizes[2], eps=EPS, momentum=0.1)
            with torch.no_grad():
                ln.weight.copy_(torch.from_numpy(params["ln.gain"]))
                ln.bias.copy_(torch.from_numpy(params["ln.bias"]))
                bn.weight.copy_(torch.from_numpy(params["bn.gain"]))
                bn.bias.copy_(torch.from_numpy(params["bn.bias"]))
            layers = [lin[0], ln, nn.ReLU(), nn.Dropout(p_drop), lin[1], bn, nn.ReLU(), lin[2]]
        else:
            act = nn.Tanh if SPECS[wl]["act"] == "tanh" else nn.ReLU
            layers = []
            for k, layer in enumerate(lin):
                layers.append(layer)
                if k < len(lin) - 1:
                    layers.append(act())
        self.model = nn.Sequential(*layers).train()
        self.crit = nn.MSELoss() if SPECS[wl]["loss"] == "mse" else nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.gen = torch.Generator().manual_seed(0)

    def feeds(self, x, y):
        t = self.torch
        return t.from_numpy(x), t.from_numpy(y if y.dtype == np.float32 else y.astype(np.int64))

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.crit(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.item()

    def epoch(self, X, Y, rng=None):
        return run_epoch(self.step, self.torch.randperm(len(X), generator=self.gen), X, Y)


def make_model(fw, wl, params, p_drop=P_DROP):
    if fw == "nncc":
        return NnccModel(wl, params, p_drop)
    if fw == "numpy":
        return numpy_model(wl, params, np.float32, p_drop)
    if fw == "torch":
        return TorchModel(wl, params, p_drop)
    raise ValueError(f"unknown framework {fw!r}")


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------
def timing_plan(quick):
    # (warm-up seconds, seconds per window, windows)
    return (0.25, 0.15, 5) if quick else (0.5, 0.3, 7)


def time_windows(fn, args, quick):
    """Warm up, then windows of back-to-back calls, each lasting at least the window's
    time (the clock is read every `chunk` calls, ~1/20 of a window); per-window calls/s.
    Windows are bounded in time, so a machine that slows down mid-run stays on budget."""
    warm_s, window_s, windows = timing_plan(quick)
    start = time.perf_counter()
    n = 0
    while n < 3 or time.perf_counter() - start < warm_s:
        last = fn(*args)
        n += 1
    t = time.perf_counter()  # calibrate on calls after the warm-up
    for _ in range(3):
        fn(*args)
    per_call = (time.perf_counter() - t) / 3
    chunk = max(1, int(window_s / 20 / max(per_call, 1e-9)))
    rates = []
    for _ in range(windows):
        count = 0
        t = time.perf_counter()
        while True:
            for _ in range(chunk):
                last = fn(*args)
            count += chunk
            elapsed = time.perf_counter() - t
            if elapsed >= window_s:
                break
        rates.append(count / elapsed)
    return rates, chunk, last


def mode_speed(fw, wl, quick):
    params = init_params(wl)
    x, y = make_data(wl)
    model = make_model(fw, wl, params)
    feeds = model.feeds(x, y)
    first = model.step(*feeds)
    rates, chunk, last = time_windows(model.step, feeds, quick)
    return {"steps_per_s": statistics.median(rates), "windows": rates, "chunk": chunk,
            "first_loss": first, "last_loss": last, "finite": bool(np.isfinite(last))}


def mode_epoch(fw, wl, quick):
    params = init_params(wl)
    X, Y = make_data(wl, rows=E1_ROWS)
    model = make_model(fw, wl, params)
    if fw == "torch":
        X, Y = model.feeds(X, Y)
    rng = np.random.default_rng(7)
    # warm-up: one whole epoch (--quick: an epoch over the first 100 batches only)
    warm_rows = 100 * E1_BATCH if quick else E1_ROWS
    t = time.perf_counter()
    model.epoch(X[:warm_rows], Y[:warm_rows], rng)
    warmup_s = time.perf_counter() - t
    times, losses = [], []
    for _ in range(1 if quick else 3):
        t = time.perf_counter()
        losses.append(float(model.epoch(X, Y, rng)))
        times.append(time.perf_counter() - t)
    return {"s_per_epoch": statistics.median(times), "epochs_s": times, "warmup_s": warmup_s,
            "epoch_losses": losses, "steps_per_epoch": E1_ROWS // E1_BATCH,
            "finite": bool(np.all(np.isfinite(losses)))}


def mode_check(fw, wl, quick):
    """Losses of step 1 and step 2 from the same init on the same batch (W4: dropout p=0).
    E1: two consecutive batches of the data, through fit() for nncc."""
    params = init_params(wl)
    p = 0.0 if wl == "W4" else P_DROP
    if wl == "E1":
        X, Y = make_data(wl, rows=2 * E1_BATCH, seed=CHECK_SEED)
        batches = [(X[:E1_BATCH], Y[:E1_BATCH]), (X[E1_BATCH:], Y[E1_BATCH:])]
    else:
        x, y = make_data(wl, seed=CHECK_SEED)
        batches = [(x, y), (x, y)]
    result = {}
    if fw == "nncc" and wl == "E1":
        losses = NnccModel(wl, params, p).two_steps_fit(X, Y)
    else:
        model = make_model(fw, wl, params, p)
        losses = [model.step(*model.feeds(bx, by)) for bx, by in batches]
    result["losses"] = [float(v) for v in losses]
    if fw == "numpy":  # float64 reference of the same hand-written model
        model = numpy_model(wl, params, np.float64, p)
        result["losses_f64"] = [float(model.step(*model.feeds(bx, by))) for bx, by in batches]
    return result


def mode_ttfs(fw, wl, quick):
    """nncc's time to first step in this (new) process: graph + compile + first step,
    with whatever cache $NNCC_CACHE_DIR holds."""
    t0 = time.perf_counter()
    import nncc  # noqa: F401

    t_import = time.perf_counter() - t0
    params = init_params(wl)
    x, y = make_data(wl)
    t1 = time.perf_counter()
    model = NnccModel(wl, params)
    t2 = time.perf_counter()
    loss = model.step(x, y)
    t3 = time.perf_counter()
    loss2 = model.step(x, y)
    t4 = time.perf_counter()
    report = model.trainer.report
    return {"import_s": t_import, "compile_s": t2 - t1, "first_step_s": t3 - t2, "second_step_s": t4 - t3,
            "total_s": t3 - t1, "cache_hit": report.cache_hit, "timings": dict(report.timings),
            "loss": loss, "loss2": loss2, "cache_dir": os.environ.get("NNCC_CACHE_DIR", "")}


def mode_gemm(fw, wl, quick, n=2048):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    for _ in range(2):
        np.matmul(a, b, out=c)
    times = []
    for _ in range(4 if quick else 8):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t)
    flops = 2.0 * n ** 3
    rates = [flops / t / 1e9 for t in times]
    return {"gflops": statistics.median(rates), "gflops_max": max(rates), "samples": rates, "n": n}


def mode_matmul8(fw, wl, quick):
    """The 8 matmuls of one W3 step, in numpy, on preallocated buffers: a matmul-only ceiling."""
    B = SPECS["W3"]["batch"]
    s = SPECS["W3"]["sizes"]
    rng = np.random.default_rng(0)
    r = lambda *shape: rng.standard_normal(shape, dtype=np.float32)
    x, W = r(B, s[0]), [r(s[0], s[1]), r(s[1], s[2]), r(s[2], s[3])]
    h1, h2, out = np.empty((B, s[1]), np.float32), np.empty((B, s[2]), np.float32), np.empty((B, s[3]), np.float32)
    d3, d2, d1 = r(B, s[3]), np.empty((B, s[2]), np.float32), np.empty((B, s[1]), np.float32)
    dW = [np.empty_like(w) for w in W]

    def eight():
        np.matmul(x, W[0], out=h1)
        np.matmul(h1, W[1], out=h2)
        np.matmul(h2, W[2], out=out)
        np.matmul(h2.T, d3, out=dW[2])
        np.matmul(d3, W[2].T, out=d2)
        np.matmul(h1.T, d2, out=dW[1])
        np.matmul(d2, W[1].T, out=d1)
        np.matmul(x.T, d1, out=dW[0])

    rates, _, _ = time_windows(eight, (), quick)
    sps = statistics.median(rates)
    return {"steps_per_s": sps, "windows": rates, "gflops": sps * w3_matmul_flops() / 1e9}


MODES = {"speed": mode_speed, "epoch": mode_epoch, "check": mode_check, "ttfs": mode_ttfs,
         "gemm": mode_gemm, "matmul8": mode_matmul8}


def main(argv=None):
    ap = argparse.ArgumentParser(description="One benchmark measurement; prints one JSON line.")
    ap.add_argument("framework", choices=["nncc", "numpy", "torch"])
    ap.add_argument("workload", help="W1..W4, E1 (gemm for --mode gemm)")
    ap.add_argument("--mode", choices=sorted(MODES), default="speed")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    faulthandler.enable()  # a crash in compiled code still names the Python line (on stderr)
    out = {"framework": args.framework, "workload": args.workload, "mode": args.mode, "pid": os.getpid(),
           "env_openblas": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}}
    try:
        out.update(MODES[args.mode](args.framework, args.workload, args.quick))
        out["ok"] = True
    except BaseException as exc:  # report, never hide: the harness keeps going
        out["ok"] = False
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    sys.stdout.flush()
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
