"""Optimizers: each appends its update nodes (and any state buffers) to the train graph.

Hyper-parameters other than the learning rate are compile-time attributes of the update
nodes; the learning rate (and its schedule) is run-time state.
"""
from __future__ import annotations

from dataclasses import dataclass

from .autodiff import GradBuilder
from .ir import UPDATE, Graph
from .ops import get_op


@dataclass(frozen=True)
class SGD:
    """torch.optim.SGD: lr, momentum, nesterov, weight_decay (dampening 0)."""

    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: object = None  # an nncc.schedules object; run-time state, never rebuilds

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


def append_state_updates(graph: Graph) -> Graph:
    """Ops with persistent state (batch_norm's running statistics) add it, and its update."""
    b = GradBuilder(graph, phase=UPDATE)
    for node in list(graph):
        hook = get_op(node.op).state
        if hook:
            hook(b, node)
    return with_new_state(graph, b)


def with_new_state(graph, b):
    """The builder's nodes, new state sources moved to the front (keeps topological order),
    and registered as the graph's state."""
    states = [n.name for n in b.new if n.op == "state"]
    ordered = [b.nodes[s] for s in states] + [n for n in b.nodes.values() if n.name not in states]
    return graph.replace(nodes={n.name: n for n in ordered}, state=graph.state + tuple(states))


def append_update(graph: Graph, optimizer) -> Graph:
    """Add the optimizer's state buffers (pinned, zero-initialised) and update nodes."""
    b = GradBuilder(graph, phase=UPDATE)
    for param in graph.params:
        state = {key: b.op("state", name=f"{param}.{key}", shape=graph[param].shape, init="zeros")
                 for key in optimizer.state_buffers(param)}
        optimizer.build(b, param, graph.grads[param], state)
    return with_new_state(graph, b)


@dataclass(frozen=True)
class Adam:
    """torch.optim.Adam: lr, betas, eps, weight_decay (L2 added to the gradient)."""

    lr: float = 0.001
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: object = None
    decoupled = False

    def __post_init__(self):
        if self.lr < 0 or self.eps < 0 or self.weight_decay < 0 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"{type(self).__name__} needs lr, eps, weight_decay >= 0 and 0 <= betas < 1, got {self}")

    def state_buffers(self, param):
        return ["exp_avg", "exp_avg_sq"]

    def build(self, b: GradBuilder, param, grad, state):
        hyper = dict(beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                     weight_decay=self.weight_decay, decoupled=self.decoupled)
        m = b.op("adam_m_update", state["exp_avg"], grad, param, name=f"update({state['exp_avg']})",
                 writes=state["exp_avg"], **hyper)
        v = b.op("adam_v_update", state["exp_avg_sq"], grad, param, name=f"update({state['exp_avg_sq']})",
                 writes=state["exp_avg_sq"], **hyper)
        b.op("adam_update", param, m, v, name=f"update({param})", writes=param, **hyper)


@dataclass(frozen=True)
class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (p <- p * (1 - lr * wd) first)."""

    weight_decay: float = 0.01
    decoupled = True
