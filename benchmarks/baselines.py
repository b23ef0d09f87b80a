"""The baselines of the benchmark: NumPy by hand (NumpyMLP, NumpyW4) and torch eager (TorchModel).

Same init, data, SGD and lr as nncc (see workloads.py); every step returns the loss of the batch
as a Python float."""
from __future__ import annotations

import numpy as np

from specs import E1_BATCH, EPS, LR, P_DROP, SPECS


def run_epoch(step, order, X, Y):
    """One E1 epoch by hand: full batches of E1_BATCH in `order`; the mean step loss."""
    steps = len(X) // E1_BATCH
    total = 0.0
    for k in range(steps):
        idx = order[k * E1_BATCH:(k + 1) * E1_BATCH]
        total += step(X[idx], Y[idx])
    return total / steps


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
