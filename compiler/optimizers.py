"""Optimizers: each appends its update nodes (and any state buffers) to the train graph.

Hyper-parameters other than the learning rate are compile-time attributes of the update
nodes; the learning rate (and its schedule) is run-time state.
"""
from __future__ import annotations

from dataclasses import dataclass

from .autodiff import GradBuilder
from .ir import UPDATE, Graph


@dataclass(frozen=True)
class SGD:
    """torch.optim.SGD: lr, momentum, nesterov, weight_decay (dampening 0)."""

    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.lr < 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError(f"SGD needs lr, momentum, weight_decay >= 0, got {self}")
        if self.nesterov and self.momentum <= 0:
            raise ValueError("Nesterov momentum requires momentum > 0 (as in torch)")

    def state_buffers(self, param):
        return ["momentum_buffer"] if self.momentum else []

    def build(self, b: GradBuilder, param, grad, state):
        hyper = dict(momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov)
        if not self.momentum:
            b.op("sgd_update", param, grad, name=f"update({param})", weight_decay=self.weight_decay,
                 writes=param)
            return
        buf = state["momentum_buffer"]
        v = b.op("momentum_update", buf, grad, param, name=f"update({buf})", writes=buf, **hyper)
        b.op("sgd_momentum_update", param, grad, v, name=f"update({param})", writes=param, **hyper)


def append_update(graph: Graph, optimizer) -> Graph:
    """Add the optimizer's state buffers (pinned, zero-initialised) and update nodes."""
    b = GradBuilder(graph, phase=UPDATE)
    states = []
    for param in graph.params:
        state = {}
        for key in optimizer.state_buffers(param):
            name = b.op("state", name=f"{param}.{key}", shape=graph[param].shape, init="zeros")
            state[key] = name
            states.append(name)
        optimizer.build(b, param, graph.grads[param], state)
    # State sources go first so the order stays topological.
    ordered = [b.nodes[s] for s in states] + [n for n in b.nodes.values() if n.name not in states]
    return graph.replace(nodes={n.name: n for n in ordered}, state=graph.state + tuple(states))
