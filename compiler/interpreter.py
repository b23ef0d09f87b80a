"""The NumPy reference interpreter: runs the same IR the compiler lowers, in float64.

It is the oracle for every test: forward, the derived backward graph and the optimizer
update all run node by node through each op's `reference` function.
"""
from __future__ import annotations

import numpy as np

from .errors import FeedError
from .init import initial_value
from .ir import BACKWARD, FORWARD, concrete
from .ops import get_op
from .optimizers import SGD
from .random import shuffled_order
from .schedules import runtime_lr
from .passes import build_eval_graph, build_train_graph


class Context:
    """What an op's reference function may read: feeds, params, run-time state."""

    def __init__(self, interp, feeds, n):
        self.interp, self.feeds, self.n = interp, feeds, n
        self.lr = interp.scheduled_lr()
        self.t = interp.global_step + 1  # the 1-based number of the step being taken
        self.step = interp.global_step     # steps taken before this one (dropout masks)
        self.seed = interp.seed
        self.row_offset = interp.accumulated_rows
        self.inv_rows = 1.0 / max(interp.accumulated_rows, 1)

    def feed(self, name):
        return self.feeds[name]

    def param(self, name):
        return self.interp.state[name]

    def concrete(self, shape):
        return concrete(shape, self.n)

    def check_labels(self, node, labels, classes):
        bad = np.flatnonzero((labels < 0) | (labels >= classes))
        if bad.size:
            i = int(bad[0])
            raise FeedError(f"label {int(labels[i])} at row {i} is outside [0, {classes}) "
                            f"(node {node.name!r})", feed=node.inputs[1])


class Interpreter:
    """Reference execution of a user graph.

    >>> ref = Interpreter(graph, loss="loss", optimizer=nncc.SGD(lr=0.1), seed=0)
    >>> ref.step(x=X, y=Y)      # float loss before the update; params updated in float64
    >>> ref.gradients(x=X, y=Y) # d loss / d param, no update
    >>> ref.predict(x=X)        # outputs
    """

    def __init__(self, graph, loss="loss", outputs=None, optimizer=None, seed=0):
        optimizer = optimizer or SGD(lr=0.01)
        self._start(build_train_graph(graph, loss, outputs, optimizer), optimizer, seed)
        self.eval_graph = build_eval_graph(graph, self.train_graph.outputs)

    @classmethod
    def of_stage(cls, graph, seed=0):
        """An interpreter of one of the pipeline's graphs as it stands (train mode, SGD's
        default rate, no eval graph): what the pipeline's check mode runs."""
        interp = cls.__new__(cls)
        interp._start(graph, SGD(lr=0.01), seed)
        return interp

    def _start(self, train_graph, optimizer, seed):
        self.optimizer = optimizer
        self.train_graph = train_graph
        self.eval_graph = None
        self.lr = optimizer.lr
        self.global_step = 0
        self.seed = self.shuffle_seed = seed
        self.epoch = 0
        self.accumulated_rows = 0
        g = train_graph
        self.state = {name: initial_value(g[name], seed).astype(np.float64)
                      for name in (*g.params, *g.state)}

    def scheduled_lr(self):
        """The rate of the next step: the base `lr` shaped by the optimizer's schedule."""
        return runtime_lr(self.optimizer.schedule, self.lr, self.global_step)

    @property
    def params(self):
        return {p: self.state[p] for p in self.train_graph.params}

    def state_dict(self):
        return {k: v.copy() for k, v in self.state.items()}

    def load_state_dict(self, values):
        for k, v in values.items():
            if k in self.state:
                self.state[k] = np.array(v, dtype=np.float64)

    def run(self, graph, feeds, phases=None):
        """Evaluate every node of `graph` (restricted to `phases`); returns name -> value."""
        feeds = self._feeds(graph, feeds)
        n = next((len(v) for v in feeds.values()), 0)
        ctx = Context(self, feeds, n)
        values = {}
        for node in graph:
            if phases is not None and node.phase not in phases:
                continue
            opdef = get_op(node.op)
            value = opdef.reference(ctx, node, *(values[i] for i in node.inputs))
            values[node.name] = np.asarray(value, dtype=np.int64 if node.dtype == "int32" else np.float64)
        return values

    def forward(self, **feeds):
        """Every forward node's value, in train mode."""
        return self.run(self.train_graph, feeds, phases=(FORWARD,))

    def gradients(self, **feeds):
        values = self.run(self.train_graph, feeds, phases=(FORWARD, BACKWARD))
        return {p: values[g] for p, g in self.train_graph.grads.items()}

    def step(self, **feeds):
        """Forward, backward and the optimizer update; returns the loss before the update."""
        values = self.run(self.train_graph, feeds)
        for node in self.train_graph:
            if "writes" in node.attrs:
                self.state[node.attrs["writes"]] = values[node.name]
        self.global_step += 1
        return float(values[self.train_graph.loss])

    def fit(self, epochs=1, batch_size=32, shuffle=True, seed=None, drop_last=False, step_losses=False, **feeds):
        """The compiled fit, step by step in NumPy: same shuffle, batching and loss history."""
        if seed is not None:
            self.shuffle_seed = seed
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        rows = len(next(iter(arrays.values())))
        history = {"loss": [], "step_loss": []}
        for _ in range(epochs):
            order = shuffled_order(self.shuffle_seed, self.epoch, rows) if shuffle else np.arange(rows)
            total, used, losses = 0.0, 0, []
            for start in range(0, rows, batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < batch_size and drop_last:
                    break
                losses.append(self.step(**{k: v[idx] for k, v in arrays.items()}))
                total, used = total + losses[-1] * len(idx), used + len(idx)
            self.epoch += 1
            history["loss"].append(total / used)
            history["step_loss"].append(np.array(losses))
        if not step_losses:
            del history["step_loss"]
        return history

    def predict(self, **feeds):
        values = self.run(self.eval_graph, feeds)
        return {name: values[name] for name in self.eval_graph.outputs}

    def _feeds(self, graph, feeds):
        out = {}
        for name in graph.inputs:
            if name not in feeds:
                raise FeedError("missing", feed=name)
            node = graph[name]
            value = np.asarray(feeds[name])
            if value.shape[1:] != node.shape[1:] or value.ndim != len(node.shape):
                raise FeedError(f"expected shape (n, {', '.join(map(str, node.shape[1:]))}), got {value.shape}",
                                feed=name)
            out[name] = value.astype(np.int64 if node.dtype == "int32" else np.float64)
        return out
