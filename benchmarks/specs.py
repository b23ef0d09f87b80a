"""Workload constants shared by the measurements (workloads.py) and the baselines
(baselines.py): learning rate, epsilon, dropout rate, E1 sizes, seeds and the specs W1-W4, E1."""
from __future__ import annotations

LR = 0.01
EPS = 1e-5
P_DROP = 0.2
E1_ROWS, E1_BATCH = 60_000, 64

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
