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

The constants and specs are in specs.py, the NumPy and torch baselines in baselines.py;
this file keeps the data, the nncc model, make_model and the measurements.
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

from baselines import TorchModel, numpy_model
from specs import (CHECK_SEED, DATA_SEED, E1_BATCH, E1_ROWS, EPS, INIT_SEED, LR, P_DROP, SPECS, TEACHER_SEED,
                   w3_matmul_flops)


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
